#!/usr/bin/env python3
"""Datastore bench: workload adds and node joins, file datastore against etcd.

Run as root from the checkout: `sudo .venv/bin/python -m bench.datastore
[--quick]`. For each backend, real agents run in node namespaces on one bridge (198.18.0.N/24,
BGP full mesh from the node registry); with etcd, `--members` members run in
namespaces of their own on the same bridge and every agent lists them all.

1. Adds on one node: --adds workloads added one after the other through
   node1's control socket (`workload.add`, each in a namespace made
   beforehand); the rate is adds / wall time, with each call's latency.
2. Adds on three nodes at once: --adds workloads on each of node1-3, from
   three threads at the same time; the rate counts all of them.
3. Join: a new agent starts; the time from its first answer on its control
   socket (its node record is written just before) until its address is in
   every other node's peer list (`status` peers, polled every 20 ms), and
   from the process start. --joins new nodes, one after the other.

Everything made (namespaces, processes, the work directory) is removed at
the end, also on an error, Ctrl-C or SIGTERM. Nothing changes in the root
namespace.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bench.fabric import L3FABRIC, Fatal, Lab, sh, wait_until
from l3fabric import control

ASN = 64512
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
MEMBER_BASE = 100  # etcd member i at 198.18.0.(100 + i)
ADD_TIMEOUT = 60.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Node:
    name: str
    index: int  # 198.18.0.INDEX
    netns: str
    state_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"198.18.0.{self.index}"

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return control.call(
            method, params, socket_path=self.state_dir / "agent.sock", timeout=ADD_TIMEOUT
        )

    def peers(self) -> set[str]:
        return {str(p["peer"]) for p in self.call("status")["peers"]}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class Result:
    backend: str
    members: int
    single_adds: int = 0
    single_seconds: float = 0.0
    single_latency_ms: list[float] = field(default_factory=list)
    parallel_adds: int = 0
    parallel_seconds: float = 0.0
    parallel_latency_ms: list[float] = field(default_factory=list)
    join_from_answer_s: list[float] = field(default_factory=list)
    join_from_start_s: list[float] = field(default_factory=list)


class Fabric:
    """The underlay, the etcd members and the agents of one backend's run."""

    def __init__(self, lab: Lab, backend: str, members: int) -> None:
        self.lab = lab
        self.backend = backend
        self.members = members if backend == "etcd" else 0
        self.switch = lab.netns(f"{backend[0]}sw")
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        self.nodes: list[Node] = []
        self.endpoints = [f"http://198.18.0.{MEMBER_BASE + i}:2379" for i in range(self.members)]

    def attach(self, suffix: str, index: int) -> str:
        ns = self.lab.netns(f"{self.backend[0]}{suffix}")
        port = f"p{index}"
        sh("ip", "link", "add", "eth1", "netns", ns, "type", "veth", "peer", port, "netns",
           self.switch)  # fmt: skip
        sh("ip", "-n", ns, "addr", "add", f"198.18.0.{index}/24", "dev", "eth1")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
        sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.switch, "link", "set", port, "up")
        return ns

    def start_etcd(self) -> None:
        peers = [f"m{i}=http://198.18.0.{MEMBER_BASE + i}:2380" for i in range(self.members)]
        namespaces = []
        for i in range(self.members):
            address = f"198.18.0.{MEMBER_BASE + i}"
            ns = self.attach(f"m{i}", MEMBER_BASE + i)
            namespaces.append(ns)
            argv = [
                ETCD,
                f"--name=m{i}",
                f"--data-dir={self.lab.workdir / f'etcd-m{i}'}",
                f"--listen-client-urls=http://{address}:2379",
                f"--advertise-client-urls=http://{address}:2379",
                f"--listen-peer-urls=http://{address}:2380",
                f"--initial-advertise-peer-urls=http://{address}:2380",
                f"--initial-cluster={','.join(peers)}",
                "--initial-cluster-state=new",
                "--log-level=warn",
            ]
            self.lab.start(argv, ns, self.lab.workdir / f"etcd-m{i}.log")
        for ns, url in zip(namespaces, self.endpoints, strict=True):
            wait_until(functools.partial(etcd_healthy, ns, url), 60, f"etcd {url} healthy", 0.2)

    def config(self, node: Node) -> Path:
        if self.backend == "etcd":
            datastore: dict[str, Any] = {"type": "etcd", "endpoints": self.endpoints}
        else:
            datastore = {"type": "file", "path": str(self.lab.workdir / "file-store")}
        config = {
            "node": {"name": node.name, "asn": ASN, "addresses": {"ipv4": node.address}},
            "pools": [{"cidr": "100.64.0.0/16", "block_size": 26}],
            "state_dir": str(node.state_dir),
            "datastore": datastore,
            "metrics": {"enabled": False},
            "bgp": {"mesh": True},
            "log": {"level": "info", "format": "json"},
        }
        path = node.state_dir.parent / f"{node.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def add_node(self, index: int) -> Node:
        name = f"node{index}"
        ns = self.attach(f"n{index}", index)
        state = self.lab.workdir / self.backend / name
        state.mkdir(parents=True, exist_ok=True)
        node = Node(name, index, ns, state, self.lab.workdir / f"{self.backend}-{name}.log")
        self.nodes.append(node)
        return node

    def start_agent(self, node: Node) -> tuple[float, float]:
        """Start the agent; (monotonic start, monotonic first answer)."""
        config = self.config(node)
        started = time.monotonic()
        node.proc = self.lab.start([*L3FABRIC, "agent", "--config", str(config)], node.netns,
                                   node.log)  # fmt: skip

        def answers() -> bool:
            if node.proc is not None and node.proc.poll() is not None:
                raise Fatal(f"agent {node.name} exited:\n{node.log_tail()}")
            node.call("status")
            return True

        try:
            wait_until(answers, 60, f"agent {node.name} answers", interval=0.01)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{node.log_tail()}") from None
        return started, time.monotonic()

    def workload_namespaces(self, node: Node, count: int, tag: str) -> list[str]:
        names = [f"{self.backend[0]}{node.index}{tag}{i}" for i in range(count)]
        self.lab.netns_many(names)
        return [f"{self.lab.tag}{n}" for n in names]


