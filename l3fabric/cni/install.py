"""`l3fabric cni install`: the plugin executable and the network
configuration list, planned as files and written atomically.

The executable is a launcher: a script run by a Python interpreter that
imports `l3fabric.cni.plugin`. By default it runs this installation's own
interpreter with `-I` (so it works from a virtualenv and ignores PYTHON*
variables a runtime may pass on). For a node whose runtime cannot see this
installation (the plugin installed from a container), `lib_dir` copies the
plugin's few modules to the host and `python` names the host's interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import l3fabric
from l3fabric import control
from l3fabric.cni.conflist import parse_conflist, plugin_stdin
from l3fabric.cni.netconf import DnsConfig, parse_netconf

PLUGIN_NAME = "l3fabric"
CONFLIST_NAME = "10-l3fabric.conflist"
NETWORK_NAME = "l3fabric"
# The conflist offers 1.1.0 to runtimes that know it (GC, STATUS) and 1.0.0
# to older ones (containerd 1.7, Podman 4), which read only cniVersion.
DEFAULT_VERSION = "1.0.0"
DEFAULT_VERSIONS = ("1.0.0", "1.1.0")
# Everything the plugin imports besides the standard library, relative to
# the directory holding the `l3fabric` package (test_cni_plugin checks it).
PLUGIN_MODULES = (
    "l3fabric/__init__.py",
    "l3fabric/control.py",
    "l3fabric/cni/__init__.py",
    "l3fabric/cni/errors.py",
    "l3fabric/cni/spec.py",
    "l3fabric/cni/env.py",
    "l3fabric/cni/netconf.py",
    "l3fabric/cni/result.py",
    "l3fabric/cni/plugin.py",
)
# Reference plugins (containernetworking/plugins) that chain after l3fabric,
# with the capabilities a runtime fills in for them.
CHAINABLE: dict[str, dict[str, Any]] = {
    "portmap": {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    "tuning": {"type": "tuning"},
    "bandwidth": {"type": "bandwidth", "capabilities": {"bandwidth": True}},
}
SHEBANG_MAX = 120  # older kernels cut #! lines at 127 bytes


@dataclass(frozen=True)
class InstallOptions:
    bin_dir: Path = Path("/opt/cni/bin")
    conf_dir: Path = Path("/etc/cni/net.d")
    socket: Path = control.DEFAULT_SOCKET
    pools: tuple[str, ...] = ()
    dns: DnsConfig = field(default_factory=DnsConfig)
    chain: tuple[str, ...] = ()
    cni_version: str | None = None  # None: DEFAULT_VERSION offering DEFAULT_VERSIONS
    python: str = sys.executable
    lib_dir: Path | None = None  # copy the plugin's modules here (a host path)
    host_root: Path = Path("/")  # where the host's / is mounted (in a container)


@dataclass(frozen=True)
class PlannedFile:
    path: Path  # as the host sees it
    content: bytes
    mode: int


def conflist(options: InstallOptions) -> dict[str, Any]:
    plugin: dict[str, Any] = {"type": PLUGIN_NAME, "socket": str(options.socket)}
    if options.pools:
        plugin["pools"] = list(options.pools)
    if options.dns:
        plugin["dns"] = options.dns.to_dict()
    out: dict[str, Any] = {"cniVersion": options.cni_version or DEFAULT_VERSION}
    if options.cni_version is None:
        out["cniVersions"] = list(DEFAULT_VERSIONS)
    out["name"] = NETWORK_NAME
    out["plugins"] = [plugin] + [dict(CHAINABLE[name]) for name in options.chain]
    return out


def launcher(python: str, lib: Path | None) -> bytes:
    body = []
    if lib is not None:
        body.append(f"import sys; sys.path.insert(0, {str(lib)!r})")
    body.append("from l3fabric.cni.plugin import main; main()")
    head = "# The l3fabric CNI plugin; written by `l3fabric cni install`, rewritten by the next.\n"
    if len(python) <= SHEBANG_MAX and not any(c.isspace() for c in python):
        return (f"#!{python} -I\n{head}" + "\n".join(body) + "\n").encode()
    # A long or spaced interpreter path cannot be a #! line: go through sh.
    code = "; ".join(body).replace("'", "'\"'\"'")
    quoted = python.replace("'", "'\"'\"'")
    return f"#!/bin/sh\n{head}exec '{quoted}' -I -c '{code}' \"$@\"\n".encode()


def plugin_sources() -> dict[str, bytes]:
    root = Path(l3fabric.__file__).resolve().parent.parent
    return {name: (root / name).read_bytes() for name in PLUGIN_MODULES}


def plan(options: InstallOptions) -> tuple[PlannedFile, ...]:
    files: list[PlannedFile] = []
    lib: Path | None = None
    if options.lib_dir is not None:
        sources = plugin_sources()
        digest = hashlib.sha256(b"".join(sources[n] for n in PLUGIN_MODULES)).hexdigest()[:12]
        lib = options.lib_dir / f"{l3fabric.__version__}-{digest}"
        files += [PlannedFile(lib / name, data, 0o644) for name, data in sources.items()]
    files.append(PlannedFile(options.bin_dir / PLUGIN_NAME, launcher(options.python, lib), 0o755))
    text = json.dumps(conflist(options), indent=2) + "\n"
    # Never write a list a runtime, or the plugin itself, would refuse.
    parse_netconf(plugin_stdin(parse_conflist(text.encode()), 0))
    files.append(PlannedFile(options.conf_dir / CONFLIST_NAME, text.encode(), 0o644))
    return tuple(files)


def on_host(root: Path, path: Path) -> Path:
    """Where host path `path` is from here, with the host's / at root."""
    return root / path.relative_to("/") if path.is_absolute() else root / path


def write_atomic(path: Path, content: bytes, mode: int) -> bool:
    """Write path through a temporary file and a rename, so a runtime never
    runs or reads half a file; False when it already had this content."""
    try:
        if path.read_bytes() == content and (path.stat().st_mode & 0o7777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def apply(files: tuple[PlannedFile, ...], options: InstallOptions) -> list[tuple[Path, bool]]:
    """Write the planned files in order (the modules, then the launcher that
    points at them, then the conflist that makes runtimes use it) and remove
    module copies of other versions. Returns (host path, changed) per file."""
    written = [
        (f.path, write_atomic(on_host(options.host_root, f.path), f.content, f.mode)) for f in files
    ]
    if options.lib_dir is not None:
        current = {
            f.path.relative_to(options.lib_dir).parts[0]
            for f in files
            if f.path.is_relative_to(options.lib_dir)
        }
        for old in sorted(on_host(options.host_root, options.lib_dir).iterdir()):
            if old.name not in current and old.is_dir():
                _remove_tree(old)
    return written


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def earlier_conflists(options: InstallOptions) -> list[str]:
    """Network configurations a runtime would pick before l3fabric's (it
    takes the first in lexical order)."""
    conf_dir = on_host(options.host_root, options.conf_dir)
    if not conf_dir.is_dir():
        return []
    names = [p.name for p in conf_dir.iterdir() if p.suffix in (".conf", ".conflist", ".json")]
    return sorted(n for n in names if n < CONFLIST_NAME and not n.startswith("."))
