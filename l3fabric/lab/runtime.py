"""Nodes as namespaces: a network namespace, and a mount and UTS namespace
held open by a small holder process (the node's "container init").

Why a holder process and not a bind-mounted nsfs file: persisting a mount
namespace in a file needs a private mount on the host to put it on, and the
lab never changes the host's mounts. The holder is `sleep infinity` started
by `unshare --mount --uts --propagation slave` inside the node's network
namespace; everything of the node runs through `nsenter --target HOLDER`.

Slave propagation: mounts made in the node never reach the host, but a
workload namespace added on the host later (`ip netns add`) does show up in
the node's /run/netns, which the agent needs to wire it.

Inside a node: /sys is remounted (so it shows the node's interfaces), /run
is a private directory of the lab (with the host's /run/netns bound into it),
`binds` are bind mounts, and a bind target whose directory does not exist on
the host (/etc/l3fabric, /var/lib/l3fabric) gets an overlay on the nearest
existing ancestor, so nothing is ever created in the host's filesystem
outside the lab directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from l3fabric.lab.paths import LabPaths
from l3fabric.lab.topology import Bind, Node

log = logging.getLogger(__name__)

HOLDER_COMMAND = ("sleep", "infinity")
STOP_TIMEOUT = 10.0


class LabError(Exception):
    pass


# -- processes -------------------------------------------------------------------


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks after boot) that, with the PID, names one
    process: a PID alone may be reused after the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # exited, not reaped yet
    return int(fields[19])


def is_alive(pid: int, start: int) -> bool:
    return process_start_time(pid) == start


@dataclass(frozen=True)
class ProcessRecord:
    node: str
    what: str
    pid: int
    start: int
    log: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "what": self.what,
            "pid": self.pid,
            "start": self.start,
            "log": self.log,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            str(data["node"]),
            str(data["what"]),
            int(data["pid"]),
            int(data["start"]),
            str(data["log"]),
        )

    @property
    def alive(self) -> bool:
        return is_alive(self.pid, self.start)


def stop_process(pid: int, start: int, timeout: float = STOP_TIMEOUT) -> None:
    stop_processes([(pid, start)], timeout)


def stop_processes(processes: Sequence[tuple[int, int]], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM every process (its whole group when it leads one: the agent's
    ExaBGP), all at once, then SIGKILL whatever is left at the deadline."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [(pid, start) for pid, start in processes if is_alive(pid, start)]
        for pid, _ in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            for pid, _ in alive:
                _reap(pid)
            alive = [(pid, start) for pid, start in alive if is_alive(pid, start)]
            time.sleep(0.02)
    for pid, _ in processes:
        _reap(pid)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; others are reaped by their parent.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A daemon that outlives this command: own session, output to its log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def run(
    argv: Sequence[str], *, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(
            f"{shlex.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def in_node(holder: int, argv: Sequence[str]) -> list[str]:
    """argv run inside a node: its network, mount and UTS namespaces."""
    return ["nsenter", f"--target={holder}", "--mount", "--uts", "--net", "--", *argv]


def log_tail(path: str | Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


# -- namespaces --------------------------------------------------------------------


def netns_list() -> list[str]:
    try:
        return sorted(p.name for p in Path("/run/netns").iterdir())
    except FileNotFoundError:
        return []


def netns_add(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_del(name: str) -> None:
    if name in netns_list():
        run(["ip", "netns", "del", name], check=False)


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def processes_in_netns(inodes: set[int]) -> list[tuple[int, int]]:
    """(pid, start) of every process whose network namespace is one of these."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            inode = os.stat(entry / "ns" / "net").st_ino
        except OSError:
            continue
        if inode in inodes:
            start = process_start_time(int(entry.name))
            if start is not None and int(entry.name) != os.getpid():
                found.append((int(entry.name), start))
    return found


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    # Made inside ns_a with its peer put straight into ns_b: the pair never
    # exists in the host's namespace.
    run(
        ["ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b]
    )
    run(["ip", "-n", ns_a, "link", "set", if_a, "up"])
    run(["ip", "-n", ns_b, "link", "set", if_b, "up"])


def start_holder(node: str, netns: str, log_path: Path, timeout: float = 10) -> ProcessRecord:
    argv = [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "--",
        "unshare",
        "--mount",
        "--uts",
        "--propagation",
        "slave",
        "--",
        *HOLDER_COMMAND,
    ]
    proc = spawn(argv, log_path)
    deadline = time.monotonic() + timeout
    mine = os.readlink("/proc/self/ns/mnt")
    while True:
        try:
            comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
            ready = comm == HOLDER_COMMAND[0] and os.readlink(f"/proc/{proc.pid}/ns/mnt") != mine
        except OSError:
            ready = False
        if ready:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise LabError(f"the holder process of {netns} did not start: {log_tail(log_path)}")
        time.sleep(0.01)
    start = process_start_time(proc.pid)
    assert start is not None
    return ProcessRecord(node, "holder", proc.pid, start, str(log_path))


# -- mounts ------------------------------------------------------------------------


@dataclass(frozen=True)
class MountPlan:
    """How a node's filesystem view is made, as commands run in its mount
    namespace (before its /run is switched) plus host-side directories the
    runner creates inside the lab directory."""

    overlays: tuple[PurePosixPath, ...]
    binds: tuple[Bind, ...]  # in mount order, shallow first
    host_dirs: tuple[Path, ...] = field(default=())

    def script(self, paths: LabPaths, node: str) -> list[list[str]]:
        run_dir = paths.node_run(node)
        cmds: list[list[str]] = [
            ["umount", "-l", "/sys"],
            ["mount", "-t", "sysfs", "sysfs", "/sys"],
        ]
        for i, lower in enumerate(self.overlays):
            layer = paths.node_dir(node) / "overlay" / str(i)
            cmds.append(
                [
                    "mount",
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    f"lowerdir={lower},upperdir={layer}/upper,workdir={layer}/work",
                    str(lower),
                ]
            )
        for bind in self.binds:
            where = _run_path(bind.target, run_dir)
            if where is None:  # the /run ones exist already, made on the host side
                where = Path(bind.target)
                if bind.source.is_dir():
                    cmds.append(["mkdir", "-p", str(where)])
                else:
                    cmds.append(["mkdir", "-p", str(where.parent)])
                    cmds.append(["sh", "-c", 'test -e "$1" || : > "$1"', "sh", str(where)])
            cmds.append(["mount", "--bind", str(bind.source), str(where)])
            if bind.read_only:
                cmds.append(["mount", "-o", "remount,bind,ro", str(where)])
        if Path("/run/netns").is_dir():
            cmds.append(["mount", "--rbind", "/run/netns", str(run_dir / "netns")])
        cmds.append(["mount", "--rbind", str(run_dir), "/run"])
        cmds.append(["hostname", node])
        return cmds


def _run_path(target: PurePosixPath, run_dir: Path) -> Path | None:
    """Where a target under /run lives on the host side (the node's /run is a
    lab directory), or None for targets elsewhere."""
    run = PurePosixPath("/run")
    if target == run or run not in target.parents:
        return None
    return run_dir.joinpath(*target.parts[2:])


def plan_mounts(
    node: Node,
    paths: LabPaths,
    private: Sequence[PurePosixPath] = (),
    exists: Callable[[Path], bool] = Path.exists,
    is_dir: Callable[[Path], bool] = Path.is_dir,
) -> MountPlan:
    """The node's binds plus `private` directories (backed by directories in
    the node's lab directory), and the overlays needed for targets whose
    directory the host does not have."""
    node_dir = paths.node_dir(node.name)
    binds = list(node.binds)
    bound = {b.target for b in binds}
    for target in private:
        if target not in bound and not any(b.target in target.parents for b in binds):
            backing = node_dir / "private" / "-".join(target.parts[1:])
            binds.append(Bind(backing, target, lab_owned=True))
    binds.sort(key=lambda b: (len(b.target.parts), str(b.target)))
    run_dir = paths.node_run(node.name)
    overlays: set[PurePosixPath] = set()
    host_dirs: list[Path] = [run_dir / "netns"]
    for bind in binds:
        if bind.lab_owned and not exists(bind.source):
            host_dirs.append(bind.source)  # a lab directory made for the node
        in_run = _run_path(bind.target, run_dir)
        if in_run is not None:
            host_dirs.append(in_run if _source_is_dir(bind, is_dir) else in_run.parent)
            continue
        if any(parent in bound for parent in bind.target.parents):
            continue  # made inside another bind, which is mounted first
        host_target = Path(bind.target)
        if exists(host_target) and is_dir(host_target) == _source_is_dir(bind, is_dir):
            continue
        if exists(host_target):
            kind = "directory" if is_dir(host_target) else "file"
            raise LabError(
                f"node {node.name}: bind {bind.source} -> {bind.target}: the target is a {kind} "
                "in the image (the host), the source is not"
            )
        ancestor = next(p for p in bind.target.parents if exists(Path(p)))
        if ancestor == PurePosixPath("/"):
            raise LabError(
                f"node {node.name}: bind target {bind.target} would need a new top-level directory"
            )
        overlays.add(ancestor)
    roots = sorted(
        (o for o in overlays if not any(p in overlays for p in o.parents)),
        key=lambda p: (len(p.parts), str(p)),
    )
    for i in range(len(roots)):
        layer = node_dir / "overlay" / str(i)
        host_dirs += [layer / "upper", layer / "work"]
    return MountPlan(tuple(roots), tuple(binds), tuple(host_dirs))


def _source_is_dir(bind: Bind, is_dir: Callable[[Path], bool]) -> bool:
    # A lab-owned source that does not exist yet is made as a directory.
    return is_dir(bind.source) or bind.lab_owned


def setup_node_mounts(holder: int, plan: MountPlan, paths: LabPaths, node: str) -> None:
    for directory in plan.host_dirs:
        directory.mkdir(parents=True, exist_ok=True)
    script = "set -e\n" + "\n".join(shlex.join(cmd) for cmd in plan.script(paths, node))
    proc = run(
        ["nsenter", f"--target={holder}", "--mount", "--uts", "--", "sh", "-c", script], check=False
    )
    if proc.returncode != 0:
        raise LabError(f"node {node}: setting up its mounts failed: {proc.stderr.strip()}")


# -- state -------------------------------------------------------------------------


class LabState:
    """What a lab made, written after every step so that destroy can undo a
    deploy that stopped anywhere."""

    def __init__(self, paths: LabPaths, topology: str, data: dict[str, Any] | None = None) -> None:
        self.paths = paths
        self.data: dict[str, Any] = data or {
            "lab": paths.lab,
            "topology": topology,
            "created": time.time(),
            "namespaces": [],
            "holders": {},
            "processes": [],
            "workloads": [],
            "mounts": {},  # node -> mount points inside it (gone with its namespace)
            "dir": str(paths.dir),  # every file the lab made is under here
            "deployed": False,
        }

    @classmethod
    def load(cls, paths: LabPaths) -> LabState | None:
        try:
            data = json.loads(paths.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read {paths.state_file}: {exc}") from None
        return cls(paths, str(data.get("topology", "")), data)

    def save(self) -> None:
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        os.replace(tmp, self.paths.state_file)

    @property
    def namespaces(self) -> list[str]:
        return list(self.data["namespaces"])

    def add_namespace(self, name: str) -> None:
        self.data["namespaces"].append(name)
        self.save()

    def holder(self, node: str) -> ProcessRecord | None:
        raw = self.data["holders"].get(node)
        return ProcessRecord.from_dict(raw) if raw else None

    def set_holder(self, node: str, record: ProcessRecord) -> None:
        self.data["holders"][node] = record.to_dict()
        self.save()

    def set_mounts(self, node: str, targets: list[str]) -> None:
        self.data.setdefault("mounts", {})[node] = targets
        self.save()

    @property
    def processes(self) -> list[ProcessRecord]:
        return [ProcessRecord.from_dict(p) for p in self.data["processes"]]

    def add_process(self, record: ProcessRecord) -> None:
        self.data["processes"].append(record.to_dict())
        self.save()

    @property
    def workloads(self) -> list[dict[str, Any]]:
        return list(self.data["workloads"])

    def add_workload(self, node: str, name: str, netns: str, addresses: list[str]) -> None:
        self.data["workloads"].append(
            {"node": node, "name": name, "netns": netns, "addresses": addresses}
        )
        self.save()

    def set_extra(self, key: str, value: Any) -> None:
        """A record of something beyond the topology file (the management
        network, the Prometheus node), so later commands know of it."""
        self.data[key] = value
        self.save()

    def extra(self, key: str) -> Any:
        return self.data.get(key)

    def mark_deployed(self) -> None:
        self.data["deployed"] = True
        self.save()
