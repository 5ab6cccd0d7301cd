"""The management network as a topology file describes it: containerlab's
`mgmt:` section (`network`, `ipv4-subnet`, `ipv6-subnet`) and each node's
`mgmt-ipv4`/`mgmt-ipv6`, checked strictly, and the address plan made from
them (pure: lab/mgmt.py builds the network).

Every lab has a management network, as every containerlab lab does. Its
subnets must lie inside the lab's own ranges, so a lab never takes
addresses that mean something elsewhere: IPv4 inside 198.18.0.0/15 (the
benchmarking range the lab's underlays use), IPv6 inside
fd00:198:18::/48 (the lab's IPv6 underlay range). The defaults sit at the top
of both: 198.19.255.0/24 and fd00:198:18:ffff::/64.

In each subnet the first address is the gateway (on the management bridge,
as containerlab puts it on its Docker bridge); nodes without an address of
their own get the lowest free ones in file order; a Prometheus node
(`deploy --prometheus`) gets the highest free one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network

ALLOWED_V4 = ipaddress.IPv4Network("198.18.0.0/15")
ALLOWED_V6 = ipaddress.IPv6Network("fd00:198:18::/48")
DEFAULT_V4 = ipaddress.IPv4Network("198.19.255.0/24")
DEFAULT_V6 = ipaddress.IPv6Network("fd00:198:18:ffff::/64")
DEFAULT_NETWORK = "clab"  # containerlab's default network name
# The keys the runner reads, and containerlab's other mgmt keys (its schema).
MGMT_KEYS = ("network", "ipv4-subnet", "ipv6-subnet")
MGMT_UNSUPPORTED = (
    "bridge", "ipv4-gw", "ipv6-gw", "ipv4-range", "ipv6-range", "mtu", "external-access",
    "skip-when-unused", "driver-opts",
)  # fmt: skip
_NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Error = Callable[[str, str], None]


@dataclass(frozen=True)
class MgmtSpec:
    network: str = DEFAULT_NETWORK
    ipv4_subnet: IPv4Net = DEFAULT_V4
    ipv6_subnet: IPv6Net = DEFAULT_V6

    @property
    def gateway4(self) -> ipaddress.IPv4Address:
        return self.ipv4_subnet.network_address + 1

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.ipv6_subnet.network_address + 1


def parse_mgmt(raw: Any, error: Error, check_keys: Callable[..., None]) -> MgmtSpec:
    """The `mgmt:` section (None: the defaults)."""
    if raw is None:
        return MgmtSpec()
    if not isinstance(raw, dict):
        error("mgmt", "must be a mapping (network, ipv4-subnet, ipv6-subnet)")
        return MgmtSpec()
    check_keys(raw, "mgmt", MGMT_KEYS, MGMT_UNSUPPORTED, error)
    network = raw.get("network", DEFAULT_NETWORK)
    if not isinstance(network, str) or not _NETWORK_RE.match(network):
        error("mgmt.network", f"{network!r} must be 1-64 letters, digits, '.', '_' or '-'")
        network = DEFAULT_NETWORK
    v4 = _subnet(raw.get("ipv4-subnet"), "mgmt.ipv4-subnet", 4, error)
    v6 = _subnet(raw.get("ipv6-subnet"), "mgmt.ipv6-subnet", 6, error)
    return MgmtSpec(
        network,
        v4 if isinstance(v4, ipaddress.IPv4Network) else DEFAULT_V4,
        v6 if isinstance(v6, ipaddress.IPv6Network) else DEFAULT_V6,
    )


def _subnet(raw: Any, key: str, version: int, error: Error) -> IPv4Net | IPv6Net | None:
    allowed: IPv4Net | IPv6Net = ALLOWED_V4 if version == 4 else ALLOWED_V6
    if raw is None or raw == "auto":  # containerlab's "auto": the runner's default
        return None
    if not isinstance(raw, str):
        error(key, f"must be an IPv{version} subnet string, e.g. {allowed}")
        return None
    try:
        subnet = ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        error(key, f"{raw!r} is not an IPv{version} subnet ({exc})")
        return None
    if subnet.version != version:
        error(key, f"{raw!r} is not an IPv{version} subnet")
        return None
    if not subnet.subnet_of(allowed):  # type: ignore[arg-type]
        error(key, f"{subnet} is outside {allowed}, the range the lab's management addresses use")
        return None
    if subnet.num_addresses < 4:
        error(key, f"{subnet} is too small: it needs a gateway and node addresses")
        return None
    return subnet


def parse_node_address(
    raw: Any, key: str, version: int, spec: MgmtSpec, error: Error
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A node's `mgmt-ipv4` or `mgmt-ipv6`: a plain address in the subnet,
    neither its network, broadcast nor gateway address."""
    if raw is None:
        return None
    subnet: IPv4Net | IPv6Net = spec.ipv4_subnet if version == 4 else spec.ipv6_subnet
    try:
        address = ipaddress.ip_address(raw) if isinstance(raw, str) else None
    except ValueError:
        address = None
    if address is None or address.version != version:
        error(key, f"{raw!r} is not an IPv{version} address (without a prefix length)")
        return None
    gateway = spec.gateway4 if version == 4 else spec.gateway6
    if address not in subnet:
        error(key, f"{address} is not in the management subnet {subnet}")
    elif address in (subnet.network_address, subnet.broadcast_address):
        error(key, f"{address} is the network or broadcast address of {subnet}")
    elif address == gateway:
        error(key, f"{address} is the management network's gateway")
    else:
        return address
    return None


