#!/usr/bin/env python3
"""Workload churn: sustained adds and deletes on one node, file datastore and etcd.

    .venv/bin/python -m bench.churn [--quick] [--workloads N] [--churn K]
        [--backends file,etcd] [--members M] [--json FILE]

Per backend, two real agents (node1, node2) in node namespaces on one bridge,
a BGP full mesh from the node registry; for etcd, M members in namespaces of
their own, as in bench/datastore.py. On node1, through its control socket,
one call after the other, each workload in a namespace made beforehand (as
a runtime makes the sandbox before it calls the network plugin):

1. fill: N workloads added, from an empty node up to N on it;
2. churn: K times, the oldest workload deleted and a new one added, the
   node staying at N;
3. drain: every workload deleted.

Each call is timed from the request to the agent's answer (IPAM, the
record, the veth, addresses and host routes, the announcement handed to
ExaBGP). Rates are calls over the phase's wall time. That the calls did
their work is checked, not assumed: after the fill node2 holds a learned
route to every workload of node1, after the drain none.

The anchor for an add is Calico's CNI plugin, measured at about 15 ms of its
own work per pod; Calico is not on this machine, so that figure is a target,
not a baseline measured in the run. Everything made here is removed at the
end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.datastore import ETCD, Fabric, Node, log, percentile, rounded
from bench.fabric import Lab, wait_until
from bench.runner import Figure, Target, figure_row, write_figures
from l3fabric.model import RTPROT_L3FABRIC

# Calico's CNI plugin: about 15 ms of its own work per pod (the anchor).
CALICO_CNI_ADD_MS = 15.0
ROUTES_TIMEOUT = 120.0


@dataclass
class Phases:
    backend: str
    workloads: int
    fill_s: float = 0.0
    add_ms: list[float] = field(default_factory=list)
    churn_s: float = 0.0
    churn_add_ms: list[float] = field(default_factory=list)
    churn_delete_ms: list[float] = field(default_factory=list)
    drain_s: float = 0.0
    delete_ms: list[float] = field(default_factory=list)


def _timed(node: Node, method: str, params: dict[str, Any]) -> float:
    began = time.perf_counter()
    node.call(method, params)
    return (time.perf_counter() - began) * 1000


def learned_routes(node: Node) -> int:
    """Routes of ours on the peer through a gateway: learned over BGP."""
    argv = ["ip", "-n", node.netns, "-4", "route", "show", "proto", str(RTPROT_L3FABRIC)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    return sum(1 for line in out.splitlines() if " via " in line)


def run_backend(lab: Lab, backend: str, members: int, n: int, churn: int) -> Phases:
    result = Phases(backend, n)
    fabric = Fabric(lab, backend, members)
    if backend == "etcd":
        log(f"etcd: starting {members} member(s)")
        fabric.start_etcd()
    node1, node2 = fabric.add_node(1), fabric.add_node(2)
    for node in (node1, node2):
        fabric.start_agent(node)
    wait_until(lambda: node1.peers() == {node2.address}, 60, "node1 peers with node2", 0.1)
    namespaces = fabric.workload_namespaces(node1, n + churn, "c")
    names = [f"churn{i}" for i in range(n + churn)]
    present: deque[str] = deque()

    log(f"{backend}: adding {n} workloads on node1")
    began = time.perf_counter()
    for name, ns in zip(names[:n], namespaces[:n], strict=True):
        result.add_ms.append(_timed(node1, "workload.add", {"name": name, "netns": ns}))
        present.append(name)
    result.fill_s = time.perf_counter() - began
    wait_until(lambda: learned_routes(node2) >= n, ROUTES_TIMEOUT, f"node2 learns {n} routes", 0.2)

    log(f"{backend}: {churn} deletes and adds at {n} workloads")
    began = time.perf_counter()
    for name, ns in zip(names[n:], namespaces[n:], strict=True):
        oldest = present.popleft()
        result.churn_delete_ms.append(_timed(node1, "workload.del", {"name": oldest}))
        result.churn_add_ms.append(_timed(node1, "workload.add", {"name": name, "netns": ns}))
        present.append(name)
    result.churn_s = time.perf_counter() - began

    log(f"{backend}: deleting all {n}")
    began = time.perf_counter()
    while present:
        result.delete_ms.append(_timed(node1, "workload.del", {"name": present.popleft()}))
    result.drain_s = time.perf_counter() - began
    wait_until(lambda: learned_routes(node2) == 0, ROUTES_TIMEOUT, "node2 withdraws them", 0.2)
    return result


def _spread(values: list[float]) -> str:
    tenth = max(1, len(values) // 10)
    first, last = values[:tenth], values[-tenth:]
    return (
        f"p50 of the first {tenth} {percentile(first, 0.5):.1f} ms, "
        f"of the last {tenth} {percentile(last, 0.5):.1f} ms"
    )


def figures(results: list[Phases]) -> list[Figure]:
    found = []
    for r in results:
        name = r.backend
        adds, deletes = r.add_ms, r.delete_ms
        anchor = Target("<=", CALICO_CNI_ADD_MS)
        found += [
            Figure(f"{name}: adds from 0 to {r.workloads} workloads", "adds/s",
                   len(adds) / r.fill_s, summary=f"{len(adds)} adds",
                   note=_spread(adds)),
            Figure(f"{name}: one add, p50", "ms", percentile(adds, 0.5), target=anchor,
                   samples=tuple(adds), summary=f"p50 of {len(adds)}",
                   note="target: Calico CNI's ~15 ms per pod (an anchor, not run here)"),
            Figure(f"{name}: one add, p99", "ms", percentile(adds, 0.99),
                   samples=tuple(adds), summary=f"p99 of {len(adds)}"),
            Figure(f"{name}: delete and add at {r.workloads} workloads", "pairs/s",
                   len(r.churn_add_ms) / r.churn_s if r.churn_s else None,
                   summary=f"{len(r.churn_add_ms)} pairs",
                   note=f"add p50 {percentile(r.churn_add_ms, 0.5):.1f} ms, "
                   f"delete p50 {percentile(r.churn_delete_ms, 0.5):.1f} ms"),
            Figure(f"{name}: deletes from {r.workloads} to 0 workloads", "deletes/s",
                   len(deletes) / r.drain_s, summary=f"{len(deletes)} deletes",
                   note=_spread(deletes)),
            Figure(f"{name}: one delete, p50", "ms", percentile(deletes, 0.5),
                   samples=tuple(deletes), summary=f"p50 of {len(deletes)}"),
            Figure(f"{name}: one delete, p99", "ms", percentile(deletes, 0.99),
                   samples=tuple(deletes), summary=f"p99 of {len(deletes)}"),
        ]  # fmt: skip
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 workloads, 10 churned (CI)")
    parser.add_argument("--workloads", type=int, help="workloads on the node (default 1000)")
    parser.add_argument("--churn", type=int, help="deletes and adds at that size (default 200)")
    parser.add_argument("--members", type=int, help="etcd members (default 3; quick 1)")
    parser.add_argument("--backends", default="file,etcd", help="default file,etcd")
    parser.add_argument("--json", type=Path, help="write figures and samples to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    n = args.workloads or (30 if args.quick else 1000)
    churn = args.churn if args.churn is not None else (10 if args.quick else 200)
    members = args.members or (1 if args.quick else 3)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or not set(backends) <= {"file", "etcd"}:
        parser.error("--backends takes file and/or etcd")
    if not 1 <= n <= 16_000 or churn < 0 or not 1 <= members <= 5:
        parser.error("--workloads within 1..16000, --churn >= 0, --members 1..5")
    if "etcd" in backends and not os.access(ETCD, os.X_OK):
        parser.error(f"etcd backend: no etcd binary at {ETCD} (Debian: etcd-server)")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="l3fchurn"))
    lab = Lab(f"ch{os.getpid() % 100000}", workdir)
    results: list[Phases] = []
    try:
        for backend in backends:
            results.append(run_backend(lab, backend, members, n, churn))
            lab.close()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    found = figures(results)
    print(f"{n} workloads, {churn} churned, etcd x{members}; {os.cpu_count()} CPUs")
    for figure in found:
        print(" | ".join(figure_row(figure)))
        if figure.note:
            print(f"  {figure.note}")
    if args.json:
        raw = [rounded(vars(r)) for r in results]
        write_figures(args.json, found, raw, f"{n} workloads, {churn} churned, etcd x{members}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
