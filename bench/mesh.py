"""Mesh size: N nodes in namespaces on one bridge, a full iBGP mesh, two
workloads on each; the time from starting every node's speaker at once to
every node holding every other node's workload routes, the CPU seconds each
node spent until then and its RSS after. l3fabric (an agent per node, peers
from the shared file datastore's node registry) against BIRD 2 node
speakers (`l3fabric bird render --role node`, a peer per other node) with
the same workload routes, one size after the other, the systems' order
alternating from one size to the next.

Workloads: l3fabric's are prewired before the agents start (as in
bench/convergence.py; each agent's first pass finishes their wiring); the
baseline's are two /32 proto 76 routes on a dummy veth, all BIRD sees of
workloads. Every node is checked by a route dump every 0.2 s or so (all
nodes in turn), so times are late by up to one sweep.

With `--reflectors K` the nodes do not mesh: each peers with K BIRD 2 route
reflectors (`l3fabric bird render --role route-reflector`, every node a
client) in namespaces of their own on the same bridge, started and ready
before the clock; both systems get the same reflectors.

    .venv/bin/python -m bench.mesh [--quick] [--sizes 10,25,50] [--reflectors K] [--json FILE]

Namespaces are named ms<pid>...; they and every process started here are
removed after each size and at the end, also on an error, Ctrl-C or SIGTERM.
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
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bench import procstat
from bench.fabric import (
    ASN,
    POOL_V4,
    RTPROT_BIRD,
    AgentNode,
    BirdNode,
    Lab,
    launch_agent,
    launch_bird,
    prewire_workloads,
    sh,
    start_bird,
)
from bench.learned import log
from bench.probes import Prefix, dump_prefixes, prefix_of
from bench.runner import Figure, figure_row, write_figures
from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRole, render
from l3fabric.model import RTPROT_L3FABRIC

WORKLOADS = 2
BIRD_BASE = int(ipaddress.IPv4Address("100.64.128.0"))


MAX_NODES, MAX_REFLECTORS = 200, 4


def address(i: int) -> str:
    return f"198.18.0.{i + 1}"


def reflector_address(k: int) -> str:
    return f"198.18.0.{250 + k}"


class MeshAgent(AgentNode):
    reflectors: tuple[str, ...] = ()  # empty: a full mesh from the node registry

    def write_config(self, advertise: str) -> Path:
        bgp: dict[str, Any] = {"mesh": True, "advertise": advertise}
        if self.reflectors:
            peers = [{"address": a, "asn": ASN, "role": "route-reflector"} for a in self.reflectors]
            bgp = {"mesh": False, "advertise": advertise, "peers": peers}
        config = {
            "node": {"name": self.name, "asn": ASN, "addresses": {"ipv4": address(self.index)}},
            "pools": [{"cidr": POOL_V4, "block_size": 26}],
            "state_dir": str(self.state_dir),
            "datastore": {"type": "file", "path": str(self.store)},
            "bgp": bgp,
            "metrics": {"enabled": False},
            "log": {"level": "warning", "format": "json"},
        }
        path = self.config_path(advertise)
        path.write_text(yaml.safe_dump(config))
        return path


def batch(lab: Lab, netns: str | None, lines: list[str]) -> None:
    path = lab.workdir / "step.batch"
    path.write_text("".join(lines))
    sh("ip", *(("-n", netns) if netns else ()), "-batch", str(path))


def underlay(lab: Lab, size: int, reflectors: int = 0) -> tuple[list[str], list[str]]:
    """The nodes' namespaces and the reflectors', on one bridge."""
    switch = lab.netns("sw")
    nodes = [f"{lab.tag}n{i}" for i in range(size)]
    rrs = [f"{lab.tag}rr{k}" for k in range(reflectors)]
    lab.netns_many([f"n{i}" for i in range(size)] + [f"rr{k}" for k in range(reflectors)])
    every = nodes + rrs
    batch(lab, None, [f"link add eth1 netns {ns} address {mac(i)} type veth peer p{i} "
                      f"netns {switch}\n" for i, ns in enumerate(every)])  # fmt: skip
    ports = ["link add br0 type bridge\n", "link set br0 up\n"]
    for i in range(len(every)):
        ports += [f"link set p{i} master br0\n", f"link set p{i} up\n"]
    batch(lab, switch, ports)
    addresses = [address(i) for i in range(size)] + [
        reflector_address(k) for k in range(reflectors)
    ]
    # Every neighbour is written in, permanent: the kernel's ARP table is
    # one for all namespaces, and its dynamic entries are capped machine-wide
    # (net.ipv4.neigh.default.gc_thresh3, 1024 by default). A full mesh of
    # 50 needs 2,450 of them; past the cap new ones fail ("No route to host",
    # "neighbor table overflow") and no speaker, BIRD included, converges.
    # Permanent entries do not count against the cap.
    for i, (ns, addr) in enumerate(zip(every, addresses, strict=True)):
        lines = ["link set lo up\n", f"addr add {addr}/24 dev eth1\n", "link set eth1 up\n"]
        lines += [f"neigh replace {other} lladdr {mac(j)} dev eth1 nud permanent\n"
                  for j, other in enumerate(addresses) if j != i]  # fmt: skip
        batch(lab, ns, lines)
    return nodes, rrs


def mac(i: int) -> str:
    """The underlay MAC of the i-th namespace on the bridge (locally administered)."""
    return f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}"


def start_reflectors(lab: Lab, rrs: list[str], size: int) -> None:
    """BIRD route reflectors with every node a client, up before the clock."""
    clients = tuple(
        BirdPeer(name=f"n{i}", address=ipaddress.IPv4Address(address(i)), asn=ASN, rr_client=True)
        for i in range(size)
    )
    for k, ns in enumerate(rrs):
        router_id = ipaddress.IPv4Address(reflector_address(k))
        cluster = ipaddress.IPv4Address(reflector_address(0))
        cfg = BirdConfig(
            BirdRole.ROUTE_REFLECTOR, router_id, ASN, cluster_id=cluster, peers=clients
        )
        conf = lab.workdir / f"rr{k}.conf"
        conf.write_text(render(cfg))
        start_bird(lab, BirdNode(f"rr{k}", ns, size + k, conf, lab.workdir / f"rr{k}.ctl",
                                 lab.workdir / f"rr{k}.log"))  # fmt: skip


def node_peers(i: int, size: int, reflectors: int) -> tuple[BirdPeer, ...]:
    """A BIRD node's peers: every other node, or the reflectors."""
    if reflectors:
        return tuple(
            BirdPeer(name=f"rr{k}", address=ipaddress.IPv4Address(reflector_address(k)), asn=ASN)
            for k in range(reflectors)
        )
    return tuple(
        BirdPeer(name=f"n{j}", address=ipaddress.IPv4Address(address(j)), asn=ASN)
        for j in range(size)
        if j != i
    )


