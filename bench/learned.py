"""Scale of learned routes: one peer feeds N prefixes to one node; the time
until all are in the node's kernel, the CPU seconds the node's speaker spent
on it, its RSS after; then the peer withdraws them all and the time until
they are gone. l3fabric (agent + ExaBGP + bridge) against a BIRD 2 node
speaker (`l3fabric bird render --role node`, what calico-node runs), each on
its own copy of the lab, both up for the whole run, rounds alternating.

The feeder is BIRD in node a's namespace (198.18.0.1, AS 64513), holding the
N prefixes in a static protocol that starts disabled: `birdc enable` sends
them all on the established session, `birdc disable` withdraws them all. The
prefixes are /32s of 198.19.0.0/16, then /31s, then /30s of it (65,536 +
32,768 + 16,384 possible). The node is b (198.18.0.2, AS 64512).

    .venv/bin/python -m bench.learned [--quick] [--sizes 20000,50000,100000]
        [--repeats N] [--json FILE]

Namespaces are named lr<pid>...; they and every process started here are
removed at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bench import procstat
from bench.fabric import (
    ASN,
    NODE_V4,
    NODE_V6,
    POOL_V4,
    RTPROT_BIRD,
    AgentNode,
    BirdNode,
    Lab,
    launch_bird,
    make_underlay,
    sh,
    start_agent,
    start_bird,
    wait_until,
)
from bench.probes import NetlinkOverrun, Prefix, RouteWatcher, dump_prefixes, prefix_of
from bench.runner import Figure, Target, figure_row, write_figures
from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRole, render
from l3fabric.model import RTPROT_L3FABRIC

FEEDER_ASN = 64513
FEED_NET = ipaddress.IPv4Network("198.19.0.0/16")
TIMEOUT = 600.0
TARGET_100K_RATIO, TARGET_100K_MB = 3.0, 250.0


def feed_prefixes(n: int) -> list[ipaddress.IPv4Network]:
    out: list[ipaddress.IPv4Network] = []
    base = int(FEED_NET.network_address)
    for length in (32, 31, 30):
        step = 1 << (32 - length)
        for i in range(FEED_NET.num_addresses // step):
            if len(out) == n:
                return out
            out.append(ipaddress.IPv4Network((base + i * step, length)))
    if len(out) < n:
        raise ValueError(f"at most {len(out)} feed prefixes, asked for {n}")
    return out


def feeder_config(prefixes: list[ipaddress.IPv4Network]) -> str:
    routes = "".join(f"  route {p} blackhole;\n" for p in prefixes)
    return (
        f"router id {NODE_V4[0]};\n"
        "protocol device { scan time 10; }\n"
        f"protocol static feed {{\n  disabled yes;\n  ipv4;\n{routes}}}\n"
        "protocol bgp node {\n"
        f"  local {NODE_V4[0]} as {FEEDER_ASN};\n  neighbor {NODE_V4[1]} as {ASN};\n"
        "  ipv4 { import none; export all; next hop self; };\n}\n"
    )


class FedAgent(AgentNode):
    """b's agent: one external peer (the feeder), no mesh, the feed allowed."""

    def write_config(self, advertise: str) -> Path:
        config = {
            "node": {
                "name": self.name,
                "asn": ASN,
                "addresses": {"ipv4": NODE_V4[1], "ipv6": NODE_V6[1]},
            },
            "pools": [{"cidr": POOL_V4, "block_size": 26}],
            "state_dir": str(self.state_dir),
            "datastore": {"type": "file", "path": str(self.store)},
            "bgp": {
                "mesh": False,
                "advertise": advertise,
                "peers": [{"address": NODE_V4[0], "asn": FEEDER_ASN, "role": "external"}],
                "import_policy": {"max_prefixes": 200_000, "allowed_prefixes": [str(FEED_NET)]},
            },
            "metrics": {"enabled": False},
            "log": {"level": "warning", "format": "json"},
        }
        path = self.config_path(advertise)
        path.write_text(yaml.safe_dump(config))
        return path


@dataclass
class System:
    name: str
    node_path: str
    protocol: int
    feeder: BirdNode
    root_pid: Callable[[], int]
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)


