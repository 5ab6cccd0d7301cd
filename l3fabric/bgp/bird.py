"""BIRD 2 configurations for the three roles BIRD plays around an l3fabric.

Node speakers are ExaBGP; BIRD is the route reflector, the ToR/spine (the
"external router" of a lab) and, for benchmarks, a Calico-style node speaker.
The inputs are validated here, so nothing that could change the meaning of
the generated file (a quote in a password, a name that is a BIRD keyword)
ever reaches a template. See docs/bird.md for every knob and why it exists.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from l3fabric import limits
from l3fabric.bgp.bird_checks import (
    check,
    check_asn,
    check_bool,
    check_int,
    check_ipv6_next_hop,
    check_limit,
    check_name,
    check_networks,
    check_password,
    check_timers,
    inside,
)
from l3fabric.model import HOST_IFACE_PREFIX, RTPROT_L3FABRIC, IPAddress, IPNetwork

# Kernel route protocol numbers BIRD cannot learn workload routes from: 0 is
# "unspecified", 2 (kernel) is skipped by `learn` unless `learn all`, and 12
# is what BIRD itself stamps on the routes it installs.
_RTPROT_BIRD = 12
_UNLEARNABLE_PROTOCOLS = {0: "unspecified", 2: "kernel", _RTPROT_BIRD: "bird"}

# Linux interface names (at most 15 bytes) and BIRD's glob characters.
_IFACE_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:@*?-]{1,15}")


class BirdRole(enum.Enum):
    ROUTE_REFLECTOR = "route-reflector"
    TOR = "tor"
    NODE = "node"


class BirdNextHop(enum.Enum):
    """How a tor rewrites the next hop of the routes it sends on one session.
    The values are BIRD's own words (`next hop self ebgp;`)."""

    SELF = "self"
    KEEP = "keep"
    # Self only for routes learned over eBGP: a leaf reflecting between the
    # nodes of its rack keeps the originating node as next hop, so traffic
    # inside the rack never passes through the leaf.
    SELF_EBGP = "self ebgp"


def _check_next_hop(next_hop: object, where: str) -> None:
    if next_hop is None:
        return
    check(
        isinstance(next_hop, BirdNextHop),
        where,
        f"{next_hop!r} is not one of {', '.join(m.value for m in BirdNextHop)}",
    )


@dataclass(frozen=True)
class BirdPeer:
    """A statically configured BGP neighbour."""

    name: str
    address: IPAddress
    asn: int
    password: str | None = None
    multihop: int | None = None
    rr_client: bool = False
    passive: bool = False
    # Accept every route from this peer instead of only accept_prefixes
    # (for spines and upstreams on a ToR, which may send a default route).
    accept_all: bool = False
    hold_time: int | None = None
    keepalive: int | None = None
    ipv6_next_hop: ipaddress.IPv6Address | None = None  # for IPv6 routes on an IPv4 session
    next_hop: BirdNextHop | None = None  # tor only; None: the role's default

    def __post_init__(self) -> None:
        where = f"peer {self.name!r}"
        check_name(self.name, "peer name")
        check(
            isinstance(self.address, ipaddress.IPv4Address | ipaddress.IPv6Address),
            f"{where}: address",
            f"{self.address!r} is not an IP address",
        )
        check(
            not (self.address.is_unspecified or self.address.is_multicast),
            f"{where}: address",
            f"{self.address} cannot be a BGP neighbour",
        )
        check_asn(self.asn, f"{where}: asn")
        check_password(self.password, f"{where}: password")
        if self.multihop is not None:
            check_limit(limits.ttl_error(self.multihop), f"{where}: multihop")
        for flag in ("rr_client", "passive", "accept_all"):
            check_bool(getattr(self, flag), f"{where}: {flag}")
        check_timers(self.hold_time, self.keepalive, f"{where}: ")
        check_ipv6_next_hop(self.ipv6_next_hop, self.address.version, f"{where}: ipv6_next_hop")
        _check_next_hop(self.next_hop, f"{where}: next_hop")


