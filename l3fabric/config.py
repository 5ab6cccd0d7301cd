"""Strict per-node configuration, loaded from one YAML file.

Modelled on faucet's conf.py: each section becomes a frozen dataclass, unknown
keys are rejected, and every problem is collected before anything is raised,
so an operator fixes a file in one pass. Each message names the file and the
key path of the bad value ("FILE: bgp.peers[1].asn: ...").
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from l3fabric import limits
from l3fabric._schema import (
    Errors,
    Invalid,
    Section,
    absolute_path,
    boolean,
    choice,
    describe,
    integer,
    interval,
    limited,
    network,
    secret,
    string,
    unicast,
    unicast_of,
    unique,
    whole,
)
from l3fabric.model import IPAddress, IPNetwork, valid_name
from l3fabric.yamlfile import YamlFileError, load_file

DEFAULT_STATE_DIR = Path("/var/lib/l3fabric")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
MAX_PREFIX_LEN = {4: 32, 6: 128}
PEER_ROLES = ("route-reflector", "external")
# Timers ExaBGP has no setting for, refused with the reason rather than
# accepted and ignored.
_KEEPALIVE_WHY = "ExaBGP sends keepalives every hold_time/3 and has no setting for it"
UNSUPPORTED_BGP_KEYS = {
    "keepalive": _KEEPALIVE_WHY,
    "connect_retry": "ExaBGP retries connections on its own back-off and has no setting for it",
}
UNSUPPORTED_PEER_KEYS = {"keepalive": _KEEPALIVE_WHY}
# Workload pools must be routable unicast space; these ranges never are.
UNROUTABLE: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), what)
    for cidr, what in (
        ("0.0.0.0/8", "this-network"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local, home of the 169.254.1.1 gateway"),
        ("224.0.0.0/3", "multicast and reserved"),
        ("::/8", "reserved, loopback and IPv4-mapped"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


class ConfigError(Exception):
    """A configuration could not be loaded. `errors` holds every problem found,
    each formatted as "FILE: key.path: message"."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class NodeConfig:
    name: str
    asn: int
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    router_id: ipaddress.IPv4Address


@dataclass(frozen=True)
class PoolConfig:
    cidr: IPNetwork
    block_size: int  # prefix length of the blocks the pool is cut into


@dataclass(frozen=True)
class IpamConfig:
    strict_affinity: bool = False


@dataclass(frozen=True)
class DatastoreConfig:
    type: str = "file"  # "file" or "etcd"
    path: Path | None = None
    endpoints: tuple[str, ...] = ()
    prefix: str = "/l3fabric"
    timeout: float = 2.0  # per request, every endpoint tried within it
    connect_timeout: float = 1.0
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    # The node record lives under a lease this long: a node whose agent
    # dies leaves every peer list when it expires.
    node_ttl: float = 30.0


@dataclass(frozen=True)
class MetricsConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 9641
    enabled: bool = True


@dataclass(frozen=True)
class ReconcileConfig:
    interval: float = 30.0


@dataclass(frozen=True)
class GracefulRestartConfig:
    enabled: bool = True
    restart_time: int = 120
    # After restart_time, keep the routes this much longer as long-lived
    # stale (RFC 9494, applied locally); 0: swept at restart_time.
    long_lived_stale_time: int = 0


@dataclass(frozen=True)
class PeerConfig:
    address: IPAddress
    asn: int
    role: str  # "route-reflector" or "external"
    name: str
    password: str | None = None
    multihop: int | None = None  # TTL; None means directly connected
    passive: bool = False
    local_address: IPAddress | None = None
    hold_time: int | None = None  # None: bgp.hold_time
    graceful_restart: bool | None = None  # None: bgp.graceful_restart.enabled


@dataclass(frozen=True)
class ImportPolicyConfig:
    allow_default: bool = False
    allow_outside_pools: bool = False
    allowed_prefixes: tuple[IPNetwork, ...] = ()
    max_prefixes: int = 10000


@dataclass(frozen=True)
class ExabgpConfig:
    command: str = "exabgp"


@dataclass(frozen=True)
class BgpConfig:
    enabled: bool = True
    mesh: bool = True
    advertise: str = "workloads"  # "workloads" (/32, /128) or "blocks"
    port: int = 179
    hold_time: int = 90
    graceful_restart: GracefulRestartConfig = field(default_factory=GracefulRestartConfig)
    peers: tuple[PeerConfig, ...] = ()
    import_policy: ImportPolicyConfig = field(default_factory=ImportPolicyConfig)
    exabgp: ExabgpConfig = field(default_factory=ExabgpConfig)

    @property
    def keepalive(self) -> int:
        """The keepalive interval ExaBGP derives from the hold time; it has no
        setting of its own, so the config has none either."""
        return self.hold_time // limits.KEEPALIVE_DIVISOR


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class HostProtectionConfig:
    # Workload interfaces may not reach the agent's metrics listener or BGP
    # on the node (nftables table inet l3fabric); DNS and ICMP stay allowed.
    enabled: bool = True


