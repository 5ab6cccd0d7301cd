"""containerlab topology files: parsing and the checks made before anything
is created.

Only what the namespace runner can honour is accepted: `kind: linux` nodes
(`image`, `group`, `binds`, `exec`, `env`, `labels`, `restart-policy`,
`startup-config`, and a node's own `mgmt-ipv4`/`mgmt-ipv6`), inherited as
containerlab does (defaults < kinds < groups < node), veth links in either
containerlab form (`endpoints: ["a:eth1", "b:eth1"]` or `type: veth` with
endpoint mappings), and the `mgmt:` section (lab/mgmtspec.py). Any other key is an error: a
containerlab key the runner cannot honour is named as unsupported, anything
else is unknown, with the nearest known key. Every problem in a file is
reported at once, each message naming the file and the key path, like the
node config loader does.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from l3fabric.lab import etcd, mgmtspec
from l3fabric.lab.keys import check_keys
from l3fabric.lab.links import Endpoint, Link, parse_links
from l3fabric.lab.paths import LAB_ROOT, LabPaths
from l3fabric.yamlfile import YamlFileError, load_file

SUPPORTED_KINDS = ("linux",)
# containerlab's magic variables in binds and exec.
MAGIC_LAB_DIR = "__clabDir__"
MAGIC_NODE_DIR = "__clabNodeDir__"
MAGIC_NODE_NAME = "__clabNodeName__"

# The keys the runner reads, and containerlab's other keys (from its JSON
# schema), which it names as unsupported rather than unknown.
TOP_KEYS = ("name", "topology", "mgmt")
TOP_UNSUPPORTED = ("prefix", "settings", "debug")
TOPOLOGY_KEYS = ("nodes", "groups", "kinds", "defaults", "links")
NODE_KEYS = (
    "kind", "image", "group", "binds", "exec", "env", "labels", "restart-policy",
    "startup-config", "mgmt-ipv4", "mgmt-ipv6",
)  # fmt: skip
# A node's own: the same address on every node of a group cannot work.
NODE_ONLY_KEYS = ("mgmt-ipv4", "mgmt-ipv6")
NODE_UNSUPPORTED = (
    "image-pull-policy", "license", "type", "startup-delay",
    "enforce-startup-config", "suppress-startup-config", "auto-remove", "volumes", "ports",
    "credentials", "env-files", "user", "hostname", "entrypoint", "cmd", "runtime",
    "network-mode", "link-apply-mode", "cpu", "memory", "cpu-set",
    "extras", "config", "stages", "dns", "certificate", "healthcheck", "components",
    "aliases", "shm-size", "cap-add", "privileged", "cgroupns-mode", "cgroup-parent",
    "pid-mode", "tmpfs", "security-opts", "sysctls", "devices",
)  # fmt: skip
# containerlab's restart-policy values (it accepts a capitalised first letter
# too); unless-stopped is always here, a lab's daemons are only stopped by
# destroy.
RESTART_POLICIES = {"no": "no", "on-failure": "on-failure", "always": "always"}
RESTART_POLICIES["unless-stopped"] = "always"
SUPERVISED_BY_DEFAULT = ("l3fabric", "bird", "frr", "gobgp")  # ImageKind values: on-failure

_LAB_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,39}$")
_NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$")


class ImageKind(enum.Enum):
    """What the runner starts in a node, chosen from its image name."""

    L3FABRIC = "l3fabric"  # the node agent
    BIRD = "bird"  # bird -c /etc/bird/bird.conf
    FRR = "frr"  # zebra, staticd and the daemons enabled in /etc/frr/daemons
    PROMETHEUS = "prometheus"  # prometheus --config.file=/etc/prometheus/prometheus.yml
    ETCD = "etcd"  # etcd, one member of the lab's cluster (lab/etcd.py)
    GOBGP = "gobgp"  # gobgpd -f /etc/gobgp/gobgpd.conf, only where the host has gobgpd
    HOST = "host"  # nothing: a namespace for exec commands and links


# Checked in order against the image's repository name (lower case, tag
# removed); the first match wins, anything else is a plain host. The routing
# daemons come first so that l3fabric/bird:2 is a BIRD image.
IMAGE_RULES: tuple[tuple[str, ImageKind], ...] = (
    ("bird", ImageKind.BIRD),
    ("frr", ImageKind.FRR),
    ("gobgp", ImageKind.GOBGP),
    ("etcd", ImageKind.ETCD),
    ("l3fabric", ImageKind.L3FABRIC),
    ("prometheus", ImageKind.PROMETHEUS),
)

# The file each daemon kind needs inside the node.
REQUIRED_FILES = {
    ImageKind.L3FABRIC: "/etc/l3fabric/node.yaml",
    ImageKind.BIRD: "/etc/bird/bird.conf",
    ImageKind.FRR: "/etc/frr/frr.conf",
    ImageKind.PROMETHEUS: "/etc/prometheus/prometheus.yml",
    ImageKind.GOBGP: "/etc/gobgp/gobgpd.conf",
}
# Where `startup-config` goes: the daemon's config file.
STARTUP_CONFIG_TARGETS = {
    ImageKind.BIRD: "/etc/bird/bird.conf",
    ImageKind.FRR: "/etc/frr/frr.conf",
    ImageKind.GOBGP: "/etc/gobgp/gobgpd.conf",
}
STARTUP_CONFIG_MAX = 4 * 1024 * 1024  # a daemon config, not a disk image
# The host binary an image kind runs, when the host may well lack it.
HOST_DAEMONS = {ImageKind.GOBGP: "gobgpd"}


def image_kind(image: str) -> ImageKind:
    repository = image.lower()
    # Drop a digest or tag, but not a registry port (host:5000/name).
    repository = repository.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: len(repository) - len(last)] + last.split(":", 1)[0]
    for needle, kind in IMAGE_RULES:
        if needle in repository:
            return kind
    return ImageKind.HOST


class TopologyError(Exception):
    """Every problem found in a topology file."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True)
