"""Data plane: TCP throughput (iperf3) and ping RTT between a workload on node
a and one on node b, over three paths built side by side in one run:

  l3fabric  the agents (ExaBGP, per-workload /32 routes learned over BGP)
  plain     the same workload wiring (l3fabric's NetlinkDataplane.attach, run
            by bench/felix.py) with one static route per node: the limit
  vxlan     the same wiring, the workload routes through a VXLAN device
            between the nodes, the workloads' MTU lowered by its 50 bytes
            (as flannel and Calico's VXLAN mode do): the encapsulating
            alternative

Runs are interleaved (l3fabric, plain, vxlan, then the next order), so the
shared machine's noise hits every path alike; figures are medians over the
runs. Run as root from the root of a checkout:

    .venv/bin/python -m bench.dataplane [--quick] [--runs N] [--seconds S] [--json FILE]

Namespaces are named dp<pid>...; they and every process started here are
removed at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench.fabric import (
    NODE_V4,
    Felix,
    Lab,
    Underlay,
    agent_nodes,
    make_underlay,
    sh,
    start_agent,
    wait_until,
)
from bench.runner import Figure, Target, figure_row, write_figures

VXLAN_OVERHEAD = 50
PORT = 5201


@dataclass(frozen=True)
class Path_:
    name: str
    client_ns: str
    server_ns: str
    server_address: str
    mtu: int


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


def workload_mtu(netns: str) -> int:
    out = json.loads(sh("ip", "-n", netns, "-j", "link", "show", "eth0"))
    return int(out[0]["mtu"])


def ping_ok(netns: str, address: str) -> bool:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", address],
        capture_output=True,
    )
    return proc.returncode == 0


def build_l3fabric(lab: Lab) -> Path_:
    under = make_underlay(lab, "l")
    a, b = agent_nodes(lab, under)
    start_agent(lab, a, "workloads")
    start_agent(lab, b, "workloads")
    wa, wb = lab.netns("lwa"), lab.netns("lwb")
    a.call("workload.add", {"name": "wa", "netns": wa})
    added = b.call("workload.add", {"name": "wb", "netns": wb})
    server = str(added["addresses"][0])
    wait_until(lambda: ping_ok(wa, server), 60, "l3fabric workloads to reach each other", 0.2)
    return Path_("l3fabric", wa, wb, server, workload_mtu(wa))


def _felix_pair(lab: Lab, under: Underlay, tag: str, third: int) -> tuple[str, str, str, str]:
    """Workloads wa on a and wb on b, wired by the felix stand-in; addresses
    100.64.THIRD.1 and 100.64.THIRD+1.1."""
    felix_a = Felix(lab, under.node_a, f"{tag}a")
    felix_b = Felix(lab, under.node_b, f"{tag}b")
    wa, wb = lab.netns(f"{tag}wa"), lab.netns(f"{tag}wb")
    addr_a, addr_b = f"100.64.{third}.1", f"100.64.{third + 1}.1"
    felix_a.attach("wa", f"/run/netns/{wa}", addr_a)
    felix_b.attach("wb", f"/run/netns/{wb}", addr_b)
    return wa, wb, addr_a, addr_b


def build_plain(lab: Lab) -> Path_:
    under = make_underlay(lab, "p")
    wa, wb, addr_a, addr_b = _felix_pair(lab, under, "p", 201)
    sh("ip", "-n", under.node_a, "route", "add", f"{addr_b}/32", "via", NODE_V4[1])
    sh("ip", "-n", under.node_b, "route", "add", f"{addr_a}/32", "via", NODE_V4[0])
    wait_until(lambda: ping_ok(wa, addr_b), 30, "plain workloads to reach each other", 0.2)
    return Path_("plain routed veth", wa, wb, addr_b, workload_mtu(wa))


def build_vxlan(lab: Lab) -> Path_:
    under = make_underlay(lab, "v")
    wa, wb, addr_a, addr_b = _felix_pair(lab, under, "v", 203)
    for i, (node, remote_workload) in enumerate(((under.node_a, addr_b), (under.node_b, addr_a))):
        local, remote = NODE_V4[i], NODE_V4[1 - i]
        sh("ip", "-n", node, "link", "add", "vx0", "type", "vxlan", "id", "42",
           "local", local, "remote", remote, "dstport", "4789", "dev", "eth1")  # fmt: skip
        sh("ip", "-n", node, "addr", "add", f"100.64.250.{i + 1}/24", "dev", "vx0")
        sh("ip", "-n", node, "link", "set", "vx0", "up")
        sh("ip", "-n", node, "route", "add", f"{remote_workload}/32",
           "via", f"100.64.250.{2 - i}", "dev", "vx0")  # fmt: skip
    underlay_mtu = int(
        json.loads(sh("ip", "-n", under.node_a, "-j", "link", "show", "eth1"))[0]["mtu"]
    )
    for ns in (wa, wb):
        sh("ip", "-n", ns, "link", "set", "eth0", "mtu", str(underlay_mtu - VXLAN_OVERHEAD))
    wait_until(lambda: ping_ok(wa, addr_b), 30, "VXLAN workloads to reach each other", 0.2)
    return Path_("VXLAN overlay", wa, wb, addr_b, workload_mtu(wa))


def start_server(lab: Lab, path: Path_) -> None:
    lab.start(["iperf3", "-s", "-B", path.server_address, "-p", str(PORT)],
              path.server_ns, lab.workdir / f"iperf-{path.server_ns}.log")  # fmt: skip

    def listening() -> bool:
        out = sh("ip", "netns", "exec", path.server_ns, "ss", "-Hltn", f"sport = :{PORT}")
        return bool(out.strip())

    wait_until(listening, 20, f"iperf3 server in {path.server_ns}", 0.05)


def tcp_gbits(path: Path_, seconds: int, omit: int) -> float:
    cmd = ["ip", "netns", "exec", path.client_ns, "iperf3", "-c", path.server_address,
           "-p", str(PORT), "-t", str(seconds), "-O", str(omit), "-J"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + omit + 60)
    report = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "error" in report:
        raise RuntimeError(f"iperf3 over {path.name}: {report.get('error', proc.stderr.strip())}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def rtt_ms(path: Path_, count: int) -> float:
    """Mean RTT of `count` pings 10 ms apart (ping's own summary line)."""
    cmd = ["ip", "netns", "exec", path.client_ns, "ping", "-q", "-c", str(count), "-i", "0.01",
           path.server_address]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"= [\d.]+/([\d.]+)/", out)
    if not found or f"{count} received" not in out:
        raise RuntimeError(f"ping over {path.name}: {out.strip()[-200:]}")
    return float(found.group(1))


