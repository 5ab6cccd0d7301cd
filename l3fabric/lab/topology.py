"""containerlab topology files: parsing and the checks made before anything
is created.

Only what the namespace runner can honour is accepted: `kind: linux` nodes
(`image`, `binds`, `exec`, `env`), and veth links in either containerlab
form (`endpoints: ["a:eth1", "b:eth1"]` or `type: veth` with endpoint
mappings). Every problem in a file is reported at once, each message naming
the file and the key path, like the node config loader does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from l3fabric.lab.paths import LAB_ROOT, LabPaths
from l3fabric.model import IFNAMSIZ

SUPPORTED_KINDS = ("linux",)
# containerlab's magic variables in binds and exec.
MAGIC_LAB_DIR = "__clabDir__"
MAGIC_NODE_DIR = "__clabNodeDir__"
MAGIC_NODE_NAME = "__clabNodeName__"

_LAB_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,39}$")
_NODE_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ImageKind(enum.Enum):
    """What the runner starts in a node, chosen from its image name."""

    L3FABRIC = "l3fabric"  # the node agent
    BIRD = "bird"  # bird -c /etc/bird/bird.conf
    FRR = "frr"  # zebra, staticd and the daemons enabled in /etc/frr/daemons
    PROMETHEUS = "prometheus"  # prometheus --config.file=/etc/prometheus/prometheus.yml
    HOST = "host"  # nothing: a namespace for exec commands and links


# Checked in order against the image's repository name (lower case, tag
# removed); the first match wins, anything else is a plain host. The routing
# daemons come first so that l3fabric/bird:2 is a BIRD image.
IMAGE_RULES: tuple[tuple[str, ImageKind], ...] = (
    ("bird", ImageKind.BIRD),
    ("frr", ImageKind.FRR),
    ("l3fabric", ImageKind.L3FABRIC),
    ("prometheus", ImageKind.PROMETHEUS),
)

# The file each daemon kind needs inside the node.
REQUIRED_FILES = {
    ImageKind.L3FABRIC: "/etc/l3fabric/node.yaml",
    ImageKind.BIRD: "/etc/bird/bird.conf",
    ImageKind.FRR: "/etc/frr/frr.conf",
    ImageKind.PROMETHEUS: "/etc/prometheus/prometheus.yml",
}


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

    @property
    def image_kind(self) -> ImageKind:
        return image_kind(self.image)

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


@dataclass(frozen=True, order=True)
class Endpoint:
    node: str
    iface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Topology:
    name: str  # the lab name: the file's `name:` unless overridden
    path: Path
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    lab_dir: Path = field(default=Path("/"))  # what __clabDir__ stands for

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name} has no node {name!r}")

    def node_dir(self, name: str) -> Path:
        return self.lab_dir / name

    def links_of(self, name: str) -> list[tuple[Endpoint, Endpoint]]:
        """(this end, other end) for each link of the node."""
        out = []
        for link in self.links:
            if link.a.node == name:
                out.append((link.a, link.b))
            if link.b.node == name:
                out.append((link.b, link.a))
        return out


def load_topology(
    path: str | Path, *, name: str | None = None, lab_root: Path | None = None
) -> Topology:
    """Parse and check a topology file. `name` overrides its `name:` (so two
    copies of one lab can run side by side); `lab_root` is the directory lab
    directories live in (__clabDir__ is lab_root/NAME/clab)."""
    path = Path(path).resolve()
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError([f"{where}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyError([f"{where}{at}: invalid YAML: {problem}"]) from None
    return parse_topology(data, path, name=name, lab_root=lab_root)


def parse_topology(
    data: Any, path: Path, *, name: str | None = None, lab_root: Path | None = None
) -> Topology:
    errors: list[str] = []
    where = str(path)

    def error(key: str, message: str) -> None:
        errors.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    if not isinstance(data, dict):
        raise TopologyError([f"{where}: the file must be a mapping with name and topology"])
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
    lab_dir = LabPaths(lab_root or LAB_ROOT, lab_name).clab_dir
    defaults = _mapping(topo.get("defaults"), "topology.defaults", error)
    kinds = _mapping(topo.get("kinds"), "topology.kinds", error)
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
        node = _parse_node(node_name, raw, defaults, kinds, path, lab_dir, key, error)
        if node is not None:
            nodes.append(node)
    links = _parse_links(topo.get("links"), {n.name for n in nodes}, set(raw_nodes), error)
    if errors:
        raise TopologyError(errors)
    return Topology(str(lab_name), path, tuple(nodes), tuple(links), lab_dir)


def _mapping(value: Any, key: str, error: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        error(key, "must be a mapping")
        return {}
    return value


def _parse_node(
    name: str,
    raw: Any,
    defaults: Mapping[str, Any],
    kinds: Mapping[str, Any],
    path: Path,
    lab_dir: Path,
    key: str,
    error: Any,
) -> Node | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        error(key, "must be a mapping")
        return None
    kind = raw.get("kind", defaults.get("kind"))
    if not isinstance(kind, str):
        error(f"{key}.kind", "missing (set it on the node or in topology.defaults)")
        return None
    if kind not in SUPPORTED_KINDS:
        error(
            f"{key}.kind",
            f"unknown or unsupported kind {kind!r}: the namespace runner supports "
            f"{', '.join(SUPPORTED_KINDS)}",
        )
        return None
    kind_defaults: Mapping[str, Any] = kinds.get(kind) or {}
    if not isinstance(kind_defaults, dict):
        error(f"topology.kinds.{kind}", "must be a mapping")
        kind_defaults = {}
    layers: list[Mapping[str, Any]] = [defaults, kind_defaults, raw]

    def pick(field_name: str) -> Any:
        for layer in reversed(layers):
            if field_name in layer:
                return layer[field_name]
        return None

    image = pick("image")
    if not isinstance(image, str) or not image:
        error(f"{key}.image", "missing or not a string")
        return None
    magic = {
        MAGIC_LAB_DIR: str(lab_dir),
        MAGIC_NODE_DIR: str(lab_dir / name),
        MAGIC_NODE_NAME: name,
    }
    binds: dict[PurePosixPath, Bind] = {}
    for layer, layer_key in zip(
        layers, ("topology.defaults", f"topology.kinds.{kind}", key), strict=True
    ):
        raw_binds = layer.get("binds") or []
        if not isinstance(raw_binds, list):
            error(f"{layer_key}.binds", "must be a list of SOURCE:TARGET[:ro]")
            continue
        for i, spec in enumerate(raw_binds):
            bind = _parse_bind(spec, path.parent, magic, f"{layer_key}.binds[{i}]", error)
            if bind is not None:
                binds[bind.target] = bind  # a later layer replaces the same target
    commands = pick("exec") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        error(f"{key}.exec", "must be a list of command strings")
        commands = []
    env: dict[str, str] = {}
    for layer in layers:
        raw_env = layer.get("env") or {}
        if isinstance(raw_env, dict):
            env.update({str(k): str(v) for k, v in raw_env.items()})
        else:
            error(f"{key}.env", "must be a mapping")
    commands = [_expand(c, magic) for c in commands]
    node = Node(
        name,
        kind,
        image,
        tuple(sorted(binds.values(), key=lambda b: (len(b.target.parts), str(b.target)))),
        tuple(commands),
        tuple(sorted(env.items())),
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


def _parse_endpoint(value: Any, key: str, error: Any) -> Endpoint | None:
    if isinstance(value, str):
        node, sep, iface = value.partition(":")
        if not sep or not node or not iface:
            error(key, f"{value!r} is not NODE:INTERFACE")
            return None
    elif isinstance(value, dict):
        raw_node, raw_iface = value.get("node"), value.get("interface")
        if not isinstance(raw_node, str) or not isinstance(raw_iface, str):
            error(key, "needs node and interface")
            return None
        node, iface = raw_node, raw_iface
    else:
        error(key, "must be NODE:INTERFACE or a mapping with node and interface")
        return None
    if len(iface) > IFNAMSIZ:
        error(key, f"interface name {iface!r} is longer than {IFNAMSIZ} characters")
        return None
    if not _IFACE_RE.match(iface) or iface == "lo":
        error(key, f"{iface!r} is not a usable interface name")
        return None
    return Endpoint(node, iface)


def _parse_links(raw: Any, valid_nodes: set[str], all_nodes: set[str], error: Any) -> list[Link]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        error("topology.links", "must be a list")
        return []
    links: list[Link] = []
    seen: dict[Endpoint, str] = {}
    for i, item in enumerate(raw):
        key = f"topology.links[{i}]"
        if not isinstance(item, dict):
            error(key, "must be a mapping with endpoints")
            continue
        link_type = item.get("type", "veth")
        if link_type != "veth":
            error(f"{key}.type", f"link type {link_type!r} is not supported (only veth)")
            continue
        raw_endpoints = item.get("endpoints")
        if not isinstance(raw_endpoints, list) or len(raw_endpoints) != 2:
            error(f"{key}.endpoints", "must list exactly two endpoints")
            continue
        ends = [
            _parse_endpoint(value, f"{key}.endpoints[{j}]", error)
            for j, value in enumerate(raw_endpoints)
        ]
        ok = True
        for j, end in enumerate(ends):
            if end is None:
                ok = False
                continue
            if end.node not in all_nodes:
                error(f"{key}.endpoints[{j}]", f"unknown node {end.node!r}")
                ok = False
            elif end in seen:
                error(f"{key}.endpoints[{j}]", f"{end} is already used by {seen[end]}")
                ok = False
            else:
                seen[end] = key
        a, b = ends
        if (
            ok
            and a is not None
            and b is not None
            and a.node in valid_nodes
            and b.node in valid_nodes
        ):
            links.append(Link(a, b))
    return links