class Bind:
    source: Path  # absolute, on the host
    target: PurePosixPath  # absolute, inside the node
    read_only: bool = False
    lab_owned: bool = False  # under the lab directory: created by the runner


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str
    binds: tuple[Bind, ...] = ()
    exec: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    restart_policy: str = ""  # no, on-failure or always; "" is the image's default
    group: str = ""
    startup_config: Path | None = None  # bound read-only at the daemon's config file
    mgmt_ipv4: ipaddress.IPv4Address | None = None  # the node's own; None: planned
    mgmt_ipv6: ipaddress.IPv6Address | None = None

    @property
    def image_kind(self) -> ImageKind:
        return image_kind(self.image)

    @property
    def restart(self) -> str:
        """The restart policy in force: the file's, else on-failure for the
        routing daemons and the agent, else no."""
        if self.restart_policy:
            return self.restart_policy
        return "on-failure" if self.image_kind.value in SUPERVISED_BY_DEFAULT else "no"

    def bound_source(self, target: str) -> Path | None:
        """The host file seen at `target` inside the node, through a bind of
        the file itself or of a directory above it."""
        wanted = PurePosixPath(target)
        best: Bind | None = None
        for bind in self.binds:
            if (bind.target == wanted or bind.target in wanted.parents) and (
                best is None or len(bind.target.parts) > len(best.target.parts)
            ):
                best = bind
        if best is None:
            return None
        return best.source.joinpath(*wanted.parts[len(best.target.parts) :])


@dataclass(frozen=True)
class Topology:
    name: str  # the lab name: the file's `name:` unless overridden
    path: Path
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    lab_dir: Path = field(default=Path("/"))  # what __clabDir__ stands for
    mgmt: mgmtspec.MgmtSpec = field(default_factory=mgmtspec.MgmtSpec)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name} has no node {name!r}")

    def node_dir(self, name: str) -> Path:
        return self.lab_dir / name

    def etcd_members(self) -> tuple[etcd.Member, ...]:
        """The lab's etcd cluster: every etcd node at its underlay address."""
        members = []
        for node in self.nodes:
            address = etcd.exec_address(node.exec)
            if node.image_kind is ImageKind.ETCD and address is not None:
                members.append(etcd.Member(node.name, address))
        return tuple(members)

    def links_of(self, name: str) -> list[tuple[Endpoint, Endpoint]]:
        """(this end, other end) for each link of the node."""
        out = []
        for link in self.links:
            if link.a.node == name:
                out.append((link.a, link.b))
            if link.b.node == name:
                out.append((link.b, link.a))
        return out


Which = Callable[[str], str | None]


def load_topology(
    path: str | Path,
    *,
    name: str | None = None,
    lab_root: Path | None = None,
    which: Which = shutil.which,
) -> Topology:
    """Parse and check a topology file. `name` overrides its `name:` (so two
    copies of one lab can run side by side); `lab_root` is the directory lab
    directories live in (__clabDir__ is lab_root/NAME/clab); `which` finds a
    host daemon an image needs (gobgpd)."""
    path = Path(path).resolve()
    try:
        data = load_file(path)
    except YamlFileError as exc:
        raise TopologyError([str(exc)]) from None
    return parse_topology(data, path, name=name, lab_root=lab_root, which=which)


