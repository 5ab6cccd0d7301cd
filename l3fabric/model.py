"""Values shared by every layer of l3fabric. No I/O happens here.

Everything is immutable and hashable so that the reconciler can diff sets of
desired and actual state without caring where they came from.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The kernel route protocol number that marks a route as ours. Everything
# l3fabric installs carries it, and cleanup only ever removes routes with it.
# 76 is not in iproute2's rt_protos and not used by Calico (80), BIRD (12),
# zebra/FRR (11, 186-192) or keepalived (18).
RTPROT_L3FABRIC = 76

# Host-side veth names are this prefix plus a hash of the workload id. Links
# with any other name are never touched.
HOST_IFACE_PREFIX = "l3f"
# The container end of a pair made for a runtime that moves it itself
# (Docker): it waits in the node's namespace under this prefix until then.
RUNTIME_PEER_PREFIX = "l3fcnm"
IFNAMSIZ = 15  # usable characters, excluding the trailing NUL
WORKLOAD_IFACE = "eth0"  # the container-side interface when nothing else is asked for
OWNERS = ("cli", "cni", "cnm")  # who made a workload: GC releases only its own kind
CNI_NAME_PREFIX = "cni-"

# Every workload uses the same link-local gateway, so no address is spent per
# workload (Calico's 169.254.1.1 trick). For IPv6 the gateway is the host
# veth's own link-local address.
GATEWAY_V4 = ipaddress.IPv4Address("169.254.1.1")

_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")


def valid_name(name: str) -> bool:
    """Names of nodes and workloads: DNS-label-like, no path or control chars."""
    return bool(_NAME_RE.match(name))


def valid_ifname(name: str) -> bool:
    """A Linux interface name: 1..15 characters, not . or .., no /, : or space."""
    return (
        0 < len(name) <= IFNAMSIZ
        and name not in (".", "..")
        and not any(c in "/:" or c.isspace() for c in name)
    )


def cni_workload_name(container_id: str, ifname: str) -> str:
    """The workload name of a CNI attachment: a function of its key
    (container id, ifname) alone, so a retried ADD, a DEL or a CHECK finds the
    same record, and short and plain whatever the runtime's ids look like."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return CNI_NAME_PREFIX + digest[:16]


def host_iface_name(workload_id: str) -> str:
    """Deterministic host-side interface name for a workload.

    A hash keeps the name within IFNAMSIZ whatever the workload id is, and the
    same id always maps to the same name, which makes attach idempotent and
    lets the reconciler find the link again after a restart.
    """
    digest = hashlib.sha256(workload_id.encode()).hexdigest()
    return (HOST_IFACE_PREFIX + digest)[:IFNAMSIZ]


def is_owned_iface(ifname: str) -> bool:
    return (
        ifname.startswith(HOST_IFACE_PREFIX)
        and len(ifname) == IFNAMSIZ
        and all(c in "0123456789abcdef" for c in ifname[len(HOST_IFACE_PREFIX) :])
    )


def host_prefix(address: IPAddress) -> IPNetwork:
    """The /32 or /128 that routes to exactly one address."""
    return ipaddress.ip_network(address)