@dataclass(frozen=True)
class BirdRange:
    """Dynamic neighbours: any speaker connecting from cidr is accepted, so
    nodes join without the configuration changing. BIRD never dials out to a
    range; the nodes connect."""

    cidr: IPNetwork
    asn: int
    rr_client: bool = False
    password: str | None = None
    multihop: int | None = None
    name: str | None = None  # None: "range<N>", N counting ranges from 1
    ipv6_next_hop: ipaddress.IPv6Address | None = None  # for IPv6 routes on IPv4 sessions
    next_hop: BirdNextHop | None = None  # tor only; None: the role's default

    def __post_init__(self) -> None:
        where = f"range {self.name or self.cidr}"
        if self.name is not None:
            check_name(self.name, "range name")
        check(
            isinstance(self.cidr, ipaddress.IPv4Network | ipaddress.IPv6Network),
            f"{where}: cidr",
            f"{self.cidr!r} is not a network",
        )
        check_asn(self.asn, f"{where}: asn")
        check_bool(self.rr_client, f"{where}: rr_client")
        check_password(self.password, f"{where}: password")
        if self.multihop is not None:
            check_limit(limits.ttl_error(self.multihop), f"{where}: multihop")
        check_ipv6_next_hop(self.ipv6_next_hop, self.cidr.version, f"{where}: ipv6_next_hop")
        _check_next_hop(self.next_hop, f"{where}: next_hop")