def parse_topology(
    data: Any,
    path: Path,
    *,
    name: str | None = None,
    lab_root: Path | None = None,
    which: Which = shutil.which,
) -> Topology:
    errors: list[str] = []
    where = str(path)

    def error(key: str, message: str) -> None:
        errors.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    if not isinstance(data, dict):
        raise TopologyError([f"{where}: the file must be a mapping with name and topology"])
    check_keys(data, "", TOP_KEYS, TOP_UNSUPPORTED, error)
    lab_name = name if name is not None else data.get("name")
    if not isinstance(lab_name, str) or not _LAB_NAME_RE.match(lab_name):
        error(
            "--name" if name is not None else "name",
            f"{lab_name!r} must be 1-40 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
        )
        lab_name = "invalid"
    topo = data.get("topology")
    if not isinstance(topo, dict):
        error("topology", "missing, or not a mapping")
        raise TopologyError(errors)
    check_keys(topo, "topology", TOPOLOGY_KEYS, (), error)
    spec = mgmtspec.parse_mgmt(data.get("mgmt"), error, check_keys)
    lab_dir = LabPaths(lab_root or LAB_ROOT, lab_name).clab_dir
    defaults = _node_layer(topo.get("defaults"), "topology.defaults", error)
    kinds = {
        str(k): _node_layer(v, f"topology.kinds.{k}", error)
        for k, v in _mapping(topo.get("kinds"), "topology.kinds", error).items()
    }
    groups = {
        str(k): _node_layer(v, f"topology.groups.{k}", error)
        for k, v in _mapping(topo.get("groups"), "topology.groups", error).items()
    }
    raw_nodes = topo.get("nodes")
    nodes: list[Node] = []
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        error("topology.nodes", "must be a mapping with at least one node")
        raw_nodes = {}
    for node_name, raw in raw_nodes.items():
        key = f"topology.nodes.{node_name}"
        if not isinstance(node_name, str) or not _NODE_NAME_RE.match(node_name):
            error(key, "node names are 1-40 letters, digits, '_' or '-'")
            continue
        layer = _node_layer(raw, key, error, own=True)
        if layer is None:
            continue
        node = _parse_node(node_name, layer, defaults, kinds, groups, path, lab_dir, error)
        if node is None:
            continue
        node = _node_mgmt(node, layer, spec, error)
        _check_host_daemon(node, key, which, error)
        nodes.append(node)
    mgmtspec.check_unique([(n.name, n.mgmt_ipv4, n.mgmt_ipv6) for n in nodes], error)
    links = parse_links(topo.get("links"), {n.name for n in nodes}, set(raw_nodes), error)
    if errors:
        raise TopologyError(errors)
    return Topology(str(lab_name), path, tuple(nodes), tuple(links), lab_dir, spec)


def _node_mgmt(node: Node, layer: _Layer, spec: mgmtspec.MgmtSpec, error: Any) -> Node:
    v4 = mgmtspec.parse_node_address(
        layer.data.get("mgmt-ipv4"), f"{layer.key}.mgmt-ipv4", 4, spec, error
    )
    v6 = mgmtspec.parse_node_address(
        layer.data.get("mgmt-ipv6"), f"{layer.key}.mgmt-ipv6", 6, spec, error
    )
    return replace(
        node,
        mgmt_ipv4=v4 if isinstance(v4, ipaddress.IPv4Address) else None,
        mgmt_ipv6=v6 if isinstance(v6, ipaddress.IPv6Address) else None,
    )


def _check_host_daemon(node: Node, key: str, which: Which, error: Any) -> None:
    """An image whose daemon the host may lack (GoBGP): refused up front
    rather than a node that silently runs nothing."""
    binary = HOST_DAEMONS.get(node.image_kind)
    if binary is not None and which(binary) is None:
        error(
            f"{key}.image",
            f"image {node.image!r} is GoBGP ({node.image_kind.value}), and the namespace runner "
            f"runs the host's daemons: {binary} is not installed on this host. Install it, or "
            "use a BIRD or FRR image (l3fabric/bird:2, quay.io/frrouting/frr:8.4.1)",
        )


@dataclass(frozen=True)
class _Layer:
    """One level of a node's settings (defaults, a kind, a group, the node)."""

    key: str  # its key path, for messages
    data: Mapping[str, Any]


