#!/usr/bin/env python3
"""Convergence: l3fabric (agent + ExaBGP) against a Calico-style BIRD 2 baseline.

Run as root (see bench/README.md). Two nodes, a and b, in namespaces on one
bridge; a workload wb on b. Both systems get the same underlay, the same
workload wiring code and the same clocks:

1. One workload: for --iterations adds on a, the clock starts when the add
   returns (l3fabric: the control API call `workload.add`; baseline: the
   bench wires the veth, addresses and /32 proto 76 route itself, as felix
   would, through l3fabric's NetlinkDataplane). It stops at the first echo
   reply that wb receives from the new workload (1 ms ICMP probing from a raw
   socket inside wb), and, second number, when the /32 appears in b's kernel
   (netlink notification).
2. Bulk: a holds N workload routes (l3fabric: N real workloads, each in its
   own namespace, added through the control API; baseline: N /32 proto 76
   routes added to a's kernel with `ip -batch`). b's speaker is stopped, its
   learned routes are deleted, and it is started again; the clock runs from
   that start, and separately from the first moment b reports the session to
   a Established (polled every 10 ms), until b's kernel holds every prefix a
   announces. Repeated --repeats times per case.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from bench.fabric import (
    NODE_V4,
    RTPROT_BIRD,
    BirdNode,
    Felix,
    Lab,
    agent_nodes,
    bird_nodes,
    delete_routes_with_gateway,
    launch_agent,
    launch_bird,
    make_underlay,
    prewire_workloads,
    sh,
    start_agent,
    start_bird,
    stop_agent,
    stop_bird,
    wait_until,
)
from bench.probes import (
    BgpWireClock,
    IcmpProber,
    Prefix,
    RouteRecorder,
    RouteWatcher,
    dump_prefixes,
    prefix_of,
)
from l3fabric.model import RTPROT_L3FABRIC

PROBE_TIMEOUT = 10.0
BULK_TIMEOUT = 300.0
LOADED_ITERATIONS = 10
ESTABLISH_TIMEOUT = 90.0
TARGET_P50_MS, TARGET_P99_MS = 15.0, 60.0
TARGET_BULK_10K_S, TARGET_BLOCKS_10K_S = 3.0, 0.5
BASELINE_WB = "100.64.255.1"
BASELINE_BULK_BASE = int(ipaddress.IPv4Address("100.64.64.0"))


@dataclass
class LatencySample:
    add_ms: float  # how long the add call itself took
    reply_ms: float | None  # add returned -> first echo reply in wb
    route_ms: float | None  # add returned -> /32 in b's kernel


@dataclass
class BulkSample:
    from_start_s: float | None
    from_established_s: float | None
    established_after_s: float | None  # speaker start -> Established (on the wire)
    first_update_after_established_s: float | None  # Established -> a's first UPDATE at b
    first_route_after_established_s: float | None  # Established -> first route in b's kernel


@dataclass
class SystemResults:
    name: str
    latency: list[LatencySample] = field(default_factory=list)
    bulk: dict[str, list[BulkSample]] = field(default_factory=dict)  # "workloads/10000"
    latency_loaded: list[LatencySample] = field(default_factory=list)  # adds with N on a
    setup: dict[str, float] = field(default_factory=dict)  # what setup took, seconds


def log(message: str, *args: object) -> None:
    print(time.strftime("%H:%M:%S ") + (message % args if args else message), file=sys.stderr)


# -- one workload ------------------------------------------------------------------


def measure_latency(
    lab: Lab,
    iterations: int,
    wb_path: str,
    b_path: str,
    protocol_on_b: int,
    add: Callable[[int, str], str],
    tag: str,
) -> list[LatencySample]:
    """`add(i, netns_name)` wires workload i on a and returns its IPv4 address.
    The first iteration warms up caches and is not counted."""
    prober = IcmpProber(wb_path)
    recorder = RouteRecorder(b_path, protocol_on_b)
    samples: list[LatencySample] = []
    prober.open()
    recorder.start()
    try:
        for i in range(iterations + 1):
            ns = lab.netns(f"{tag}{i}")
            called = time.monotonic()
            address = add(i, ns)
            returned = time.monotonic()
            result = prober.probe(address, PROBE_TIMEOUT)
            route_at = recorder.added.get(prefix_of(f"{address}/32"))
            if route_at is None:  # in flight while the reply came back
                time.sleep(0.05)
                route_at = recorder.added.get(prefix_of(f"{address}/32"))
            sample = LatencySample(
                (returned - called) * 1000,
                (result.reply_at - returned) * 1000 if result.reply_at else None,
                (route_at - returned) * 1000 if route_at else None,
            )
            if result.reply_at is None:
                log("%s: no reply from %s within %.0fs", tag, address, PROBE_TIMEOUT)
            if i > 0:
                samples.append(sample)
        if recorder.overrun:
            log("%s: route notifications were dropped; some route times are missing", tag)
    finally:
        prober.close()
        recorder.stop()
    return samples


# -- bulk --------------------------------------------------------------------------------


def measure_bulk_once(
    restart: Callable[[], subprocess.Popen[bytes]],
    b_path: str,
    protocol_on_b: int,
    expected: set[Prefix],
) -> BulkSample:
    """`restart` starts b's speaker without waiting for it; b's learned routes
    must be gone before. Established is read off the wire (BgpWireClock)."""
    watcher = RouteWatcher(b_path, protocol_on_b)
    wire = BgpWireClock(b_path, "eth1", NODE_V4[0])
    readers: list[RouteWatcher | BgpWireClock] = [watcher, wire]
    watcher.open()
    wire.open()
    try:
        leftover = expected & watcher.present
        if leftover:
            raise RuntimeError(f"{len(leftover)} expected routes already on b before the start")
        started = time.monotonic()
        speaker = restart()
        deadline = started + BULK_TIMEOUT
        done: float | None = None
        while done is None:
            wire.drain()
            watcher.drain(expected)
            if expected <= watcher.present:
                done = time.monotonic()
            elif speaker.poll() is not None:
                raise RuntimeError(f"b's speaker exited with {speaker.returncode} during the run")
            elif time.monotonic() > deadline:
                missing = len(expected - watcher.present)
                raise RuntimeError(f"{missing} of {len(expected)} routes missing on b at the end")
            else:
                select.select(readers, [], [], 0.5)
        check = dump_prefixes(b_path, protocol_on_b)
        if not expected <= check:
            raise RuntimeError(f"dump disagrees: {len(expected - check)} routes missing on b")
        est = wire.established_at
        first = watcher.first_seen
        return BulkSample(
            done - started,
            done - est if est else None,
            est - started if est else None,
            wire.first_update_at - est if wire.first_update_at and est else None,
            first - est if first and est else None,
        )
    finally:
        watcher.close()
        wire.close()


# -- l3fabric ------------------------------------------------------------------------------


def run_l3fabric(lab: Lab, iterations: int, sizes: list[int], repeats: int) -> SystemResults:
    results = SystemResults("l3fabric")
    under = make_underlay(lab, "l")
    a, b = agent_nodes(lab, under)
    started = time.monotonic()
    start_agent(lab, a, "workloads")
    start_agent(lab, b, "workloads")
    wait_until(
        lambda: a.v4_peer_state() == "Established" and b.v4_peer_state() == "Established",
        ESTABLISH_TIMEOUT,
        "l3fabric sessions Established",
        interval=0.05,
    )
    results.setup["agents_up_s"] = time.monotonic() - started
    wb = lab.netns("lwb")
    wb_path = f"/run/netns/{wb}"
    wb_address = str(b.call("workload.add", {"name": "wb", "netns": wb})["addresses"][0])
    wait_until(
        lambda: prefix_of(f"{wb_address}/32") in dump_prefixes(under.path_a, RTPROT_L3FABRIC),
        30,
        "wb's route on a",
    )

    def add(i: int, ns: str) -> str:
        workload = a.call("workload.add", {"name": f"{ns}", "netns": ns})
        return str(workload["addresses"][0])

    log("l3fabric: %d single adds", iterations)
    results.latency = measure_latency(
        lab, iterations, wb_path, under.path_b, RTPROT_L3FABRIC, add, "lw"
    )
    for i in range(iterations + 1):
        a.call("workload.del", {"name": f"{lab.tag}lw{i}"})
    lab.delete_netns([f"{lab.tag}lw{i}" for i in range(iterations + 1)])

    mode = "workloads"
    have = 0
    for size in sorted(sizes):
        log("l3fabric: prewiring workloads %d..%d on a (agent stopped)", have, size - 1)
        stop_agent(lab, a)
        t0 = time.monotonic()
        names = [f"lk{i}" for i in range(have, size)]
        lab.netns_many(names)
        prewire_workloads(lab, a, names)
        results.setup[f"prewire_{have}_{size}_s"] = time.monotonic() - t0
        have = size
        for index, wanted_mode in enumerate(("workloads", "blocks")):
            if index > 0 or a.proc is None:
                stop_agent(lab, a)
                t0 = time.monotonic()
                start_agent(lab, a, wanted_mode, timeout=600)
                wait_until(lambda: a.call("status")["last_reconcile"], 600, "a's first reconcile")
                results.setup[f"a_start_{wanted_mode}_{size}_s"] = time.monotonic() - t0
                last = a.call("status")["last_reconcile"]
                results.setup[f"a_reconcile_{wanted_mode}_{size}_s"] = float(last["seconds"])
                repaired = last.get("repaired")
                if repaired:
                    log("l3fabric: a's start-up reconcile repaired %s", repaired)
                mode = wanted_mode
            advertised = a.call("routes", {"view": "advertised"})["routes"]
            expected = {prefix_of(r["prefix"]) for r in advertised if ":" not in r["prefix"]}
            log("l3fabric: bulk %s mode, %d workloads, %d prefixes", mode, size, len(expected))
            key = f"{mode}/{size}"
            results.bulk[key] = []
            for _ in range(repeats):
                stop_agent(lab, b)
                delete_routes_with_gateway(b.netns, RTPROT_L3FABRIC)
                sample = measure_bulk_once(
                    lambda: launch_agent(lab, b, "workloads"),
                    under.path_b,
                    RTPROT_L3FABRIC,
                    expected,
                )
                log("  %s", sample)
                results.bulk[key].append(sample)
    if sizes and mode == "blocks":
        stop_agent(lab, a)
        start_agent(lab, a, "workloads", timeout=600)
    if sizes:
        wait_until(lambda: b.v4_peer_state() == "Established", ESTABLISH_TIMEOUT, "b back up")
        wait_until(lambda: a.v4_peer_state() == "Established", ESTABLISH_TIMEOUT, "a back up")
        log("l3fabric: single adds with %d workloads on a", have)
        results.latency_loaded = measure_latency(
            lab, LOADED_ITERATIONS, wb_path, under.path_b, RTPROT_L3FABRIC, add, "lx"
        )
    return results


# -- BIRD baseline ---------------------------------------------------------------------------


def run_bird(lab: Lab, iterations: int, sizes: list[int], repeats: int) -> SystemResults:
    results = SystemResults("bird")
    under = make_underlay(lab, "b")
    felix_a = Felix(lab, under.node_a, "birda")
    felix_b = Felix(lab, under.node_b, "birdb")
    a, b = bird_nodes(lab, under)
    started = time.monotonic()
    start_bird(lab, a)
    start_bird(lab, b)
    wait_until(
        lambda: a.established() and b.established(),
        ESTABLISH_TIMEOUT,
        "BIRD sessions Established",
        interval=0.05,
    )
    results.setup["birds_up_s"] = time.monotonic() - started
    wb = lab.netns("bwb")
    felix_b.attach("wb", f"/run/netns/{wb}", BASELINE_WB)
    wait_until(
        lambda: prefix_of(f"{BASELINE_WB}/32") in dump_prefixes(under.path_a, RTPROT_BIRD),
        30,
        "wb's route on a",
    )
    base = int(ipaddress.IPv4Address("100.64.1.0"))

    def add(i: int, ns: str) -> str:
        address = str(ipaddress.IPv4Address(base + i))
        felix_a.attach(ns, f"/run/netns/{ns}", address)
        return address

    log("bird: %d single adds", iterations)
    results.latency = measure_latency(
        lab, iterations, f"/run/netns/{wb}", under.path_b, RTPROT_BIRD, add, "bw"
    )
    _bird_bulk(lab, under.node_a, a, b, sizes, repeats, results)
    return results


def _bird_bulk(
    lab: Lab,
    node_a: str,
    a: BirdNode,
    b: BirdNode,
    sizes: list[int],
    repeats: int,
    results: SystemResults,
) -> None:
    sh("ip", "-n", node_a, "link", "add", "blk0", "type", "veth", "peer", "name", "blk1")
    sh("ip", "-n", node_a, "link", "set", "blk0", "up")
    sh("ip", "-n", node_a, "link", "set", "blk1", "up")
    path_a, path_b = f"/run/netns/{node_a}", f"/run/netns/{b.netns}"
    have = 0
    for size in sorted(sizes):
        lines = "".join(
            f"route add {ipaddress.IPv4Address(BASELINE_BULK_BASE + i)}/32 dev blk0 "
            f"proto {RTPROT_L3FABRIC} scope link\n"
            for i in range(have, size)
        )
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as handle:
            handle.write(lines)
            handle.flush()
            sh("ip", "-n", node_a, "-batch", handle.name)
        have = size
        # Every workload route on a: the bulk ones and the single adds'.
        expected = dump_prefixes(path_a, RTPROT_L3FABRIC)
        # b is up: wait until a's BIRD has learned and sent all of them.
        watcher = RouteWatcher(path_b, RTPROT_BIRD)
        watcher.open()
        try:
            if watcher.wait_all(expected, BULK_TIMEOUT) is None:
                raise RuntimeError("BIRD on b never got a's routes")
        finally:
            watcher.close()
        log("bird: bulk %d routes", len(expected))
        key = f"workloads/{size}"
        results.bulk[key] = []
        for _ in range(repeats):
            stop_bird(lab, b)
            delete_routes_with_gateway(b.netns, RTPROT_BIRD)
            sample = measure_bulk_once(lambda: launch_bird(lab, b), path_b, RTPROT_BIRD, expected)
            log("  %s", sample)
            results.bulk[key].append(sample)


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _latency_cells(samples: list[LatencySample], attr: str) -> tuple[str, str, str]:
    values = [getattr(s, attr) for s in samples]
    got = [v for v in values if v is not None]
    lost = len(values) - len(got)
    if not got:
        return "-", "-", f"{lost} lost" if lost else ""
    note = f" ({lost} lost)" if lost else ""
    return f"{percentile(got, 50):.1f}", f"{percentile(got, 99):.1f}", note


def _bulk_cell(samples: list[BulkSample] | None, attr: str) -> str:
    if not samples:
        return "-"
    values = [v for v in (getattr(s, attr) for s in samples) if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def table(systems: dict[str, SystemResults], sizes: list[int]) -> str:
    l3f, bird = systems.get("l3fabric"), systems.get("bird")
    rows: list[tuple[str, str, str, str]] = []
    for attr, what in (("reply_ms", "add -> ping reply"), ("route_ms", "add -> route on b")):
        cells = {
            name: _latency_cells(s.latency, attr) if s.latency else ("-", "-", "")
            for name, s in systems.items()
        }
        l3 = cells.get("l3fabric", ("-", "-", ""))
        bd = cells.get("bird", ("-", "-", ""))
        target_50 = f"<= {TARGET_P50_MS:.0f}" if attr == "reply_ms" else ""
        target_99 = f"<= {TARGET_P99_MS:.0f}" if attr == "reply_ms" else ""
        rows.append((f"{what} p50 ms", l3[0] + l3[2], bd[0] + bd[2], target_50))
        rows.append((f"{what} p99 ms", l3[1], bd[1], target_99))
    if l3f and l3f.latency_loaded:
        loaded = _latency_cells(l3f.latency_loaded, "reply_ms")
        n = max(sizes)
        rows.append((f"add -> ping reply p50 ms, {n} on a", loaded[0] + loaded[2], "-", ""))
        add_ms = [x.add_ms for x in l3f.latency_loaded]
        rows.append((f"add call itself p50 ms, {n} on a", f"{percentile(add_ms, 50):.1f}", "-", ""))
    add_cells = [
        f"{percentile([x.add_ms for x in s.latency], 50):.1f}" if s and s.latency else "-"
        for s in (l3f, bird)
    ]
    rows.append(("add call itself p50 ms", add_cells[0], add_cells[1], ""))
    for size in sorted(sizes):
        for attr, label in (
            ("from_established_s", "from Established"),
            ("from_start_s", "from speaker start"),
            ("established_after_s", "start to Established"),
            ("first_update_after_established_s", "Established to 1st UPDATE"),
        ):
            target = ""
            if size == 10_000 and attr == "from_established_s":
                target = f"<= {TARGET_BULK_10K_S:.0f}, < baseline"
            rows.append(
                (
                    f"bulk {size} per-workload, {label} s",
                    _bulk_cell(l3f.bulk.get(f"workloads/{size}") if l3f else None, attr),
                    _bulk_cell(bird.bulk.get(f"workloads/{size}") if bird else None, attr),
                    target,
                )
            )
        for attr, label in (
            ("from_established_s", "from Established"),
            ("from_start_s", "from speaker start"),
        ):
            target = ""
            if size == 10_000 and attr == "from_established_s":
                target = f"<= {TARGET_BLOCKS_10K_S}"
            rows.append(
                (
                    f"bulk {size} blocks, {label} s",
                    _bulk_cell(l3f.bulk.get(f"blocks/{size}") if l3f else None, attr),
                    "n/a",
                    target,
                )
            )
    head = ("measure", "l3fabric", "BIRD baseline", "target")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    lines.append("bulk cells: median [min-max] over the repeats")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 iterations, bulk 1000, 1 repeat")
    parser.add_argument("--iterations", type=int, help="single adds per system (default 50)")
    parser.add_argument("--bulk", help="comma-separated bulk sizes (default 1000,10000)")
    parser.add_argument("--repeats", type=int, help="bulk runs per case (default 3)")
    parser.add_argument("--skip-baseline", action="store_true", help="l3fabric only")
    parser.add_argument("--skip-l3fabric", action="store_true", help="BIRD baseline only")
    parser.add_argument("--json", type=Path, help="also write the raw samples to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    iterations = args.iterations or (10 if args.quick else 50)
    repeats = args.repeats or (1 if args.quick else 3)
    bulk = args.bulk or ("1000" if args.quick else "1000,10000")
    try:
        sizes = sorted({int(s) for s in bulk.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--bulk must be comma-separated integers, got {bulk!r}")
    if any(s < 1 or s > 16_000 for s in sizes):
        parser.error("--bulk sizes must be within 1..16000 (the pool is one /16 of /26 blocks)")
    if iterations < 1 or repeats < 1:
        parser.error("--iterations and --repeats must be at least 1")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The route recorder thread must get the GIL soon after its netlink read.
    sys.setswitchinterval(0.0005)
    workdir = Path(tempfile.mkdtemp(prefix="l3fconv"))
    lab = Lab(f"cv{os.getpid() % 100000}", workdir)
    systems: dict[str, SystemResults] = {}
    log("work directory %s", workdir)
    try:
        if not args.skip_l3fabric:
            systems["l3fabric"] = run_l3fabric(lab, iterations, sizes, repeats)
            lab.close()
        if not args.skip_baseline:
            systems["bird"] = run_bird(lab, iterations, sizes, repeats)
    finally:
        lab.close()
        if args.json:
            args.json.write_text(json.dumps({k: asdict(v) for k, v in systems.items()}, indent=2))
        if not args.keep_logs:
            sh("rm", "-rf", str(workdir))
    print(f"{iterations} single adds, {repeats} bulk repeats; kernel {os.uname().release}")
    print(table(systems, sizes))
    for name, result in systems.items():
        print(f"{name} setup: " + ", ".join(f"{k}={v:.1f}" for k, v in result.setup.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