def wait_everywhere(
    nodes: list[str],
    protocol: int,
    expected: dict[str, set[Prefix]],
    started: float,
    timeout: float,
) -> dict[str, float]:
    """Seconds from `started` until each node held its expected prefixes;
    nodes missing at the deadline are left out."""
    done: dict[str, float] = {}
    deadline = started + timeout
    while len(done) < len(nodes) and time.monotonic() < deadline:
        for ns in nodes:
            if ns not in done and expected[ns] <= dump_prefixes(f"/run/netns/{ns}", protocol):
                done[ns] = time.monotonic() - started
        time.sleep(0.05)
    return done


def measure(
    nodes: list[str],
    protocol: int,
    expected: dict[str, set[Prefix]],
    launch: Callable[[], list[int]],
    timeout: float,
) -> dict[str, Any]:
    started = time.monotonic()
    pids = launch()
    done = wait_everywhere(nodes, protocol, expected, started, timeout)
    cpu = [sum(procstat.cpu_by_role({}, procstat.snapshot([pid])).values()) for pid in pids]
    rss = [sum(procstat.rss_by_role([pid]).values()) for pid in pids]
    converged = max(done.values()) if len(done) == len(nodes) else None
    if converged is None:
        log(f"{len(nodes) - len(done)} of {len(nodes)} nodes not converged after {timeout:.0f} s")
    return {"converged_s": converged, "per_node_s": list(done.values()), "cpu_s": cpu,
            "rss_mb": rss, "timeout_s": timeout}  # fmt: skip