_HEALTHY = (
    "import json, sys, urllib.request; "
    "a = json.loads(urllib.request.urlopen(sys.argv[1] + '/health', timeout=1).read()); "
    "sys.exit(a.get('health') != 'true')"
)


def etcd_healthy(netns: str, url: str) -> bool:
    """Asked inside the member's namespace: the root namespace has no route there."""
    argv = ["ip", "netns", "exec", netns, sys.executable, "-c", _HEALTHY, url]
    return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def add_many(node: Node, namespaces: list[str], tag: str) -> list[float]:
    """Add one workload per namespace; each call's latency in ms."""
    latencies = []
    for i, ns in enumerate(namespaces):
        began = time.perf_counter()
        node.call("workload.add", {"name": f"{node.name}-{tag}{i}", "netns": ns})
        latencies.append((time.perf_counter() - began) * 1000)
    return latencies


def on_every_peer_list(joiner: Node, others: list[Node]) -> bool:
    return all(joiner.address in n.peers() for n in others)


def run_backend(lab: Lab, backend: str, members: int, adds: int, joins: int) -> Result:
    result = Result(backend, members if backend == "etcd" else 0)
    fabric = Fabric(lab, backend, members)
    if backend == "etcd":
        log(f"etcd: starting {members} member(s)")
        fabric.start_etcd()
    first = [fabric.add_node(i) for i in (1, 2, 3)]
    for node in first:
        fabric.start_agent(node)
    wait_until(lambda: all(len(n.peers()) == 2 for n in first), 60, "a mesh of three", interval=0.1)
    log(f"{backend}: {adds} adds on node1")
    namespaces = fabric.workload_namespaces(first[0], adds, "s")
    began = time.perf_counter()
    result.single_latency_ms = add_many(first[0], namespaces, "s")
    result.single_seconds = time.perf_counter() - began
    result.single_adds = adds

    log(f"{backend}: {adds} adds on each of node1-3 at once")
    per_node = {n.name: fabric.workload_namespaces(n, adds, "p") for n in first}
    latencies: dict[str, list[float]] = {}
    errors: list[BaseException] = []

    def worker(node: Node) -> None:
        try:
            latencies[node.name] = add_many(node, per_node[node.name], "p")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in first]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.parallel_seconds = time.perf_counter() - began
    if errors:
        raise errors[0]
    result.parallel_adds = 3 * adds
    result.parallel_latency_ms = [ms for name in sorted(latencies) for ms in latencies[name]]

    for j in range(joins):
        joiner = fabric.add_node(4 + j)
        others = [n for n in fabric.nodes if n is not joiner]
        log(f"{backend}: {joiner.name} joins {len(others)} nodes")
        started, answered = fabric.start_agent(joiner)
        wait_until(
            functools.partial(on_every_peer_list, joiner, others), 60, f"{joiner.name} joined"
        )
        seen = time.monotonic()
        result.join_from_answer_s.append(seen - answered)
        result.join_from_start_s.append(seen - started)
    return result