@dataclass(frozen=True, order=True)
class Workload:
    """A workload wired (or to be wired) on a node."""

    name: str
    node: str
    netns: str  # a path, e.g. /run/netns/foo or /proc/123/ns/net
    addresses: tuple[IPAddress, ...] = ()
    # "dev:inode" of the namespace at add time: a /proc/PID/ns/net path may
    # later name another namespace once the PID is reused; never wire that.
    netns_id: str = field(default="", compare=False)
    # The container-side interface: part of the wiring, so part of equality.
    ifname: str = WORKLOAD_IFACE
    # Who made it and what it is to them; none of this changes the wiring,
    # so none of it is part of equality or ordering.
    container_id: str = field(default="", compare=False)  # the CNI attachment key; "" for CLI
    owner: str = field(default="cli", compare=False)
    namespace: str = field(default="default", compare=False)
    pod: str = field(default="", compare=False)
    labels: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not valid_ifname(self.ifname):
            raise ValueError(f"workload {self.name}: ifname {self.ifname!r} is not a valid name")
        if self.owner not in OWNERS:
            raise ValueError(f"workload {self.name}: owner {self.owner!r} is not one of {OWNERS}")
        object.__setattr__(self, "labels", tuple(sorted(self.labels)))

    @property
    def host_iface(self) -> str:
        return host_iface_name(self.name)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "node": self.node,
            "netns": self.netns,
            "addresses": [str(a) for a in self.addresses],
            "host_iface": self.host_iface,
            "netns_id": self.netns_id,
            "ifname": self.ifname,
            "container_id": self.container_id,
            "owner": self.owner,
            "namespace": self.namespace,
            "pod": self.pod,
            "labels": {key: value for key, value in self.labels},
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Workload:
        """A record of any version: the fields added for CNI default to what
        a CLI workload has."""
        addresses = data.get("addresses", [])
        assert isinstance(addresses, list)
        labels = data.get("labels") or {}
        assert isinstance(labels, dict)
        return cls(
            name=str(data["name"]),
            node=str(data["node"]),
            netns=str(data["netns"]),
            addresses=tuple(ipaddress.ip_address(str(a)) for a in addresses),
            netns_id=str(data.get("netns_id") or ""),
            ifname=str(data.get("ifname") or WORKLOAD_IFACE),
            container_id=str(data.get("container_id") or ""),
            owner=str(data.get("owner") or "cli"),
            namespace=str(data.get("namespace") or "default"),
            pod=str(data.get("pod") or ""),
            labels=tuple((str(k), str(v)) for k, v in labels.items()),
        )


class RouteKind(enum.Enum):
    LOCAL_WORKLOAD = "local"  # /32 or /128 to a veth on this node
    LEARNED = "learned"  # from a BGP peer, via another node's address


@dataclass(frozen=True, order=True, slots=True)
class NextHop:
    """One path of a route: either a directly connected interface (workload
    routes, `scope link`) or a gateway (learned routes)."""

    gateway: IPAddress | None = None
    ifname: str | None = None

    def __post_init__(self) -> None:
        if self.gateway is None and self.ifname is None:
            raise ValueError("a next hop needs a gateway or an interface")

    def __str__(self) -> str:
        parts = []
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.ifname is not None:
            parts.append(f"dev {self.ifname}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Route:
    """A route in the main table carrying RTPROT_L3FABRIC.

    nexthops is kept sorted so that two routes with the same paths compare
    equal whatever order a peer or the kernel listed them in. kind is not part
    of equality: the kernel does not store it, and the reconciler compares
    what the kernel has with what we want.
    """

    prefix: IPNetwork
    nexthops: tuple[NextHop, ...]
    kind: RouteKind = field(default=RouteKind.LEARNED, compare=False)

    def __post_init__(self) -> None:
        if not self.nexthops:
            raise ValueError(f"route {self.prefix} has no next hop")
        if len(self.nexthops) == 1 and type(self.nexthops) is tuple:
            # Already in order. Most routes have one next hop, and keeping
            # the caller's tuple spares a sort per route and lets routes that
            # share a next hop share the object.
            return
        ordered = tuple(sorted(set(self.nexthops), key=_nexthop_key))
        object.__setattr__(self, "nexthops", ordered)

    @property
    def family(self) -> int:
        return self.prefix.version

    def __str__(self) -> str:
        return f"{self.prefix} " + ", ".join(str(nh) for nh in self.nexthops)


def _nexthop_key(nh: NextHop) -> tuple[str, str]:
    return (str(nh.gateway or ""), nh.ifname or "")


def workload_routes(workload: Workload) -> list[Route]:
    """The host routes that make a local workload reachable."""
    nexthop = NextHop(ifname=workload.host_iface)
    return [
        Route(host_prefix(addr), (nexthop,), RouteKind.LOCAL_WORKLOAD)
        for addr in workload.addresses
    ]


@dataclass(frozen=True)
class NodeRecord:
    """What a node publishes about itself in the datastore. The BGP full mesh
    is built from these records."""

    name: str
    asn: int
    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "asn": self.asn,
            "ipv4": str(self.ipv4) if self.ipv4 else None,
            "ipv6": str(self.ipv6) if self.ipv6 else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> NodeRecord:
        asn = data["asn"]
        assert isinstance(asn, int)
        return cls(
            name=str(data["name"]),
            asn=asn,
            ipv4=ipaddress.IPv4Address(str(data["ipv4"])) if data.get("ipv4") else None,
            ipv6=ipaddress.IPv6Address(str(data["ipv6"])) if data.get("ipv6") else None,
        )