def make_feeder(lab: Lab, netns: str, tag: str, prefixes: list[ipaddress.IPv4Network]) -> BirdNode:
    conf = lab.workdir / f"feeder-{tag}.conf"
    conf.write_text(feeder_config(prefixes))
    node = BirdNode(f"feeder{tag}", netns, 0, conf, lab.workdir / f"feeder-{tag}.ctl",
                    lab.workdir / f"feeder-{tag}.log")  # fmt: skip
    start_bird(lab, node, timeout=120)
    return node


def build_l3fabric(lab: Lab, prefixes: list[ipaddress.IPv4Network]) -> System:
    under = make_underlay(lab, "l")
    state = lab.workdir / "nodeb"
    state.mkdir()
    node = FedAgent("nodeb", under.node_b, 1, state, lab.workdir / "store", lab.workdir / "b.log")
    start_agent(lab, node, "workloads")
    feeder = make_feeder(lab, under.node_a, "l", prefixes)
    wait_until(lambda: node.v4_peer_state() == "Established", 90, "the agent's session", 0.1)

    def pid() -> int:
        assert node.proc is not None
        return node.proc.pid

    return System("l3fabric", under.path_b, RTPROT_L3FABRIC, feeder, pid)


def build_bird(lab: Lab, prefixes: list[ipaddress.IPv4Network]) -> System:
    under = make_underlay(lab, "b")
    cfg = BirdConfig(
        role=BirdRole.NODE,
        router_id=ipaddress.IPv4Address(NODE_V4[1]),
        asn=ASN,
        peers=(BirdPeer(name="feeder", address=ipaddress.IPv4Address(NODE_V4[0]), asn=FEEDER_ASN),),
    )
    conf = lab.workdir / "birdb.conf"
    conf.write_text(render(cfg))
    node = BirdNode(
        "birdb", under.node_b, 1, conf, lab.workdir / "birdb.ctl", lab.workdir / "birdb.log"
    )
    start_bird(lab, node)
    feeder = make_feeder(lab, under.node_a, "b", prefixes)
    wait_until(node.established, 90, "BIRD's session to the feeder", 0.1)

    def pid() -> int:
        assert node.proc is not None
        return node.proc.pid

    return System("BIRD 2 node speaker", under.path_b, RTPROT_BIRD, feeder, pid)