@dataclass(frozen=True)
class BirdConfig:
    role: BirdRole
    router_id: ipaddress.IPv4Address
    asn: int
    # route-reflector, or tor with rr clients; None: router_id
    cluster_id: ipaddress.IPv4Address | None = None
    peers: tuple[BirdPeer, ...] = ()
    ranges: tuple[BirdRange, ...] = ()
    # tor: the only prefixes (and their more-specifics) accepted from peers
    # that are not accept_all, and the connected subnets it announces.
    # node: what is announced from the kernel and accepted from peers
    # (empty: everything).
    accept_prefixes: tuple[IPNetwork, ...] = ()
    # tor with rr clients (the nodes of its rack): the only prefixes (and
    # their more-specifics) accepted from them, i.e. the workload pools.
    pool_prefixes: tuple[IPNetwork, ...] = ()
    # Interface names or globs whose subnets `protocol direct` ignores, such
    # as a management network that must never be announced.
    direct_exclude: tuple[str, ...] = ()
    hold_time: int = 90
    keepalive: int = 30
    graceful_restart: bool = True
    restart_time: int = 120
    kernel_export: bool | None = None  # None: off for route-reflector, on otherwise
    ecmp: bool = True
    kernel_learn_protocol: int | None = None  # node only; None: RTPROT_L3FABRIC
    kernel_metric: int | None = None  # None: BIRD's default (32)
    scan_time: int = 2
    log_file: PurePosixPath | None = None  # None: log to stderr

    def __post_init__(self) -> None:
        check(isinstance(self.role, BirdRole), "role", f"{self.role!r} is not a BirdRole")
        check(
            isinstance(self.router_id, ipaddress.IPv4Address),
            "router_id",
            f"{self.router_id!r} is not an IPv4 address (BGP router ids are 32-bit)",
        )
        check(not self.router_id.is_unspecified, "router_id", "0.0.0.0 is not a router id")
        check_asn(self.asn, "asn")
        self._check_peers()
        self._check_ranges()
        self._check_role_fields()
        check_networks(self.accept_prefixes, "accept_prefixes")
        self._check_pools()
        check(isinstance(self.direct_exclude, tuple), "direct_exclude", "must be a tuple")
        for i, pattern in enumerate(self.direct_exclude):
            check(
                isinstance(pattern, str) and bool(_IFACE_PATTERN_RE.fullmatch(pattern)),
                f"direct_exclude[{i}]",
                f"{pattern!r} must be an interface name or glob: 1-15 of letters, digits "
                "and _ . : @ - * ?",
            )
        check_timers(self.hold_time, self.keepalive, "")
        check_bool(self.graceful_restart, "graceful_restart")
        check_limit(limits.restart_time_error(self.restart_time), "restart_time")
        if self.kernel_export is not None:
            check_bool(self.kernel_export, "kernel_export")
        check_bool(self.ecmp, "ecmp")
        if self.kernel_metric is not None:
            check_int(self.kernel_metric, "kernel_metric", 0, limits.UINT32_MAX)
        check_int(self.scan_time, "scan_time", 1, 3600)
        if self.log_file is not None:
            text = str(self.log_file)
            check(
                isinstance(self.log_file, PurePosixPath)
                and self.log_file.is_absolute()
                and not any(c in text for c in '"\\\n\r\t'),
                "log_file",
                f"{text!r} must be an absolute path without quotes, backslashes or control "
                "characters",
            )

    @property
    def has_rr_clients(self) -> bool:
        return any(p.rr_client for p in self.peers) or any(r.rr_client for r in self.ranges)

    def _check_pools(self) -> None:
        check_networks(self.pool_prefixes, "pool_prefixes")
        if self.pool_prefixes:
            check(
                self.role is BirdRole.TOR,
                "pool_prefixes",
                f"only a tor filters its rr clients by pool, not a {self.role.value}",
            )
        for i, pool in enumerate(self.pool_prefixes):
            check(
                any(inside(pool, fabric) for fabric in self.accept_prefixes),
                f"pool_prefixes[{i}]",
                f"{pool} is not inside accept_prefixes, so other peers would refuse it",
            )
        if self.role is BirdRole.TOR and self.has_rr_clients:
            check(
                bool(self.pool_prefixes),
                "pool_prefixes",
                "a tor accepts only workload routes from its rr clients; give the pools",
            )

    def _check_role_fields(self) -> None:
        role = self.role.value
        if self.cluster_id is not None:
            check(
                self.role is BirdRole.ROUTE_REFLECTOR
                or (self.role is BirdRole.TOR and self.has_rr_clients),
                "cluster_id",
                f"only a route-reflector or a tor with rr clients has a cluster id, not a {role}"
                + (" without rr clients" if self.role is BirdRole.TOR else ""),
            )
            check(
                isinstance(self.cluster_id, ipaddress.IPv4Address)
                and not self.cluster_id.is_unspecified,
                "cluster_id",
                f"{self.cluster_id!r} is not a non-zero IPv4 address",
            )
        if self.role is BirdRole.ROUTE_REFLECTOR:
            check(
                not self.accept_prefixes,
                "accept_prefixes",
                "a route-reflector reflects everything; filter on the nodes instead",
            )
        if self.role is BirdRole.TOR:
            check(
                bool(self.accept_prefixes),
                "accept_prefixes",
                "a tor accepts only fabric prefixes from nodes; give at least one",
            )
        if self.role is BirdRole.NODE:
            check(
                not self.ranges,
                "ranges",
                "a node dials its peers; dynamic ranges are for route-reflector and tor",
            )
        if self.kernel_learn_protocol is not None:
            check(
                self.role is BirdRole.NODE,
                "kernel_learn_protocol",
                f"only a node learns routes from the kernel, not a {role}",
            )
            check_int(self.kernel_learn_protocol, "kernel_learn_protocol", 1, 255)
            check(
                self.kernel_learn_protocol not in _UNLEARNABLE_PROTOCOLS,
                "kernel_learn_protocol",
                f"{self.kernel_learn_protocol} "
                f"({_UNLEARNABLE_PROTOCOLS.get(self.kernel_learn_protocol)}) "
                "cannot mark workload routes BIRD learns",
            )

    def _check_peers(self) -> None:
        check(isinstance(self.peers, tuple), "peers", "must be a tuple of BirdPeer")
        names: set[str] = set()
        addresses: set[IPAddress] = set()
        for i, peer in enumerate(self.peers):
            check(isinstance(peer, BirdPeer), f"peers[{i}]", f"{peer!r} is not a BirdPeer")
            check(peer.name not in names, f"peers[{i}]", f"duplicate peer name {peer.name!r}")
            check(
                peer.address not in addresses,
                f"peers[{i}]",
                f"duplicate peer address {peer.address}",
            )
            names.add(peer.name)
            addresses.add(peer.address)
            self._check_rr_client(peer.rr_client, peer.asn, f"peer {peer.name!r}")
            self._check_session_next_hop(peer.next_hop, f"peer {peer.name!r}")
            if peer.rr_client and peer.accept_all:
                check(
                    self.role is not BirdRole.TOR,
                    f"peer {peer.name!r}: accept_all",
                    "a tor accepts only pool_prefixes from its rr clients",
                )

    def _check_ranges(self) -> None:
        check(isinstance(self.ranges, tuple), "ranges", "must be a tuple of BirdRange")
        seen: list[tuple[str, IPNetwork]] = []
        for i, rng in enumerate(self.ranges):
            check(isinstance(rng, BirdRange), f"ranges[{i}]", f"{rng!r} is not a BirdRange")
            name = range_name(rng, i)
            for other_name, other in seen:
                check(other_name != name, f"ranges[{i}]", f"duplicate range name {name!r}")
                # An incoming connection must match exactly one range.
                check(
                    other.version != rng.cidr.version or not other.overlaps(rng.cidr),
                    f"ranges[{i}]",
                    f"{rng.cidr} overlaps range {other_name} ({other})",
                )
            seen.append((name, rng.cidr))
            self._check_rr_client(rng.rr_client, rng.asn, f"range {name}")
            self._check_session_next_hop(rng.next_hop, f"range {name}")

    def _check_rr_client(self, rr_client: bool, asn: int, where: str) -> None:
        if not rr_client:
            return
        check(
            self.role in (BirdRole.ROUTE_REFLECTOR, BirdRole.TOR),
            f"{where}: rr_client",
            f"only a route-reflector or a tor has clients, not a {self.role.value}",
        )
        check(
            asn == self.asn,
            f"{where}: rr_client",
            f"route reflection is iBGP: the client's asn {asn} must equal asn {self.asn}",
        )

    def _check_session_next_hop(self, next_hop: BirdNextHop | None, where: str) -> None:
        if next_hop is None:
            return
        check(
            self.role is BirdRole.TOR,
            f"{where}: next_hop",
            f"only a tor chooses the next hop per session; a {self.role.value} always "
            + ("keeps it" if self.role is BirdRole.ROUTE_REFLECTOR else "sets itself"),
        )

    @property
    def effective_kernel_export(self) -> bool:
        if self.kernel_export is not None:
            return self.kernel_export
        return self.role is not BirdRole.ROUTE_REFLECTOR

    @property
    def effective_learn_protocol(self) -> int:
        if self.kernel_learn_protocol is not None:
            return self.kernel_learn_protocol
        return RTPROT_L3FABRIC

    @property
    def effective_cluster_id(self) -> ipaddress.IPv4Address:
        return self.cluster_id if self.cluster_id is not None else self.router_id