def rounded(value: Any) -> Any:
    """Raw numbers to the microsecond: more digits are noise."""
    if isinstance(value, float):
        return round(value, 6 if value < 1000 else 3)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def table(results: list[Result]) -> str:
    lines = [
        f"{'backend':<10}{'case':<28}{'adds':>6}{'seconds':>9}{'adds/s':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}"
    ]
    for r in results:
        name = r.backend if r.backend == "file" else f"etcd x{r.members}"
        cases = (
            ("adds, one node", r.single_adds, r.single_seconds, r.single_latency_ms),
            ("adds, three nodes at once", r.parallel_adds, r.parallel_seconds,
             r.parallel_latency_ms),
        )  # fmt: skip
        for case, count, seconds, lat in cases:
            lines.append(
                f"{name:<10}{case:<28}{count:>6}{seconds:>9.2f}{count / seconds:>8.1f}"
                f"{percentile(lat, 0.5):>8.1f}{percentile(lat, 0.99):>8.1f}"
            )
    lines.append("")
    lines.append(f"{'backend':<10}{'join: on every peer list':<28}{'after answer s':>16}"
                 f"{'after start s':>15}")  # fmt: skip
    for r in results:
        name = r.backend if r.backend == "file" else f"etcd x{r.members}"
        for answer, start in zip(r.join_from_answer_s, r.join_from_start_s, strict=True):
            lines.append(f"{name:<10}{'':<28}{answer:>16.2f}{start:>15.2f}")
        if len(r.join_from_answer_s) > 1:
            lines.append(
                f"{name:<10}{'median':<28}{statistics.median(r.join_from_answer_s):>16.2f}"
                f"{statistics.median(r.join_from_start_s):>15.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 adds per node, one join")
    parser.add_argument("--adds", type=int, help="workloads per node and case (default 100)")
    parser.add_argument("--joins", type=int, help="nodes joining, one after another (default 3)")
    parser.add_argument("--members", type=int, default=3, help="etcd members (default 3)")
    parser.add_argument("--backends", default="file,etcd", help="default file,etcd")
    parser.add_argument("--json", type=Path, help="also write the raw numbers to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    adds = args.adds or (20 if args.quick else 100)
    joins = args.joins or (1 if args.quick else 3)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= {"file", "etcd"} or not backends:
        parser.error("--backends takes file and/or etcd")
    if adds < 1 or joins < 0 or not 1 <= args.members <= 5:
        parser.error("--adds >= 1, --joins >= 0 and --members 1..5")
    if "etcd" in backends and not os.access(ETCD, os.X_OK):
        parser.error(f"etcd backend: no etcd binary at {ETCD} (Debian: etcd-server)")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="l3fds"))
    lab = Lab(f"ds{os.getpid() % 100000}", workdir)
    results: list[Result] = []
    log(f"work directory {workdir}")
    try:
        for backend in backends:
            results.append(run_backend(lab, backend, args.members, adds, joins))
            lab.close()
    finally:
        lab.close()
        raw = [rounded(asdict(r)) for r in results]
        if args.json:
            args.json.write_text(json.dumps(raw, indent=2))
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{adds} adds per node and case, {joins} joins; {os.cpu_count()} CPUs; "
          f"kernel {os.uname().release}")  # fmt: skip
    print(table(results))
    print("raw: " + json.dumps(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
