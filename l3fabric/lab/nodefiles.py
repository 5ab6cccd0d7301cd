"""A node's files as an operator meets them: its daemons' logs (`lab logs`),
and single-file binds whose host file was replaced since the deploy.

A bind of one file pins that file's inode. An editor or `sed -i` writes a
new file and renames it over the old name, so the node keeps the old inode:
a reload (SIGHUP, `birdc configure`) reads the old config. The runner cannot
follow the rename; it compares the inode the node sees with the host file's
and says so (`lab inspect`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from l3fabric.lab import daemons
from l3fabric.lab.runtime import LabError, LabState, in_node, run
from l3fabric.lab.topology import Bind, ImageKind, Node

EXABGP_LOG = PurePosixPath("exabgp") / "exabgp.log"  # under the agent's state_dir


def log_files(state: LabState, ctx: daemons.NodeContext) -> dict[str, Path]:
    """Every log of the node on the host, by daemon: agent, exabgp, bird,
    frr-zebra, frr-bgpd, ..., dns, prometheus, etcd, holder."""
    name = ctx.node.name
    files = {r.what: Path(r.log) for r in state.processes if r.node == name}
    holder = state.holder(name)
    if holder is not None:
        files["holder"] = Path(holder.log)
    if ctx.node.image_kind is ImageKind.L3FABRIC:
        exabgp = ctx.host_path(daemons.agent_state_dir(ctx) / EXABGP_LOG)
        if exabgp is not None:
            files["exabgp"] = exabgp
    return files


def select_logs(files: dict[str, Path], daemon: str | None, node: str) -> list[tuple[str, Path]]:
    """The logs asked for: one daemon (`frr` is every FRR daemon), or every
    daemon of the node but its holder."""
    if daemon is None:
        chosen = [(w, p) for w, p in files.items() if w != "holder"]
    elif daemon == "frr":
        chosen = [(w, p) for w, p in files.items() if w.startswith("frr-")]
    else:
        chosen = [(w, p) for w, p in files.items() if w == daemon]
    if not chosen:
        known = ", ".join(sorted({*files, *(["frr"] if any("frr-" in w for w in files) else [])}))
        raise LabError(f"node {node} has no {daemon or 'daemon'} log (it has: {known or 'none'})")
    return chosen


def show_logs(
    chosen: list[tuple[str, Path]],
    out: IO[str],
    *,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    interval: float = 0.25,
) -> None:
    """Print the logs (with a heading each when there are several); with
    `follow`, keep printing what is added until `stop()` (a log truncated or
    replaced is read again from its start)."""
    positions: dict[Path, tuple[int, int]] = {}
    headings = len(chosen) > 1

    def drain(what: str, path: Path, first: bool) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        inode, offset = positions.get(path, (st.st_ino, 0))
        if inode != st.st_ino or st.st_size < offset:
            offset = 0
        if st.st_size == offset:
            positions[path] = (st.st_ino, offset)
            return
        with open(path, errors="replace") as f:
            f.seek(offset)
            text = f.read()
            positions[path] = (st.st_ino, f.tell())
        if headings:
            out.write(f"{'' if first else chr(10)}==> {what} ({path}) <==\n")
        out.write(text)
        out.flush()

    for i, (what, path) in enumerate(chosen):
        drain(what, path, i == 0)
    while follow and not stop():
        time.sleep(interval)
        for what, path in chosen:
            drain(what, path, False)


@dataclass(frozen=True)
class StaleBind:
    target: str
    source: str

    def message(self, node: str) -> str:
        return (
            f"node {node}: {self.target} is bound from {self.source}, which was replaced after "
            "the deploy (an editor or sed -i writes a new file): the node still sees the old "
            "one. Write into the file instead (cat new > file), or destroy and deploy again"
        )


def stale_binds(
    node: Node, holder: int, inside: Callable[[int, str], str | None]
) -> list[StaleBind]:
    """The node's single-file binds whose host file is no longer the one the
    node sees. `inside(holder, target)` is the "dev:inode" the node sees."""
    found = []
    for bind in _file_binds(node.binds):
        try:
            st = os.stat(bind.source)
        except OSError:
            continue
        seen = inside(holder, str(bind.target))
        if seen is not None and seen != f"{st.st_dev}:{st.st_ino}":
            found.append(StaleBind(str(bind.target), str(bind.source)))
    return found


def inode_inside(holder: int, target: str) -> str | None:
    proc = run(in_node(holder, ["stat", "-Lc", "%d:%i", target]), check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _file_binds(binds: Iterable[Bind]) -> list[Bind]:
    return [b for b in binds if not b.lab_owned and b.source.is_file()]


# l3fabric commands that ask the node's agent through its control socket.
AGENT_COMMANDS = frozenset(
    {"status", "health", "routes", "reconcile", "workload", "ipam", "config"}
)
# What answers the same question on a node that runs no agent.
_INSTEAD = {
    ImageKind.BIRD: "birdc show protocols",
    ImageKind.FRR: "vtysh -c 'show bgp summary'",
    ImageKind.ETCD: "etcdctl endpoint health",
    ImageKind.PROMETHEUS: "curl -s http://127.0.0.1:9090/-/ready",
    ImageKind.GOBGP: "gobgp neighbor",
}


def not_an_agent(node: Node, argv: list[str]) -> str | None:
    """Why `argv` cannot work in `node`: an l3fabric command that asks the
    node's agent, in a node whose image runs none (None when it can)."""
    if node.image_kind is ImageKind.L3FABRIC or "--socket" in argv:
        return None
    if Path(argv[0]).name == "l3fabric":
        rest = argv[1:]
    elif len(argv) > 2 and argv[1:3] == ["-m", "l3fabric.cli"]:
        rest = argv[3:]
    else:
        return None
    command = next((a for a in rest if not a.startswith("-")), None)
    if command not in AGENT_COMMANDS:
        return None
    kind = node.image_kind
    instead = f"; ask it with `{_INSTEAD[kind]}`" if kind in _INSTEAD else ""
    runs = "nothing (a plain host)" if kind is ImageKind.HOST else kind.value
    return (
        f"node {node.name} is a {kind.value} node (image {node.image} runs {runs}), "
        f"not an l3fabric node: `l3fabric {command}` asks an l3fabric agent{instead}"
    )