@dataclass(frozen=True)
class ControlConfig:
    # Besides root and the agent's own user, members of this group may use
    # the control socket (the socket file is made group-accessible then).
    group: int | None = None


@dataclass(frozen=True)
class DiscoveryConfig:
    """Service discovery: the agent writes its workloads' names (and its
    share of every service's endpoints) in the SkyDNS layout."""

    enabled: bool = True
    zone: str = "l3fabric.internal"
    prefix: str = "/skydns"
    ttl: int = 5  # seconds: workloads come and go, caches must follow quickly


@dataclass(frozen=True)
class Config:
    source: str
    node: NodeConfig
    pools: tuple[PoolConfig, ...]
    ipam: IpamConfig
    state_dir: Path
    datastore: DatastoreConfig
    metrics: MetricsConfig
    reconcile: ReconcileConfig
    bgp: BgpConfig
    log: LogConfig
    control: ControlConfig = field(default_factory=lambda: ControlConfig())
    host_protection: HostProtectionConfig = field(default_factory=lambda: HostProtectionConfig())
    discovery: DiscoveryConfig = field(default_factory=lambda: DiscoveryConfig())

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "agent.sock"

    def pools_for(self, version: int) -> tuple[PoolConfig, ...]:
        return tuple(pool for pool in self.pools if pool.cidr.version == version)


def restart_required(old: Config, new: Config) -> tuple[str, ...]:
    """Key paths whose change a reload cannot apply: the node's identity is in
    datastore records and BGP sessions, and the state directory, datastore,
    metrics listener and BGP speaker are set up once at start."""
    checks: tuple[tuple[str, object, object], ...] = (
        ("node.name", old.node.name, new.node.name),
        ("node.asn", old.node.asn, new.node.asn),
        ("node.addresses.ipv4", old.node.ipv4, new.node.ipv4),
        ("node.addresses.ipv6", old.node.ipv6, new.node.ipv6),
        ("node.router_id", old.node.router_id, new.node.router_id),
        ("state_dir", old.state_dir, new.state_dir),
        ("datastore", old.datastore, new.datastore),
        ("metrics", old.metrics, new.metrics),
        ("control", old.control, new.control),
        # Records already written live under the old zone and prefix.
        ("discovery", old.discovery, new.discovery),
        # The speaker process is started once, with these.
        ("bgp.enabled", old.bgp.enabled, new.bgp.enabled),
        ("bgp.port", old.bgp.port, new.bgp.port),
        ("bgp.exabgp", old.bgp.exabgp, new.bgp.exabgp),
    )
    return tuple(path for path, before, after in checks if before != after)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate one node's YAML file."""
    source = os.fspath(path)
    try:
        data = load_file(source)
    except YamlFileError as exc:
        raise ConfigError([str(exc)]) from exc
    return parse_config(data, source)


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data; raises ConfigError listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError([f"{source}: top level must be a mapping, got {describe(data)}"])
    errors = Errors(source)
    root = Section.of(errors, "", data)
    node = _parse_node(root.section("node", required=True))
    pools = _parse_pools(root, node)
    ipam_section = root.section("ipam")
    ipam = IpamConfig(ipam_section.value("strict_affinity", boolean, False))
    state_dir = root.value("state_dir", absolute_path, DEFAULT_STATE_DIR)
    datastore = _parse_datastore(root.section("datastore"), state_dir)
    metrics_section = root.section("metrics")
    host, port = metrics_section.value("listen", _listen, ("127.0.0.1", 9641))
    metrics = MetricsConfig(host, port, metrics_section.value("enabled", boolean, True))
    reconcile_section = root.section("reconcile")
    reconcile = ReconcileConfig(reconcile_section.value("interval", interval, 30.0))
    bgp = _parse_bgp(root.section("bgp"), node)
    log_section = root.section("log")
    log = LogConfig(
        log_section.value("level", choice("debug", "info", "warning", "error"), "info"),
        log_section.value("format", choice("json", "text"), "json"),
    )
    control_section = root.section("control")
    control = ControlConfig(control_section.value("group", _group, None))
    protection_section = root.section("host_protection")
    protection = HostProtectionConfig(protection_section.value("enabled", boolean, True))
    discovery = _parse_discovery(root.section("discovery"))
    for section in (
        ipam_section,
        metrics_section,
        reconcile_section,
        log_section,
        control_section,
        protection_section,
        root,
    ):
        section.close()
    if errors.messages:
        raise ConfigError(errors.messages)
    return Config(
        source,
        node,
        pools,
        ipam,
        state_dir,
        datastore,
        metrics,
        reconcile,
        bgp,
        log,
        control,
        protection,
        discovery,
    )