def run_l3fabric(lab: Lab, size: int, timeout: float, reflectors: int = 0) -> dict[str, Any]:
    nodes, rrs = underlay(lab, size, reflectors)
    start_reflectors(lab, rrs, size)
    agents = []
    for i, ns in enumerate(nodes):
        state = lab.workdir / f"node{i}"
        state.mkdir()
        agent = MeshAgent(f"node{i}", ns, i, state, lab.workdir / "store", lab.workdir / f"{i}.log")
        agent.reflectors = tuple(reflector_address(k) for k in range(reflectors))
        names = [f"w{i}x{k}" for k in range(WORKLOADS)]
        lab.netns_many(names)
        prewire_workloads(lab, agent, names)
        agents.append(agent)
    local = {ns: dump_prefixes(f"/run/netns/{ns}", RTPROT_L3FABRIC) for ns in nodes}
    every = set().union(*local.values())
    expected = dict.fromkeys(nodes, every)

    def launch() -> list[int]:
        return [launch_agent(lab, agent, "workloads").pid for agent in agents]

    return measure(nodes, RTPROT_L3FABRIC, expected, launch, timeout)


def run_bird(lab: Lab, size: int, timeout: float, reflectors: int = 0) -> dict[str, Any]:
    nodes, rrs = underlay(lab, size, reflectors)
    start_reflectors(lab, rrs, size)
    birds = []
    local: dict[str, set[Prefix]] = {}
    for i, ns in enumerate(nodes):
        lines = ["link add blk0 type veth peer name blk1\n", "link set blk0 up\n",
                 "link set blk1 up\n"]  # fmt: skip
        local[ns] = set()
        for k in range(WORKLOADS):
            ip = ipaddress.IPv4Address(BIRD_BASE + i * WORKLOADS + k)
            lines.append(f"route add {ip}/32 dev blk0 proto {RTPROT_L3FABRIC} scope link\n")
            local[ns].add(prefix_of(f"{ip}/32"))
        batch(lab, ns, lines)
        peers = node_peers(i, size, reflectors)
        conf = lab.workdir / f"bird{i}.conf"
        conf.write_text(render(BirdConfig(BirdRole.NODE, ipaddress.IPv4Address(address(i)), ASN,
                                          peers=peers)))  # fmt: skip
        birds.append(BirdNode(f"bird{i}", ns, i, conf, lab.workdir / f"bird{i}.ctl",
                              lab.workdir / f"bird{i}.log"))  # fmt: skip
    # BIRD installs the others' routes as proto bird; its own stay proto 76.
    expected = {ns: set().union(*(v for k, v in local.items() if k != ns)) for ns in nodes}

    def launch() -> list[int]:
        return [launch_bird(lab, bird).pid for bird in birds]

    return measure(nodes, RTPROT_BIRD, expected, launch, timeout)