def range_name(rng: BirdRange, index: int) -> str:
    return rng.name if rng.name is not None else f"range{index + 1}"


# --- rendering -------------------------------------------------------------


@dataclass(frozen=True)
class _Session:
    """What a template needs to write one `protocol bgp` block."""

    protocol: str
    asn: int
    internal: bool  # iBGP: same AS as ours
    families: tuple[str, ...]
    import_filter: dict[str, str]  # family -> "all" or "filter <name>"
    password: str | None
    multihop: int | None
    rr_client: bool
    hold_time: int
    keepalive: int
    address: str | None = None  # static neighbour
    cidr: str | None = None  # dynamic range
    dynamic_name: str | None = None
    passive: bool = False
    ipv6_next_hop: str | None = None
    next_hop: str | None = None  # tor: a BirdNextHop value; None: the role's default


def templates_dir() -> Path:
    """The bird-templates directory, installed (package data) or in the repo."""
    package = Path(__file__).resolve().parents[1]
    candidates = (package / "_data" / "bird-templates", package.parent / "bird-templates")
    for candidate in candidates:
        if (candidate / "_macros.j2").is_file():
            return candidate
    raise FileNotFoundError(
        "BIRD templates not found in " + " or ".join(str(c) for c in candidates)
    )


def _families(address_version: int) -> tuple[str, ...]:
    # An IPv4 session carries both families (IPv6 next hops are taken from
    # the interface or the session's ipv6_next_hop). IPv4 routes over an IPv6 session would
    # need RFC 8950 extended next hops, which ExaBGP nodes do not negotiate.
    return ("ipv4", "ipv6") if address_version == 4 else ("ipv6",)


