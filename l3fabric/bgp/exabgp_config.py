"""The ExaBGP configuration of a node: one NeighborSpec per BGP neighbour,
validated on construction, rendered by `render_config` from the Jinja2
template in exabgp-conf/. l3fabric.bgp.exabgp runs ExaBGP with it."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from l3fabric import limits
from l3fabric.model import IPAddress


def _template_dir() -> Path:
    """exabgp-conf/: package data in an installed wheel, else the repo's."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_data" / "exabgp-conf", package.parent / "exabgp-conf"):
        if (candidate / "exabgp.conf.j2").is_file():
            return candidate
    return package.parent / "exabgp-conf"  # the error names the repo path


TEMPLATE_DIR = _template_dir()
TEMPLATE_NAME = "exabgp.conf.j2"
PROCESS_NAME = "l3fabric"
NEIGHBOR_TEMPLATE = "l3fabric"
FAMILIES = ("ipv4", "ipv6")

# What may appear in a path or argument rendered into `run ...;` unquoted.
_SAFE_ARG_RE = re.compile(r"^[A-Za-z0-9_./+=-]+$")


@dataclass(frozen=True)
class NeighborSpec:
    """One BGP neighbour. None means "the speaker's default" for local_as and
    router_id, and "off" for md5_password, multihop_ttl and graceful_restart.
    ExaBGP has no keepalive setting: it sends keepalives every hold_time/3."""

    peer_address: IPAddress
    peer_as: int
    local_address: IPAddress
    name: str
    local_as: int | None = None
    router_id: ipaddress.IPv4Address | None = None
    families: tuple[str, ...] = FAMILIES
    hold_time: int = 90
    passive: bool = False
    # Rendered inside double quotes (limits.password_error); never in a repr,
    # so never in a log line or an error message.
    md5_password: str | None = field(default=None, repr=False)
    multihop_ttl: int | None = None  # rendered as outgoing-ttl
    graceful_restart: int | None = None  # seconds advertised in the capability

    def __post_init__(self) -> None:
        for key, problem in self._problems():
            if problem is not None:
                raise ValueError(f"neighbor {self.peer_address}: {key}: {problem}")

    def _problems(self) -> Iterable[tuple[str, str | None]]:
        peer, local = self.peer_address, self.local_address
        same_family = _is_ip(peer) and _is_ip(local) and local.version == peer.version
        yield (
            "peer_address",
            None if same_family else "it and local_address must be IP addresses of one family",
        )
        yield "peer_as", limits.asn_error(self.peer_as)
        yield "local_as", None if self.local_as is None else limits.asn_error(self.local_as)
        yield "name", limits.name_error(self.name)
        rid_ok = self.router_id is None or isinstance(self.router_id, ipaddress.IPv4Address)
        yield "router_id", None if rid_ok else "must be an IPv4Address"
        families_ok = (
            isinstance(self.families, tuple)
            and 0 < len(set(self.families)) == len(self.families)
            and set(self.families) <= set(FAMILIES)
        )
        yield "families", None if families_ok else f"must be a non-empty tuple from {FAMILIES}"
        yield "hold_time", limits.hold_time_error(self.hold_time)
        yield "passive", None if isinstance(self.passive, bool) else "must be a bool"
        md5 = self.md5_password
        yield "md5_password", None if md5 is None else limits.password_error(md5)
        ttl = self.multihop_ttl
        yield "multihop_ttl", None if ttl is None else limits.ttl_error(ttl)
        gr = self.graceful_restart
        yield "graceful_restart", None if gr is None else limits.restart_time_error(gr)


def _is_ip(value: object) -> bool:
    return isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)


def render_config(
    neighbors: Iterable[NeighborSpec],
    *,
    router_id: ipaddress.IPv4Address,
    local_as: int,
    bridge_command: Sequence[str],
    port: int = limits.BGP_PORT,
    template_dir: Path = TEMPLATE_DIR,
) -> str:
    """The ExaBGP configuration for these neighbours, deterministic for a
    given set (order of `neighbors` does not matter)."""
    if not isinstance(router_id, ipaddress.IPv4Address):
        raise ValueError(f"router_id must be an IPv4Address, not {router_id!r}")
    checks = (("local_as", limits.asn_error(local_as)), ("port", limits.port_error(port)))
    for key, problem in checks:
        if problem is not None:
            raise ValueError(f"{key}: {problem}")
    command = list(bridge_command)
    if not command or not command[0].startswith("/"):
        raise ValueError(f"bridge_command must start with an absolute path: {command!r}")
    for arg in command:
        if not isinstance(arg, str) or not _SAFE_ARG_RE.match(arg):
            raise ValueError(f"bridge_command argument {arg!r} has characters ExaBGP would split")
    rendered: dict[IPAddress, NeighborSpec] = {}
    for spec in neighbors:
        if not isinstance(spec, NeighborSpec):
            raise ValueError(f"expected a NeighborSpec, got {spec!r}")
        if spec.peer_address in rendered:
            raise ValueError(f"neighbor {spec.peer_address} is listed twice")
        rendered[spec.peer_address] = dataclasses.replace(
            spec,
            local_as=spec.local_as if spec.local_as is not None else local_as,
            router_id=spec.router_id if spec.router_id is not None else router_id,
        )
    ordered = sorted(rendered.values(), key=lambda n: (n.peer_address.version, n.peer_address))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # an ExaBGP config, not HTML; every value is validated above
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE_NAME).render(
        neighbors=ordered,
        bridge_command=command,
        process_name=PROCESS_NAME,
        template_name=NEIGHBOR_TEMPLATE,
        port=port,
    )