def figures(
    paths: list[Path_], tcp: dict[str, list[float]], rtt: dict[str, list[float]]
) -> list[Figure]:
    l3f, plain, vxlan = (p.name for p in paths)
    mtus = ", ".join(f"{p.name} {p.mtu}" for p in paths)
    out = []
    for base, target in ((plain, Target(">=", 0.97, "ratio")), (vxlan, Target(">=", 1.0, "ratio"))):
        out.append(
            Figure(
                f"TCP a -> b, l3fabric vs {base}",
                "Gbit/s",
                statistics.median(tcp[l3f]),
                statistics.median(tcp[base]),
                base,
                target,
                tuple(tcp[l3f]),
                tuple(tcp[base]),
                f"median of {len(tcp[l3f])}",
                f"workload MTU: {mtus}",
            )
        )
    for base in (plain, vxlan):
        out.append(
            Figure(
                f"ping RTT a -> b, l3fabric vs {base}",
                "ms",
                statistics.median(rtt[l3f]),
                statistics.median(rtt[base]),
                base,
                None,
                tuple(rtt[l3f]),
                tuple(rtt[base]),
                f"median of {len(rtt[l3f])} runs' means",
            )
        )
    return out


def run(
    lab: Lab, runs: int, seconds: int, omit: int, pings: int
) -> tuple[list[Figure], dict[str, object]]:
    log("building the three paths")
    paths = [build_l3fabric(lab), build_plain(lab), build_vxlan(lab)]
    for path in paths:
        start_server(lab, path)
    tcp: dict[str, list[float]] = {p.name: [] for p in paths}
    rtt: dict[str, list[float]] = {p.name: [] for p in paths}
    for i in range(runs):
        order = paths[i % 3 :] + paths[: i % 3]  # rotate who goes first
        for path in order:
            tcp[path.name].append(tcp_gbits(path, seconds, omit))
            rtt[path.name].append(rtt_ms(path, pings))
        log(f"run {i + 1}/{runs}: " + ", ".join(f"{n} {v[-1]:.2f} Gbit/s" for n, v in tcp.items()))
    raw = {"tcp_gbits": tcp, "rtt_ms": rtt, "mtu": {p.name: p.mtu for p in paths},
           "seconds": seconds, "omit": omit, "pings": pings}  # fmt: skip
    return figures(paths, tcp, rtt), raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of 1 s (CI)")
    parser.add_argument("--runs", type=int, help="iperf3 runs per path (default 5)")
    parser.add_argument("--seconds", type=int, help="seconds per iperf3 run (default 5)")
    parser.add_argument("--json", type=Path, help="write figures and samples to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    runs = args.runs or (2 if args.quick else 5)
    seconds = args.seconds or (1 if args.quick else 5)
    omit = 0 if args.quick else 1
    if runs < 1 or seconds < 1:
        parser.error("--runs and --seconds must be at least 1")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="l3fdp"))
    lab = Lab(f"dp{os.getpid() % 100000}", workdir)
    try:
        found, raw = run(lab, runs, seconds, omit, 20 if args.quick else 100)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.close()
        sh("rm", "-rf", str(workdir))
    for figure in found:
        print(" | ".join(figure_row(figure)))
    print(found[0].note)
    if args.json:
        write_figures(args.json, found, raw, f"{runs} runs of {seconds} s per path, interleaved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