def _node_layer(raw: Any, key: str, error: Any, *, own: bool = False) -> _Layer | None:
    """One level's settings; `own` for a node itself (the keys only a node
    may set)."""
    if raw is None:
        return _Layer(key, {})
    if not isinstance(raw, dict):
        error(key, "must be a mapping")
        return None
    check_keys(raw, key, NODE_KEYS, NODE_UNSUPPORTED, error)
    for only in NODE_ONLY_KEYS:
        if not own and only in raw:
            error(f"{key}.{only}", "a node's own management address: set it on the node")
    for field_name in ("kind", "image", "group", "restart-policy", "startup-config"):
        value = raw.get(field_name)
        if value is not None and (not isinstance(value, str) or not value):
            error(f"{key}.{field_name}", "must be a non-empty string")
    policy = raw.get("restart-policy")
    if isinstance(policy, str) and policy and _restart_policy(policy) is None:
        error(
            f"{key}.restart-policy",
            f"{policy!r} is not one of {', '.join(RESTART_POLICIES)}",
        )
    return _Layer(key, raw)


def _restart_policy(value: str) -> str | None:
    # containerlab accepts the first letter capitalised (On-failure, Always).
    if (value[:1].isupper() and value[1:].islower()) or value.islower():
        return RESTART_POLICIES.get(value.lower())
    return None


