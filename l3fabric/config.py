"""Strict per-node configuration, loaded from one YAML file.

Modelled on faucet's conf.py: each section becomes a frozen dataclass, unknown
keys are rejected, and every problem is collected before anything is raised,
so an operator fixes a file in one pass. Each message names the file and the
key path of the bad value ("FILE: bgp.peers[1].asn: ...").
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from l3fabric._schema import (
    Errors,
    Invalid,
    Section,
    StrictLoader,
    absolute_path,
    boolean,
    choice,
    describe,
    integer,
    interval,
    network,
    string,
    unicast,
    unicast_of,
    unique,
)
from l3fabric.model import IPAddress, IPNetwork, valid_name

MAX_NAME_LEN = 63
ASN_MAX = 4_294_967_294  # 4294967295 is reserved (RFC 7300)
AS_TRANS = 23456  # RFC 6793: stands in for 4-byte ASNs towards 2-byte speakers
DEFAULT_STATE_DIR = Path("/var/lib/l3fabric")
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
MAX_PREFIX_LEN = {4: 32, 6: 128}
PEER_ROLES = ("route-reflector", "external")
MAX_PASSWORD_LEN = 80  # TCP_MD5SIG_MAXKEYLEN
# The password is written into ExaBGP and BIRD configs, where these characters
# would end a quoted string, a statement or a block.
PASSWORD_FORBIDDEN = frozenset("\"'\\;{}#")
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
    keepalive: int | None = None  # None: bgp.keepalive
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
    keepalive: int = 30
    connect_retry: int = 5
    graceful_restart: GracefulRestartConfig = field(default_factory=GracefulRestartConfig)
    peers: tuple[PeerConfig, ...] = ()
    import_policy: ImportPolicyConfig = field(default_factory=ImportPolicyConfig)
    exabgp: ExabgpConfig = field(default_factory=ExabgpConfig)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


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
        text = Path(source).read_bytes().decode("utf-8")
        data = yaml.load(text, Loader=StrictLoader)
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text: {exc.reason}"]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError([f"{where}: invalid YAML: {exc.problem}{context}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from exc
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
    for section in (ipam_section, metrics_section, reconcile_section, log_section, root):
        section.close()
    if errors.messages:
        raise ConfigError(errors.messages)
    return Config(source, node, pools, ipam, state_dir, datastore, metrics, reconcile, bgp, log)


# --- converters for this file's own values ------------------------------------

_asn = integer(1, ASN_MAX, {AS_TRANS: "it is AS_TRANS (RFC 6793), not a real AS number"})
_hold_time = integer(0, 65535, dict.fromkeys((1, 2), "hold_time must be 0 or 3..65535 (RFC 4271)"))


def _name(raw: object) -> str:
    text = string(raw)
    if not valid_name(text) or len(text) > MAX_NAME_LEN:
        raise Invalid(
            f"{text!r} is not a valid name (letters, digits, '.', '_', '-', starting and "
            f"ending with a letter or digit, at most {MAX_NAME_LEN} characters)"
        )
    return text


def _password(raw: object) -> str:
    # Messages never echo the password, not even a YAML number in its place.
    text = string(raw if isinstance(raw, str) else "")
    bad = " ".join(sorted(set(text) & PASSWORD_FORBIDDEN))
    if not text:
        raise Invalid("must be a non-empty string (leave the key out for no password)")
    if len(text) > MAX_PASSWORD_LEN:
        raise Invalid(f"is {len(text)} characters; TCP MD5 keys are at most {MAX_PASSWORD_LEN}")
    if not text.isascii():
        raise Invalid("must be printable ASCII")
    if text != text.strip():
        raise Invalid("must not start or end with whitespace")
    if bad:
        raise Invalid(f"must not contain {bad} (it is written into daemon configs)")
    return text


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
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise Invalid(f"{text}: port must be 1..65535")
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
    section.close()
    if kind == "file":
        if section.has("endpoints"):
            section.fail("endpoints", "not used by datastore.type file; remove it")
        return DatastoreConfig(kind, path or state_dir / "datastore", (), prefix)
    if section.has("path"):
        section.fail("path", "not used by datastore.type etcd; remove it")
    if not endpoints and section.errors.clean(section.at("endpoints")):
        section.fail("endpoints", "at least one http://HOST:PORT is required for etcd")
    urls = unique(section.errors, ((path, path, url) for path, url in endpoints))
    return DatastoreConfig(kind, None, urls, prefix)


def _check_timers(section: Section, key: str, hold: tuple[int, str], ka: tuple[int, str]) -> None:
    """Keepalives must come before the peer's hold timer runs out; a hold
    time of 0 turns both off. Each timer comes with the path it was set at."""
    keepalive = f"keepalive {ka[0]} ({ka[1]})"
    if hold[0] != 0 and ka[0] < 1:
        section.fail(key, f"{keepalive} must be at least 1 when hold time is {hold[0]} ({hold[1]})")
    elif hold[0] != 0 and ka[0] >= hold[0]:
        section.fail(key, f"{keepalive} must be less than hold time {hold[0]} ({hold[1]})")


def _parse_bgp(section: Section, node: NodeConfig) -> BgpConfig:
    enabled = section.value("enabled", boolean, True)
    mesh = section.value("mesh", boolean, True)
    advertise = section.value("advertise", choice("workloads", "blocks"), "workloads")
    port = section.value("port", integer(1, 65535), 179)
    hold_time = section.value("hold_time", _hold_time, 90)
    keepalive = section.value("keepalive", integer(0, 65535), 30)
    connect_retry = section.value("connect_retry", integer(1, 65535), 5)
    timers = (hold_time, section.at("hold_time")), (keepalive, section.at("keepalive"))
    if section.ok("hold_time", "keepalive"):
        _check_timers(section, "keepalive", *timers)
    restart = section.section("graceful_restart")
    graceful_restart = GracefulRestartConfig(
        restart.value("enabled", boolean, True),
        # The restart time is a 12-bit field of the capability (RFC 4724).
        restart.value("restart_time", integer(1, 4095), 120),
    )
    peers = _parse_peers(section, node, *timers)
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
        keepalive,
        connect_retry,
        graceful_restart,
        tuple(peer for _, peer in peers),
        import_policy,
        exabgp_config,
    )


def _parse_peers(
    bgp: Section, node: NodeConfig, hold: tuple[int, str], keepalive: tuple[int, str]
) -> list[tuple[str, PeerConfig]]:
    peers: list[tuple[str, PeerConfig]] = []
    for path, raw in bgp.items("peers"):
        peer = _parse_peer(Section.of(bgp.errors, path, raw), node, hold, keepalive)
        if peer is not None:
            peers.append((path, peer))
    unique(bgp.errors, ((f"{path}.address", path, peer.address) for path, peer in peers))
    unique(bgp.errors, ((f"{path}.name", f"the name of {path}", p.name) for path, p in peers))
    return peers


def _parse_peer(
    section: Section, node: NodeConfig, bgp_hold: tuple[int, str], bgp_keepalive: tuple[int, str]
) -> PeerConfig | None:
    address = section.value("address", unicast, None, required=True)
    asn = section.value("asn", _asn, None, required=True)
    role = section.value("role", choice(*PEER_ROLES), None, required=True)
    name = section.value("name", _name, None)
    password = section.value("password", _password, None)
    multihop = section.value("multihop", integer(1, 255), None)
    passive = section.value("passive", boolean, False)
    local = section.value("local_address", unicast, None)
    hold_time = section.value("hold_time", _hold_time, None)
    keepalive = section.value("keepalive", integer(0, 65535), None)
    graceful = section.value("graceful_restart", boolean, None)
    section.close()
    if section.ok("hold_time", "keepalive") and (hold_time, keepalive) != (None, None):
        hold = bgp_hold if hold_time is None else (hold_time, section.at("hold_time"))
        alive = bgp_keepalive if keepalive is None else (keepalive, section.at("keepalive"))
        _check_timers(section, "hold_time" if keepalive is None else "keepalive", hold, alive)
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
        address, asn, role, name, password, multihop, passive, local, hold_time, keepalive, graceful
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