def check_unique(nodes: Sequence[tuple[str, Any, Any]], error: Error) -> None:
    """(node name, mgmt-ipv4, mgmt-ipv6): no address twice."""
    for index in (1, 2):
        seen: dict[Any, str] = {}
        for node in nodes:
            address = node[index]
            if address is None:
                continue
            key = f"topology.nodes.{node[0]}.mgmt-ipv{4 if index == 1 else 6}"
            if address in seen:
                error(key, f"{address} is node {seen[address]}'s management address too")
            else:
                seen[address] = node[0]


@dataclass(frozen=True)
class AddressPlan:
    """Each node's management addresses, with the subnet's prefix length."""

    v4: tuple[tuple[str, ipaddress.IPv4Interface], ...]
    v6: tuple[tuple[str, ipaddress.IPv6Interface], ...]


def plan_addresses(
    spec: MgmtSpec,
    nodes: Sequence[tuple[str, Any, Any]],
    last: str | None = None,
) -> tuple[AddressPlan | None, list[str]]:
    """Addresses for (node, mgmt-ipv4 or None, mgmt-ipv6 or None) in file
    order: a node's own, else the lowest free; `last` (the Prometheus node)
    gets the highest free. Returns the plan or the reasons there is none."""
    errors: list[str] = []
    v4 = _allocate(spec.ipv4_subnet, [(n, a) for n, a, _ in nodes], last, errors)
    v6 = _allocate(spec.ipv6_subnet, [(n, a) for n, _, a in nodes], last, errors)
    if errors:
        return None, errors
    return (
        AddressPlan(
            tuple((n, ipaddress.IPv4Interface(f"{a}/{spec.ipv4_subnet.prefixlen}")) for n, a in v4),
            tuple((n, ipaddress.IPv6Interface(f"{a}/{spec.ipv6_subnet.prefixlen}")) for n, a in v6),
        ),
        [],
    )


def _allocate(
    subnet: IPv4Net | IPv6Net,
    wanted: Sequence[tuple[str, Any]],
    last: str | None,
    errors: list[str],
) -> list[tuple[str, Any]]:
    # Addresses as integers: an IPv6 /64 is far too big to list.
    first = int(subnet.network_address) + 2  # +1 is the gateway
    end = int(subnet.broadcast_address) - 1  # inclusive
    taken = {int(a) for _, a in wanted if a is not None}
    cursor, top = first, end
    out: dict[str, Any] = {}
    for name, address in wanted:
        if address is not None:
            out[name] = address
            continue
        if name == last:
            continue
        while cursor in taken:
            cursor += 1
        if cursor > end:
            errors.append(f"{len(wanted)} nodes do not fit the management subnet {subnet}")
            return []
        out[name] = ipaddress.ip_address(cursor)
        taken.add(cursor)
    if last is not None and last not in out:
        while top in taken and top >= first:
            top -= 1
        if top < first:
            errors.append(f"{len(wanted)} nodes do not fit the management subnet {subnet}")
            return []
        out[last] = ipaddress.ip_address(top)
    return [(name, out[name]) for name, _ in wanted]


def describe(spec: MgmtSpec) -> Mapping[str, str]:
    return {
        "network": spec.network,
        "ipv4_subnet": str(spec.ipv4_subnet),
        "ipv6_subnet": str(spec.ipv6_subnet),
    }