def figures(
    results: dict[str, dict[int, dict[str, Any]]], sizes: list[int], reflectors: int = 0
) -> list[Figure]:
    ours, theirs = results["l3fabric"], results["bird"]
    out = []
    for size in sizes:
        a, b = ours[size], theirs[size]
        base = f"BIRD 2 nodes, {reflectors} reflectors" if reflectors else "BIRD 2 node mesh"
        if reflectors:
            size_name = f"{size} nodes, {reflectors} route reflectors"
        else:
            size_name = f"{size} nodes"
        late = [
            f"{name} not converged after {r['timeout_s']:.0f} s ({len(r['per_node_s'])} of "
            f"{size} nodes were){' (baseline not measured)' if name == 'BIRD' else ''}"
            for name, r in (("l3fabric", a), ("BIRD", b))
            if r["converged_s"] is None
        ]
        out += [
            Figure(f"{size_name}: start -> every route on every node", "s", a["converged_s"],
                   b["converged_s"], base, summary="one run",
                   note="; ".join(late)),
            Figure(f"{size_name}: CPU per node until converged", "CPU s",
                   statistics.median(a["cpu_s"]), statistics.median(b["cpu_s"]), base,
                   samples=tuple(a["cpu_s"]), baseline_samples=tuple(b["cpu_s"]),
                   summary=f"median of {size} nodes"),
            Figure(f"{size_name}: RSS per node", "MB", statistics.median(a["rss_mb"]),
                   statistics.median(b["rss_mb"]), base, samples=tuple(a["rss_mb"]),
                   baseline_samples=tuple(b["rss_mb"]), summary=f"median of {size} nodes",
                   note=f"all {size} nodes: l3fabric {sum(a['rss_mb']):.0f} MB, "
                        f"BIRD {sum(b['rss_mb']):.0f} MB"),
        ]  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 nodes (CI)")
    # A size that does not converge is a result (its figure is missing), not a crash.
    parser.add_argument("--sizes", help="comma-separated node counts (default 10,25,50)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per size and system, s")
    parser.add_argument(
        "--reflectors",
        type=int,
        default=0,
        help=f"peer every node with this many BIRD route reflectors instead of a full mesh "
        f"(0..{MAX_REFLECTORS}, default 0)",
    )
    parser.add_argument("--json", type=Path, help="write figures and samples to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces")
    raw_sizes = args.sizes or ("4" if args.quick else "10,25,50")
    try:
        sizes = sorted({int(s) for s in raw_sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {raw_sizes!r}")
    if not sizes or sizes[0] < 2 or sizes[-1] > MAX_NODES:
        parser.error(f"--sizes must be within 2..{MAX_NODES}")
    if not 0 <= args.reflectors <= MAX_REFLECTORS:
        parser.error(f"--reflectors must be within 0..{MAX_REFLECTORS}, got {args.reflectors}")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results: dict[str, dict[int, dict[str, Any]]] = {"l3fabric": {}, "bird": {}}
    tag = f"ms{os.getpid() % 10000}"
    lab: Lab | None = None
    workdirs: list[Path] = []
    try:
        for index, size in enumerate(sizes):
            order = ("l3fabric", "bird") if index % 2 == 0 else ("bird", "l3fabric")
            for system in order:
                workdirs.append(Path(tempfile.mkdtemp(prefix="l3fmesh")))
                lab = Lab(f"{tag}{system[0]}{size}", workdirs[-1])
                log(f"{system}: {size} nodes")
                run = run_l3fabric if system == "l3fabric" else run_bird
                results[system][size] = run(lab, size, args.timeout, args.reflectors)
                took = results[system][size]["converged_s"]
                log(f"{system}: {size} nodes converged in {took} s")
                lab.close()
                lab = None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if lab is not None:
            lab.close()
        for workdir in workdirs:
            sh("rm", "-rf", str(workdir))
    found = figures(results, sizes, args.reflectors)
    for figure in found:
        print(" | ".join(figure_row(figure)))
    if args.json:
        raw = {k: {str(s): v for s, v in r.items()} for k, r in results.items()}
        write_figures(
            args.json,
            found,
            raw,
            f"sizes {sizes}, one run each, {WORKLOADS} workloads per node, "
            + (f"{args.reflectors} route reflectors" if args.reflectors else "full mesh"),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
