"""Idle cost: the CPU seconds a node's routing spends over a quiet window while
it holds N local workload routes and N routes learned from a peer, and its
RSS. l3fabric (agent + ExaBGP + bridge, read from /proc/PID/stat of the
agent's process tree) against a BIRD 2 node speaker holding the same, each
on its own copy of the lab, both up for the whole run, windows alternating.

The node is b. Its N local workloads are prewired as in bench/convergence.py
(IPAM, records, host veths, /32 proto 76 routes; the agent starts on them);
for BIRD they are N /32 proto 76 routes on a dummy veth, which is all BIRD
sees of workloads. The N learned routes come from a BIRD feeder in node a's
namespace (see bench/learned.py). The windows start once one of the
agent's reconcile passes has found nothing changed (the steady state of a
quiet node); the pass after the routes arrived reads the whole kernel, and
its time is logged.

    .venv/bin/python -m bench.idle [--quick] [--routes N] [--window S] [--repeats R] [--json FILE]

Namespaces are named id<pid>...; they and every process started here are
removed at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import procstat
from bench.fabric import (
    ASN,
    NODE_V4,
    RTPROT_BIRD,
    BirdNode,
    Lab,
    make_underlay,
    prewire_workloads,
    sh,
    start_agent,
    start_bird,
    wait_until,
    wire_insides,
)
from bench.learned import (
    FEEDER_ASN,
    FedAgent,
    System,
    birdc,
    feed_prefixes,
    log,
    make_feeder,
)
from bench.probes import RouteWatcher, prefix_of
from bench.runner import Figure, Target, figure_row, write_figures
from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRole, render
from l3fabric.model import RTPROT_L3FABRIC

TARGET_CORE_SHARE = 0.01  # of one core, agent + ExaBGP + bridge together
SETTLE_S = 5.0  # after the last route arrived: start-up work and the burst are over
LOCAL_BASE = int(ipaddress.IPv4Address("100.64.64.0"))


def learn(system: System, n: int) -> None:
    wanted = {prefix_of(p) for p in feed_prefixes(n)}
    watcher = RouteWatcher(system.node_path, system.protocol)
    watcher.open()
    try:
        birdc(system.feeder, "enable", "feed")
        if watcher.wait_all(wanted, 600) is None:
            raise RuntimeError(f"{system.name}: the learned routes never all arrived")
    finally:
        watcher.close()


def build_l3fabric(lab: Lab, n: int) -> System:
    under = make_underlay(lab, "l")
    state = lab.workdir / "nodeb"
    state.mkdir()
    node = FedAgent("nodeb", under.node_b, 1, state, lab.workdir / "store", lab.workdir / "b.log")
    names = [f"w{i}" for i in range(n)]
    log(f"l3fabric: prewiring {n} workloads on b")
    lab.netns_many(names)
    workloads = prewire_workloads(lab, node, names)
    log(f"l3fabric: wiring the inside of {n} workloads as the agent does")
    wire_insides(node, workloads)
    log("l3fabric: starting b's agent on them")
    start_agent(lab, node, "workloads", timeout=600)
    wait_until(lambda: node.call("status")["last_reconcile"], 600, "b's first reconcile", 0.2)
    log("l3fabric: b's first reconcile done; feeding it")
    feeder = make_feeder(lab, under.node_a, "l", feed_prefixes(n))
    wait_until(lambda: node.v4_peer_state() == "Established", 90, "the agent's session", 0.1)

    def pid() -> int:
        assert node.proc is not None
        return node.proc.pid

    system = System("l3fabric", under.path_b, RTPROT_L3FABRIC, feeder, pid)
    learn(system, n)
    log(f"l3fabric: b holds {n} learned routes")
    # Idle is the steady state: the first reconcile pass after the routes
    # arrived reads the kernel they changed (its cost is that of any pass
    # after a change, reported here); the windows start once a pass has
    # found nothing changed.
    full: list[float] = []

    def quiet_pass() -> bool:
        last = node.call("status")["last_reconcile"]
        if last.get("read_because"):
            if last["at"] not in full:
                full.append(last["at"])
                log(f"l3fabric: a pass read the kernel ({', '.join(last['read_because'])}) "
                    f"in {last['seconds']:.2f} s")  # fmt: skip
            return False
        return True

    wait_until(quiet_pass, 300, "a reconcile pass that finds nothing changed", 1.0)
    log("l3fabric: a reconcile pass found nothing changed")
    return system


def build_bird(lab: Lab, n: int) -> System:
    under = make_underlay(lab, "b")
    ns = under.node_b
    sh("ip", "-n", ns, "link", "add", "blk0", "type", "veth", "peer", "name", "blk1")
    sh("ip", "-n", ns, "link", "set", "blk0", "up")
    sh("ip", "-n", ns, "link", "set", "blk1", "up")
    batch = lab.workdir / "local.batch"
    batch.write_text(
        "".join(
            f"route add {ipaddress.IPv4Address(LOCAL_BASE + i)}/32 dev blk0 "
            f"proto {RTPROT_L3FABRIC} scope link\n"
            for i in range(n)
        )
    )
    sh("ip", "-n", ns, "-batch", str(batch))
    peer = BirdPeer(name="feeder", address=ipaddress.IPv4Address(NODE_V4[0]), asn=FEEDER_ASN)
    cfg = BirdConfig(BirdRole.NODE, ipaddress.IPv4Address(NODE_V4[1]), ASN, peers=(peer,))
    conf = lab.workdir / "birdb.conf"
    conf.write_text(render(cfg))
    node = BirdNode("birdb", ns, 1, conf, lab.workdir / "birdb.ctl", lab.workdir / "birdb.log")
    start_bird(lab, node)
    feeder = make_feeder(lab, under.node_a, "b", feed_prefixes(n))
    wait_until(node.established, 90, "BIRD's session to the feeder", 0.1)

    def pid() -> int:
        assert node.proc is not None
        return node.proc.pid

    system = System("BIRD 2 node speaker", under.path_b, RTPROT_BIRD, feeder, pid)
    learn(system, n)
    return system


def window(system: System, seconds: float) -> dict[str, float]:
    before = procstat.snapshot([system.root_pid()])
    time.sleep(seconds)  # the measurement: the node left alone
    spent = procstat.cpu_by_role(before, procstat.snapshot([system.root_pid()]))
    out = {"cpu_s": sum(spent.values())} | {f"cpu_s_{k}": v for k, v in spent.items()}
    rss = procstat.rss_by_role([system.root_pid()])
    return out | {"rss_mb": sum(rss.values())} | {f"rss_mb_{k}": v for k, v in rss.items()}


def _parts(samples: dict[str, list[float]], prefix: str, unit: str) -> str:
    keys = sorted(k for k in samples if k.startswith(prefix + "_"))
    return ", ".join(
        f"{k[len(prefix) + 1 :]} {statistics.median(samples[k]):.2f} {unit}" for k in keys
    )


def figures(systems: list[System], n: int, seconds: float) -> list[Figure]:
    ours, theirs = systems[0].samples["idle"], systems[1].samples["idle"]
    cpu, rss = "cpu_s", "rss_mb"
    share = statistics.median(ours[cpu]) / seconds
    return [
        Figure(
            f"idle with {n} local + {n} learned routes, CPU over {seconds:g} s",
            "CPU s",
            statistics.median(ours[cpu]),
            statistics.median(theirs[cpu]),
            systems[1].name,
            Target("<=", round(TARGET_CORE_SHARE * seconds, 3)),
            tuple(ours[cpu]),
            tuple(theirs[cpu]),
            f"median of {len(ours[cpu])}",
            f"{share:.1%} of a core (target 1%); {_parts(ours, cpu, 's')}",
        ),
        Figure(
            f"idle with {n} local + {n} learned routes, RSS",
            "MB",
            statistics.median(ours[rss]),
            statistics.median(theirs[rss]),
            systems[1].name,
            None,
            tuple(ours[rss]),
            tuple(theirs[rss]),
            f"median of {len(ours[rss])}",
            _parts(ours, rss, "MB"),
        ),
    ]


def run(lab: Lab, n: int, seconds: float, repeats: int) -> tuple[list[Figure], dict[str, Any]]:
    systems = [build_l3fabric(lab, n), build_bird(lab, n)]
    log(f"both nodes hold {n} local + {n} learned routes; settling {SETTLE_S:g} s")
    time.sleep(SETTLE_S)
    for rep in range(repeats):
        for system in systems if rep % 2 == 0 else systems[::-1]:
            sample = window(system, seconds)
            for k, v in sample.items():
                system.samples.setdefault("idle", {}).setdefault(k, []).append(v)
            log(f"{system.name}: {sample['cpu_s']:.2f} CPU s over {seconds:g} s, "
                f"RSS {sample['rss_mb']:.0f} MB")  # fmt: skip
    return figures(systems, n, seconds), {s.name: s.samples for s in systems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 routes, 10 s, 1 window (CI)")
    parser.add_argument("--routes", type=int, help="local and learned routes each (default 10000)")
    parser.add_argument("--window", type=float, help="seconds per window (default 60)")
    parser.add_argument("--repeats", type=int, help="windows per system (default 2)")
    parser.add_argument("--json", type=Path, help="write figures and samples to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    n = args.routes or (200 if args.quick else 10_000)
    seconds = args.window or (10.0 if args.quick else 60.0)
    repeats = args.repeats or (1 if args.quick else 2)
    if not 1 <= n <= 16_000 or seconds <= 0 or repeats < 1:
        parser.error(
            "--routes within 1..16000 (one /16 of /26 blocks), --window > 0, --repeats >= 1"
        )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="l3fidle"))
    lab = Lab(f"id{os.getpid() % 100000}", workdir)
    try:
        found, raw = run(lab, n, seconds, repeats)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.close()
        sh("rm", "-rf", str(workdir))
    for figure in found:
        print(" | ".join(figure_row(figure)))
        print(f"  {figure.note}")
    if args.json:
        write_figures(args.json, found, raw, f"{repeats} windows of {seconds:g} s per system")
    return 0


if __name__ == "__main__":
    sys.exit(main())