def wait_gone(watcher: RouteWatcher, gone: set[Prefix], timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    polling = False
    while True:
        if polling:
            watcher.present = dump_prefixes(watcher.netns_path, watcher.protocol)
        else:
            try:
                watcher.drain()
            except NetlinkOverrun:
                polling = True
                continue
        now = time.monotonic()
        if not gone & watcher.present:
            return now
        if now > deadline:
            return None
        if polling:
            time.sleep(0.05)
        else:
            select.select([watcher], [], [], 0.5)


def birdc(node: BirdNode, *args: str) -> None:
    out = subprocess.run(
        ["birdc", "-s", str(node.socket), *args], capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        raise RuntimeError(f"birdc {' '.join(args)}: {out.stdout} {out.stderr}")


def one_round(system: System, prefixes: list[ipaddress.IPv4Network]) -> dict[str, float]:
    wanted = {prefix_of(p) for p in prefixes}
    watcher = RouteWatcher(system.node_path, system.protocol)
    watcher.open()
    try:
        if wanted & watcher.present:
            raise RuntimeError(f"{system.name}: feed routes present before the round")
        before = procstat.snapshot([system.root_pid()])
        started = time.monotonic()
        birdc(system.feeder, "enable", "feed")
        done = watcher.wait_all(wanted, TIMEOUT)
        if done is None:
            missing = len(wanted - watcher.present)
            raise RuntimeError(f"{system.name}: {missing} of {len(wanted)} prefixes never arrived")
        learned = procstat.snapshot([system.root_pid()])
        rss = procstat.rss_by_role([system.root_pid()])
        cpu = procstat.cpu_by_role(before, learned)
        withdrawn = time.monotonic()
        birdc(system.feeder, "disable", "feed")
        gone = wait_gone(watcher, wanted, TIMEOUT)
        if gone is None:
            raise RuntimeError(f"{system.name}: the withdrawn prefixes stayed in the kernel")
        cpu_w = procstat.cpu_by_role(learned, procstat.snapshot([system.root_pid()]))
    finally:
        watcher.close()
    out = {"learn_s": done - started, "withdraw_s": gone - withdrawn}
    out["learn_cpu_s"] = sum(cpu.values())
    out["withdraw_cpu_s"] = sum(cpu_w.values())
    out["rss_mb"] = sum(rss.values())
    out |= {f"rss_mb_{k}": v for k, v in rss.items()}
    out |= {f"learn_cpu_s_{k}": v for k, v in cpu.items()}
    return out


def figures(systems: list[System], sizes: list[int]) -> list[Figure]:
    ours, theirs = systems
    out = []
    for size in sizes:
        key = str(size)
        a, b = ours.samples[key], theirs.samples[key]
        for metric, what, unit in (
            ("learn_s", "learn", "s"),
            ("learn_cpu_s", "learn, CPU of the node's speaker", "CPU s"),
            ("rss_mb", "RSS after learning (agent + ExaBGP + bridge)", "MB"),
            ("withdraw_s", "withdraw", "s"),
        ):
            target = None
            if size == 100_000 and metric == "learn_s":
                target = Target("<=", TARGET_100K_RATIO, "ratio")
            elif size == 100_000 and metric == "rss_mb":
                target = Target("<=", TARGET_100K_MB)
            note = ""
            if metric == "rss_mb":
                parts = sorted(k for k in a if k.startswith("rss_mb_"))
                note = ", ".join(f"{k[7:]} {statistics.median(a[k]):.0f} MB" for k in parts)
            out.append(
                Figure(
                    f"{size} prefixes from one peer, {what}",
                    unit,
                    statistics.median(a[metric]),
                    statistics.median(b[metric]),
                    theirs.name,
                    target,
                    tuple(a[metric]),
                    tuple(b[metric]),
                    f"median of {len(a[metric])}",
                    note,
                )
            )
    return out


def run(lab: Lab, sizes: list[int], repeats: int) -> tuple[list[Figure], dict[str, Any]]:
    every = feed_prefixes(max(sizes))
    # Each size is a feeder of its own: the static protocol holds exactly N.
    figures_all: list[Figure] = []
    raw: dict[str, Any] = {}
    systems = [build_l3fabric(lab, every[: sizes[0]]), build_bird(lab, every[: sizes[0]])]
    for index, size in enumerate(sizes):
        prefixes = every[:size]
        if index > 0:
            for system in systems:
                if system.feeder.proc is not None:
                    lab.stop(system.feeder.proc)
                system.feeder.conf.write_text(feeder_config(prefixes))
                launch_bird(lab, system.feeder)
            wait_until(lambda: all(_feeder_up(s) for s in systems), 120, "feeders back", 0.1)
        for rep in range(repeats):
            order = systems if rep % 2 == 0 else systems[::-1]
            for system in order:
                sample = one_round(system, prefixes)
                for k, v in sample.items():
                    system.samples.setdefault(str(size), {}).setdefault(k, []).append(v)
                log(f"{system.name} {size}: learn {sample['learn_s']:.2f} s, withdraw "
                    f"{sample['withdraw_s']:.2f} s, CPU {sample['learn_cpu_s']:.2f} s, "
                    f"RSS {sample['rss_mb']:.0f} MB")  # fmt: skip
    figures_all = figures(systems, sizes)
    raw = {s.name: s.samples for s in systems}
    return figures_all, raw


def _feeder_up(system: System) -> bool:
    return system.feeder.established()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5000 prefixes, 1 round (CI)")
    parser.add_argument("--sizes", help="comma-separated (default 20000,50000,100000)")
    parser.add_argument("--repeats", type=int, help="rounds per size and system (default 3)")
    parser.add_argument("--json", type=Path, help="write figures and samples to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    raw_sizes = args.sizes or ("5000" if args.quick else "20000,50000,100000")
    try:
        sizes = sorted({int(s) for s in raw_sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {raw_sizes!r}")
    if not sizes or sizes[0] < 1 or sizes[-1] > 114_688:
        parser.error("--sizes must be within 1..114688 (the /32s, /31s and /30s of a /16)")
    repeats = args.repeats or (1 if args.quick else 3)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="l3flr"))
    lab = Lab(f"lr{os.getpid() % 100000}", workdir)
    try:
        found, raw = run(lab, sizes, repeats)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        lab.close()
        sh("rm", "-rf", str(workdir))
    for figure in found:
        print(" | ".join(figure_row(figure)))
    if args.json:
        write_figures(args.json, found, raw, f"sizes {sizes}, {repeats} rounds each, alternating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
