"""The ExaBGP configuration of a node: one NeighborSpec per BGP neighbour,
validated on construction, rendered by `render_config` from the Jinja2
template in exabgp-conf/. l3fabric.bgp.exabgp runs ExaBGP with it."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2

from l3fabric.bgp import api
from l3fabric.model import IPAddress, valid_name


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
# md5-password and description are rendered inside double quotes; ExaBGP's
# tokenizer unescapes backslashes and ends a string at any quote.
# At most 80 characters: RFC 2385 / Linux TCP_MD5SIG_MAXKEYLEN.
_MD5_RE = re.compile(r"^[\x21\x23-\x26\x28-\x5b\x5d-\x7e]{1,80}$")


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
    md5_password: str | None = None
    multihop_ttl: int | None = None  # rendered as outgoing-ttl
    graceful_restart: int | None = None  # seconds advertised in the capability

    def __post_init__(self) -> None:
        peer, local, md5, asn = self.peer_address, self.local_address, self.md5_password, 2**32 - 1
        problems = {
            "peer_address and local_address must be IP addresses of one family": _is_ip(peer)
            and _is_ip(local)
            and local.version == peer.version,
            f"peer_as and local_as must be 1..{asn}": _int_in(self.peer_as, 1, asn)
            and (self.local_as is None or _int_in(self.local_as, 1, asn)),
            "name is not a valid name": isinstance(self.name, str) and valid_name(self.name),
            "router_id must be an IPv4Address": self.router_id is None
            or isinstance(self.router_id, ipaddress.IPv4Address),
            f"families must be a non-empty tuple from {FAMILIES}": isinstance(self.families, tuple)
            and 0 < len(set(self.families)) == len(self.families)
            and set(self.families) <= set(FAMILIES),
            "hold_time must be 0 or 3..65535": _int_in(self.hold_time, 0, 0)
            or _int_in(self.hold_time, 3, 65535),
            "passive must be a bool": isinstance(self.passive, bool),
            "md5_password must be 1..80 printable ASCII characters, no space, quote or "
            "backslash": md5 is None or (isinstance(md5, str) and bool(_MD5_RE.match(md5))),
            "multihop_ttl must be 1..255": self.multihop_ttl is None
            or _int_in(self.multihop_ttl, 1, 255),
            "graceful_restart must be 0..4095 seconds": self.graceful_restart is None
            or _int_in(self.graceful_restart, 0, 4095),
        }
        for problem, ok in problems.items():
            if not ok:
                raise ValueError(f"neighbor {peer}: {problem} ({self!r})")


def _is_ip(value: object) -> bool:
    return isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def render_config(
    neighbors: Iterable[NeighborSpec],
    *,
    router_id: ipaddress.IPv4Address,
    local_as: int,
    bridge_command: Sequence[str],
    port: int = 179,
    template_dir: Path = TEMPLATE_DIR,
) -> str:
    """The ExaBGP configuration for these neighbours, deterministic for a
    given set (order of `neighbors` does not matter)."""
    if not isinstance(router_id, ipaddress.IPv4Address):
        raise ValueError(f"router_id must be an IPv4Address, not {router_id!r}")
    if not _int_in(local_as, 1, api.MAX_UINT32):
        raise ValueError(f"local_as must be an AS number in 1..{api.MAX_UINT32}, not {local_as!r}")
    if not _int_in(port, 1, 65535):
        raise ValueError(f"port must be 1..65535, not {port!r}")
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