def _mapping(value: Any, key: str, error: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        error(key, "must be a mapping")
        return {}
    return value


def _string_map(layers: list[_Layer], field_name: str, error: Any) -> dict[str, str]:
    """env or labels: merged over the layers, a later layer winning a key."""
    merged: dict[str, str] = {}
    for layer in layers:
        raw = layer.data.get(field_name)
        if raw is None:
            continue
        if not isinstance(raw, dict):
            error(f"{layer.key}.{field_name}", "must be a mapping of NAME: VALUE")
            continue
        for k, v in raw.items():
            if isinstance(v, bool):
                merged[str(k)] = "true" if v else "false"
            elif isinstance(v, (str, int, float)):
                merged[str(k)] = str(v)
            else:
                error(f"{layer.key}.{field_name}.{k}", "must be a string, number or boolean")
    return merged


def _parse_node(
    name: str,
    node_layer: _Layer,
    defaults: _Layer | None,
    kinds: Mapping[str, _Layer | None],
    groups: Mapping[str, _Layer | None],
    path: Path,
    lab_dir: Path,
    error: Any,
) -> Node | None:
    key = node_layer.key
    raw = node_layer.data
    group_name = raw.get("group", (defaults.data if defaults else {}).get("group"))
    group = groups.get(group_name) if isinstance(group_name, str) else None
    # containerlab's order for the kind too: the node's, its group's, the defaults'.
    kind = raw.get("kind")
    for layer in (group, defaults):
        if kind is None and layer is not None:
            kind = layer.data.get("kind")
    if not isinstance(kind, str):
        error(f"{key}.kind", "missing (set it on the node, its group or topology.defaults)")
        return None
    if kind not in SUPPORTED_KINDS:
        error(
            f"{key}.kind",
            f"unknown or unsupported kind {kind!r}: the namespace runner supports "
            f"{', '.join(SUPPORTED_KINDS)}",
        )
        return None
    layers = [x for x in (defaults, kinds.get(kind), group, node_layer) if x is not None]

    def pick(field_name: str) -> Any:
        for layer in reversed(layers):
            if layer.data.get(field_name) is not None:
                return layer.data[field_name]
        return None

    image = pick("image")
    if not isinstance(image, str) or not image:
        error(f"{key}.image", "missing or not a string (set it on the node, its group or kind)")
        return None
    magic = {
        MAGIC_LAB_DIR: str(lab_dir),
        MAGIC_NODE_DIR: str(lab_dir / name),
        MAGIC_NODE_NAME: name,
    }
    binds: dict[PurePosixPath, Bind] = {}
    for layer in layers:
        raw_binds = layer.data.get("binds") or []
        if not isinstance(raw_binds, list):
            error(f"{layer.key}.binds", "must be a list of SOURCE:TARGET[:ro]")
            continue
        for i, spec in enumerate(raw_binds):
            bind = _parse_bind(spec, path.parent, magic, f"{layer.key}.binds[{i}]", error)
            if bind is not None:
                binds[bind.target] = bind  # a later layer replaces the same target
    commands = pick("exec") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        error(f"{key}.exec", "must be a list of command strings")
        commands = []
    env = _string_map(layers, "env", error)
    labels = _string_map(layers, "labels", error)
    policy = pick("restart-policy")
    commands = [_expand(c, magic) for c in commands]
    startup = _startup_config(image, pick, layers, binds, path.parent, magic, error)
    if startup is not None:
        binds[startup.target] = startup
    node = Node(
        name,
        kind,
        image,
        tuple(sorted(binds.values(), key=lambda b: (len(b.target.parts), str(b.target)))),
        tuple(commands),
        tuple(sorted(env.items())),
        tuple(sorted(labels.items())),
        (_restart_policy(policy) or "") if isinstance(policy, str) and policy else "",
        group_name if isinstance(group_name, str) else "",
        startup.source if startup is not None else None,
    )
    if node.image_kind is ImageKind.ETCD and etcd.exec_address(node.exec) is None:
        error(
            f"{key}.exec",
            f"image {image!r} runs etcd, which listens on the node's underlay address: "
            "give it one, e.g. 'ip addr add 198.18.0.241/24 dev eth1'",
        )
    needed = REQUIRED_FILES.get(node.image_kind)
    if needed is not None:
        source = node.bound_source(needed)
        if source is None:
            error(
                f"{key}.binds",
                f"image {image!r} runs {node.image_kind.value}, which needs {needed}: "
                f"bind it, e.g. '{name}/{PurePosixPath(needed).name}:{needed}'",
            )
        elif not _lab_owned(source, lab_dir) and not source.is_file():
            error(f"{key}.binds", f"{needed} comes from {source}, which is not a file")
    return node


def _startup_config(
    image: str,
    pick: Callable[[str], Any],
    layers: list[_Layer],
    binds: Mapping[PurePosixPath, Bind],
    base: Path,
    magic: Mapping[str, str],
    error: Any,
) -> Bind | None:
    """containerlab's `startup-config`: a file (relative to the topology
    file) bound read-only as the daemon's config, checked to be a text file."""
    raw = pick("startup-config")
    if not isinstance(raw, str) or not raw:
        return None
    key = next(
        f"{layer.key}.startup-config"
        for layer in reversed(layers)
        if layer.data.get("startup-config") is not None
    )
    kind = image_kind(image)
    target = STARTUP_CONFIG_TARGETS.get(kind)
    if target is None:
        error(
            key,
            f"image {image!r} runs {'nothing' if kind is ImageKind.HOST else kind.value}: "
            "startup-config is the config of a BIRD or FRR node (bird.conf, frr.conf); "
            "bind other files with binds",
        )
        return None
    expanded = _expand(raw, magic)
    if "\n" in expanded:
        error(key, "an embedded config is not supported: give a file path")
        return None
    source = Path(expanded) if expanded.startswith("/") else (base / expanded).resolve()
    problem = _text_file_problem(source)
    if problem is not None:
        error(key, f"{source} {problem}")
        return None
    wanted = PurePosixPath(target)
    if wanted in binds:
        error(
            key,
            f"{target} is also bound from {binds[wanted].source} (binds): give one of the two",
        )
        return None
    return Bind(source, wanted, read_only=True)


def _text_file_problem(path: Path) -> str | None:
    """Why `path` cannot be a daemon's config (None when it can)."""
    try:
        if not path.exists():
            return "does not exist"
        if not path.is_file():
            return "is not a regular file"
        if path.stat().st_size > STARTUP_CONFIG_MAX:
            return f"is larger than {STARTUP_CONFIG_MAX // (1024 * 1024)} MiB: not a config file"
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if b"\0" in data:
        return "is not a text file (it has NUL bytes)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not a text file (not UTF-8)"
    return None


def _expand(text: str, magic: Mapping[str, str]) -> str:
    for variable, value in magic.items():
        text = text.replace(variable, value)
    return text


def _lab_owned(source: Path, lab_dir: Path) -> bool:
    return source == lab_dir or lab_dir in source.parents


def _parse_bind(
    spec: Any, base: Path, magic: Mapping[str, str], key: str, error: Any
) -> Bind | None:
    if not isinstance(spec, str):
        error(key, "must be a string SOURCE:TARGET[:ro|rw]")
        return None
    parts = _expand(spec, magic).split(":")
    read_only = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        read_only = parts[2] == "ro"
        parts = parts[:2]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        error(key, f"{spec!r} is not SOURCE:TARGET[:ro|rw]")
        return None
    source = (base / parts[0]).resolve() if not parts[0].startswith("/") else Path(parts[0])
    target = PurePosixPath(parts[1])
    if not target.is_absolute() or ".." in target.parts:
        error(key, f"target {parts[1]!r} must be an absolute path without '..'")
        return None
    if target == PurePosixPath("/"):
        error(key, "cannot bind over /")
        return None
    lab_dir = Path(magic[MAGIC_LAB_DIR])
    owned = _lab_owned(source, lab_dir)
    if not owned and not source.exists():
        error(key, f"bind source {source} does not exist")
        return None
    return Bind(source, target, read_only, owned)
