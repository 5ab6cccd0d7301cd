"""CPU seconds and RSS of a process and its descendants, from /proc, grouped
the way the benchmarks report them: the agent, ExaBGP, the bridge (ExaBGP's
API process), BIRD. Only processes the bench started are read, by PID."""

from __future__ import annotations

import os
from collections.abc import Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    """The live children of every thread of pid (/proc/PID/task/*/children)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(c) for c in handle.read().split())
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """pid and every descendant alive now."""
    found = [pid]
    pending = [pid]
    while pending:
        for child in children(pending.pop()):
            if child not in found:
                found.append(child)
                pending.append(child)
    return found


def role(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "l3fabric.bgp.bridge" in cmdline:
        return "bridge"
    if "exabgp" in cmdline:
        return "exabgp"
    if "bird" in cmdline.split(" ", 1)[0]:
        return "bird"
    if "l3fabric" in cmdline:
        return "agent"
    return "other"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one live process (fields 14 and 15 of its stat)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE / 1024 / 1024
    except (OSError, IndexError):
        return 0.0


def snapshot(roots: Iterable[int]) -> dict[int, tuple[str, float]]:
    """{pid: (role, cpu seconds)} over the trees of `roots`."""
    out: dict[int, tuple[str, float]] = {}
    for root in roots:
        for pid in tree(root):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                out[pid] = (role(pid), cpu)
    return out


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per role. A process that
    started in between counts from zero; one that exited is lost (the
    benches keep the processes they measure up)."""
    spent: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        spent[name] = spent.get(name, 0.0) + cpu - start
    return spent


def rss_by_role(roots: Iterable[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for root in roots:
        for pid in tree(root):
            name = role(pid)
            out[name] = out.get(name, 0.0) + rss_mb(pid)
    return out