def _group(raw: object) -> int:
    """A group name (looked up now) or a numeric gid."""
    if isinstance(raw, bool):
        raise Invalid(f"expected a group name or gid, got {describe(raw)}")
    if isinstance(raw, int):
        if not 0 <= raw < 2**32 - 1:
            raise Invalid(f"gid {raw} is out of range")
        return raw
    if not isinstance(raw, str) or not raw:
        raise Invalid(f"expected a group name or gid, got {describe(raw)}")
    try:
        return grp.getgrnam(raw).gr_gid
    except KeyError:
        raise Invalid(f"no group named {raw!r} on this host") from None


# --- converters for this file's own values ------------------------------------

_asn = limited(whole, limits.asn_error)
_hold_time = limited(whole, limits.hold_time_error)
_name = limited(string, limits.node_name_error)
_password = limited(secret, limits.password_error)
_port = limited(whole, limits.port_error)
_ttl = limited(whole, limits.ttl_error)
_restart_time = limited(whole, limits.restart_time_error)
_long_lived_stale_time = limited(whole, limits.long_lived_stale_time_error)


def _endpoint(raw: object) -> str:
    text = string(raw)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"{text} has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not port:
        raise Invalid(f"{text} is not of the form http://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise Invalid(f"{text} must not have a path, query or user part")
    return text.rstrip("/")


def _key_prefix(raw: object) -> str:
    text = string(raw)
    if not text.startswith("/") or text.endswith("/") or "//" in text or " " in text:
        raise Invalid(f"{text!r} must start with '/', not end with '/', and have no spaces")
    return text


def _command(raw: object) -> str:
    text = string(raw)
    if not text.strip() or ("/" in text and not os.path.isabs(text)):
        raise Invalid(f"{text!r} is neither a command name nor an absolute path")
    return text


def _listen(raw: object) -> tuple[str, int]:
    text = string(raw)
    host, _, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if ":" in host and not bracketed:
        raise Invalid(f"{text}: IPv6 hosts go in brackets, e.g. [::1]:9641")
    try:
        if bracketed or host.replace(".", "").isdigit():
            ipaddress.ip_address(host)
        elif not _HOSTNAME_RE.match(host):
            raise ValueError(host)
    except ValueError:
        raise Invalid(f"{text} is not of the form HOST:PORT or [IPV6]:PORT") from None
    message = limits.port_error(int(port)) if port.isdigit() else "is not a number"
    if message:
        raise Invalid(f"{text}: port {message}")
    return host, int(port)


def _overlap(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.overlaps(b)


# --- sections ------------------------------------------------------------------


def _parse_node(section: Section) -> NodeConfig:
    name = section.value("name", _name, "", required=True)
    asn = section.value("asn", _asn, 0, required=True)
    router_id = section.value("router_id", unicast_of(ipaddress.IPv4Address), None)
    addresses = section.section("addresses", required=True)
    ipv4 = addresses.value("ipv4", unicast_of(ipaddress.IPv4Address), None)
    ipv6 = addresses.value("ipv6", unicast_of(ipaddress.IPv6Address), None)
    if addresses.present and not addresses.has("ipv4") and not addresses.has("ipv6"):
        section.fail("addresses", "at least one of ipv4 and ipv6 is required")
    if not section.has("router_id") and addresses.has("ipv6") and not addresses.has("ipv4"):
        section.fail("router_id", "is required when node.addresses.ipv4 is not set")
    addresses.close()
    section.close()
    return NodeConfig(name, asn, ipv4, ipv6, router_id or ipv4 or ipaddress.IPv4Address(0))


def _parse_pools(root: Section, node: NodeConfig) -> tuple[PoolConfig, ...]:
    pools: list[tuple[str, PoolConfig]] = []
    items = [Section.of(root.errors, path, raw) for path, raw in root.items("pools")]
    if not items and root.ok("pools"):
        root.fail("pools", "at least one pool is required")
    for item in items:
        cidr = item.value("cidr", network, None, required=True)
        block_size = item.value("block_size", integer(0, 128), None)
        item.close()
        if cidr is None:
            continue
        longest = MAX_PREFIX_LEN[cidr.version]
        if block_size is None:  # a pool smaller than a default block is one block
            block_size = max(DEFAULT_BLOCK_SIZE[cidr.version], cidr.prefixlen)
        elif not cidr.prefixlen <= block_size <= longest:
            limits = f"between {cidr.prefixlen} and {longest} for {cidr}"
            item.fail("block_size", f"{block_size} must be {limits}")
        for reserved, what in UNROUTABLE:
            if _overlap(cidr, reserved):
                item.fail("cidr", f"{cidr} overlaps {reserved} ({what})")
        for earlier_path, earlier in pools:
            if _overlap(cidr, earlier.cidr):
                item.fail("cidr", f"{cidr} overlaps {earlier_path} ({earlier.cidr})")
        pools.append((item.path, PoolConfig(cidr, block_size)))
    for key, address in (("ipv4", node.ipv4), ("ipv6", node.ipv6)):
        for path, pool in pools:
            if address is not None and address in pool.cidr:
                message = f"{address} is inside {path} ({pool.cidr}); it must be outside pools"
                root.errors.add(f"node.addresses.{key}", message)
    return tuple(pool for _, pool in pools)


def _parse_datastore(section: Section, state_dir: Path) -> DatastoreConfig:
    kind = section.value("type", choice("file", "etcd"), "file")
    path = section.value("path", absolute_path, None)
    endpoints = section.values("endpoints", _endpoint)
    prefix = section.value("prefix", _key_prefix, "/l3fabric")
    timeout = section.value("timeout", _store_timeout, 2.0)
    connect_timeout = section.value("connect_timeout", _store_timeout, min(1.0, timeout))
    node_ttl = section.value("node_ttl", _node_ttl, 30.0)
    tls = section.section("tls")
    ca = tls.value("ca", absolute_path, None)
    cert = tls.value("cert", absolute_path, None)
    key = tls.value("key", absolute_path, None)
    tls.close()
    section.close()
    if connect_timeout > timeout:
        section.fail("connect_timeout", f"{connect_timeout} must be at most timeout ({timeout})")
    if (cert is None) != (key is None):
        section.fail("tls", "cert and key go together: give both or neither")
    if kind == "file":
        for unused in ("endpoints", "tls", "timeout", "connect_timeout"):
            if section.has(unused):
                section.fail(unused, "not used by datastore.type file; remove it")
        return DatastoreConfig(kind, path or state_dir / "datastore", (), prefix, node_ttl=node_ttl)
    if section.has("path"):
        section.fail("path", "not used by datastore.type etcd; remove it")
    if not endpoints and section.errors.clean(section.at("endpoints")):
        section.fail("endpoints", "at least one http://HOST:PORT is required for etcd")
    urls = unique(section.errors, ((path, path, url) for path, url in endpoints))
    if tls.present and not all(url.startswith("https://") for url in urls):
        section.fail("tls", "TLS needs https:// endpoints")
    return DatastoreConfig(
        kind, None, urls, prefix, timeout, connect_timeout, ca, cert, key, node_ttl
    )


def _store_timeout(raw: object) -> float:
    value = interval(raw)
    if value > 300:
        raise Invalid(f"{raw} must be at most 300 seconds")
    return value


def _node_ttl(raw: object) -> float:
    value = interval(raw)
    if not 2 <= value <= 3600:
        raise Invalid(f"{raw} must be 2..3600 seconds (the node lease)")
    return value


def _parse_discovery(section: Section) -> DiscoveryConfig:
    config = DiscoveryConfig(
        section.value("enabled", boolean, True),
        section.value("zone", _zone, "l3fabric.internal"),
        section.value("prefix", _key_prefix, "/skydns"),
        section.value("ttl", integer(1, 86400), 5),
    )
    section.close()
    return config


def _zone(raw: object) -> str:
    # Imported here: the datastore package (etcd client included) is not
    # needed by everything that reads a config.
    from l3fabric.datastore.skydns import RecordError, check_zone

    try:
        return check_zone(string(raw))
    except RecordError as exc:
        raise Invalid(str(exc)) from None


def _refuse_unsupported(section: Section, keys: Mapping[str, str]) -> None:
    """Keys the speaker cannot honour get their reason, not "unknown key"."""
    for key, why in keys.items():
        if section.value(key, lambda raw: raw, None) is not None:
            section.fail(key, f"not supported: {why}; remove it")


def _parse_bgp(section: Section, node: NodeConfig) -> BgpConfig:
    enabled = section.value("enabled", boolean, True)
    mesh = section.value("mesh", boolean, True)
    advertise = section.value("advertise", choice("workloads", "blocks"), "workloads")
    port = section.value("port", _port, limits.BGP_PORT)
    hold_time = section.value("hold_time", _hold_time, 90)
    _refuse_unsupported(section, UNSUPPORTED_BGP_KEYS)
    restart = section.section("graceful_restart")
    graceful_restart = GracefulRestartConfig(
        restart.value("enabled", boolean, True),
        restart.value("restart_time", _restart_time, 120),
        restart.value("long_lived_stale_time", _long_lived_stale_time, 0),
    )
    peers = _parse_peers(section, node)
    reflector = next((path for path, peer in peers if peer.role == "route-reflector"), None)
    if mesh and reflector is not None:
        section.fail("mesh", f"must be false when route reflectors are configured ({reflector})")
    import_policy = _parse_import_policy(section.section("import_policy"))
    exabgp = section.section("exabgp")
    exabgp_config = ExabgpConfig(exabgp.value("command", _command, "exabgp"))
    for done in (restart, exabgp, section):
        done.close()
    return BgpConfig(
        enabled,
        mesh,
        advertise,
        port,
        hold_time,
        graceful_restart,
        tuple(peer for _, peer in peers),
        import_policy,
        exabgp_config,
    )


def _parse_peers(bgp: Section, node: NodeConfig) -> list[tuple[str, PeerConfig]]:
    peers: list[tuple[str, PeerConfig]] = []
    for path, raw in bgp.items("peers"):
        peer = _parse_peer(Section.of(bgp.errors, path, raw), node)
        if peer is not None:
            peers.append((path, peer))
    unique(bgp.errors, ((f"{path}.address", path, peer.address) for path, peer in peers))
    unique(bgp.errors, ((f"{path}.name", f"the name of {path}", p.name) for path, p in peers))
    return peers


def _parse_peer(section: Section, node: NodeConfig) -> PeerConfig | None:
    address = section.value("address", unicast, None, required=True)
    asn = section.value("asn", _asn, None, required=True)
    role = section.value("role", choice(*PEER_ROLES), None, required=True)
    name = section.value("name", _name, None)
    password = section.value("password", _password, None)
    multihop = section.value("multihop", _ttl, None)
    passive = section.value("passive", boolean, False)
    local = section.value("local_address", unicast, None)
    hold_time = section.value("hold_time", _hold_time, None)
    graceful = section.value("graceful_restart", boolean, None)
    _refuse_unsupported(section, UNSUPPORTED_PEER_KEYS)
    section.close()
    if address is None or asn is None or role is None:
        return None
    own = node.ipv4 if address.version == 4 else node.ipv6
    if address == own:
        section.fail("address", f"{address} is this node's own address")
    if local is not None and local.version != address.version:
        section.fail("local_address", f"{local} is not the same IP version as {address}")
    elif own is None and local is None and section.errors.ok("node"):
        needs = f"node.addresses.ipv{address.version} or a local_address"
        section.fail("address", f"an IPv{address.version} peer needs {needs}")
    if section.errors.ok("node.asn") and role == "external" and asn == node.asn:
        section.fail("asn", f"{asn} equals node.asn; use role route-reflector or mesh for iBGP")
    elif section.errors.ok("node.asn") and role == "route-reflector" and asn != node.asn:
        own_as = "a route reflector is in the node's own AS (use role external for eBGP)"
        section.fail("asn", f"{asn} differs from node.asn {node.asn}; {own_as}")
    name = name or _peer_name(address)
    return PeerConfig(
        address, asn, role, name, password, multihop, passive, local, hold_time, graceful
    )


def _peer_name(address: IPAddress) -> str:
    """A stable default name: the address with ':' made '-'. A compressed IPv6
    address can start or end with '::', which a name may not, so those use the
    fully exploded form."""
    name = str(address).replace(":", "-")
    return name if valid_name(name) else address.exploded.replace(":", "-")


def _parse_import_policy(section: Section) -> ImportPolicyConfig:
    allow_default = section.value("allow_default", boolean, False)
    allow_outside_pools = section.value("allow_outside_pools", boolean, False)
    prefixes = section.values("allowed_prefixes", network)
    max_prefixes = section.value("max_prefixes", integer(1, 10_000_000), 10000)
    section.close()
    allowed = unique(section.errors, ((path, path, prefix) for path, prefix in prefixes))
    return ImportPolicyConfig(allow_default, allow_outside_pools, allowed, max_prefixes)