def _import_filter(cfg: BirdConfig, accept_all: bool, rr_client: bool) -> dict[str, str]:
    if rr_client and cfg.pool_prefixes:
        return {family: f"filter pools_{family}" for family in ("ipv4", "ipv6")}
    filtered = bool(cfg.accept_prefixes) and not accept_all
    return {family: f"filter fabric_{family}" if filtered else "all" for family in ("ipv4", "ipv6")}


def _sessions(cfg: BirdConfig) -> list[_Session]:
    sessions = []
    for peer in cfg.peers:
        sessions.append(
            _Session(
                protocol=f"peer_{peer.name}",
                asn=peer.asn,
                internal=peer.asn == cfg.asn,
                families=_families(peer.address.version),
                import_filter=_import_filter(cfg, peer.accept_all, peer.rr_client),
                password=peer.password,
                multihop=peer.multihop,
                rr_client=peer.rr_client,
                hold_time=peer.hold_time if peer.hold_time is not None else cfg.hold_time,
                keepalive=peer.keepalive if peer.keepalive is not None else cfg.keepalive,
                address=str(peer.address),
                passive=peer.passive,
                ipv6_next_hop=_optional_str(peer.ipv6_next_hop),
                next_hop=None if peer.next_hop is None else peer.next_hop.value,
            )
        )
    for i, rng in enumerate(cfg.ranges):
        name = range_name(rng, i)
        sessions.append(
            _Session(
                protocol=f"range_{name}",
                asn=rng.asn,
                internal=rng.asn == cfg.asn,
                families=_families(rng.cidr.version),
                import_filter=_import_filter(cfg, accept_all=False, rr_client=rng.rr_client),
                password=rng.password,
                multihop=rng.multihop,
                rr_client=rng.rr_client,
                hold_time=cfg.hold_time,
                keepalive=cfg.keepalive,
                cidr=str(rng.cidr),
                dynamic_name=f"dyn_{name}_",
                ipv6_next_hop=_optional_str(rng.ipv6_next_hop),
                next_hop=None if rng.next_hop is None else rng.next_hop.value,
            )
        )
    return sessions


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(cfg: BirdConfig) -> str:
    """The bird.conf text for cfg."""
    prefixes = _prefix_lists(cfg.accept_prefixes)
    pools = _prefix_lists(cfg.pool_prefixes)
    template = _environment().get_template(f"{cfg.role.value}.conf.j2")
    text = template.render(
        cfg=cfg,
        role=cfg.role.value,
        log_target=f'"{cfg.log_file}"' if cfg.log_file is not None else "stderr",
        sessions=_sessions(cfg),
        prefixes=prefixes,
        pools=pools,
        has_pools=bool(cfg.pool_prefixes),
        direct_interfaces=_direct_interfaces(cfg),
        kernel_export=cfg.effective_kernel_export,
        learn_protocol=cfg.effective_learn_protocol,
        cluster_id=str(cfg.effective_cluster_id),
    )
    return text.rstrip("\n") + "\n"


def _prefix_lists(networks: tuple[IPNetwork, ...]) -> dict[str, list[str]]:
    # "+": the prefix and everything more specific (workload /32s in a pool).
    return {
        "ipv4": [f"{p}+" for p in networks if p.version == 4],
        "ipv6": [f"{p}+" for p in networks if p.version == 6],
    }


def _direct_interfaces(cfg: BirdConfig) -> str:
    """The `interface` patterns of `protocol direct`: exclusions first, then
    everything else."""
    # A node never imports its workloads' host-side interfaces: their
    # routes come from the kernel, marked by the agent.
    excluded = [f'-"{HOST_IFACE_PREFIX}*"'] if cfg.role is BirdRole.NODE else []
    excluded += [f'"-{pattern}"' for pattern in cfg.direct_exclude]
    return ", ".join([*excluded, '"*"'])
