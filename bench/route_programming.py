#!/usr/bin/env python3
"""Route programming throughput: l3fabric's program() against `ip -batch`
and against the limit, a C writer of batched rtnetlink.

Run as root (see bench/README.md). Everything happens in a namespace made for
the run and deleted at the end, even on failure or Ctrl-C: a veth pair inside
it gives the routes a real device, and on-link gateways for multipath.

For each case and size, in the same run and alternating, it times:
  ip add / ip del   `ip -n NS -batch FILE`, the ip process only
  l3f add / l3f del NetlinkDataplane.program(replace=...) / program(delete=...)
                    on a thread inside the namespace; building the Route
                    values is not timed, the per-call link dump is
  C add / C del     bench/rtnl_writer.c, built with the machine's cc for the
                    run: the same requests, batches and acks as l3fabric's
                    route socket, timed from its first send to its last ack
and checks after every step that the kernel holds exactly the routes it should.
Each number is the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from types import FrameType

from l3fabric.dataplane import NetlinkDataplane
from l3fabric.dataplane.netns import run_in_netns
from l3fabric.dataplane.routes import DEFAULT_BATCH, RouteSocket
from l3fabric.model import RTPROT_L3FABRIC, IPNetwork, NextHop, Route

DEVICE = "va"
GATEWAYS = ("198.18.0.2", "198.18.0.3")
TARGET_RATIO = 0.6  # of ip -batch
C_TARGET_RATIO = 0.8  # of the C writer, the limit
C_WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rtnl_writer.c")
C_CASE = {"v4-32-dev": "v4", "v6-128-dev": "v6", "v4-32-multipath": "mp"}


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    targeted: bool  # the >= 0.6x ip -batch goal applies


@dataclass(frozen=True)
class Result:
    case: str
    size: int
    targeted: bool
    ip_add: float  # routes per second, medians
    l3f_add: float
    ip_del: float
    l3f_del: float
    l3f_dump_s: float  # seconds for dump_routes() with all routes installed
    c_add: float
    c_del: float

    @property
    def add_ratio(self) -> float:
        return self.l3f_add / self.ip_add

    @property
    def del_ratio(self) -> float:
        return self.l3f_del / self.ip_del

    @property
    def c_add_ratio(self) -> float:
        return self.l3f_add / self.c_add

    @property
    def c_del_ratio(self) -> float:
        return self.l3f_del / self.c_del

    def missed(self) -> bool:
        return self.targeted and (
            min(self.add_ratio, self.del_ratio) < TARGET_RATIO
            or min(self.c_add_ratio, self.c_del_ratio) < C_TARGET_RATIO
        )


def prefixes(case: str, size: int) -> list[IPNetwork]:
    if case == "v6-128-dev":
        base = int(ipaddress.IPv6Address("fd00:64::"))
        return [ipaddress.IPv6Network((base + i, 128)) for i in range(size)]
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    return [ipaddress.IPv4Network((base + i, 32)) for i in range(size)]


def routes_for(case: str, nets: list[IPNetwork]) -> list[Route]:
    if case == "v4-32-multipath":
        hops = tuple(NextHop(gateway=ipaddress.ip_address(g)) for g in GATEWAYS)
    else:
        hops = (NextHop(ifname=DEVICE),)
    return [Route(net, hops) for net in nets]


def ip_batch_lines(case: str, nets: list[IPNetwork], op: str) -> str:
    if op == "del":
        return "".join(f"route del {net} proto {RTPROT_L3FABRIC}\n" for net in nets)
    if case == "v4-32-multipath":
        tail = " ".join(f"nexthop via {g}" for g in GATEWAYS)
    elif case == "v6-128-dev":
        tail = f"dev {DEVICE}"
    else:
        tail = f"dev {DEVICE} scope link"
    return "".join(f"route add {net} proto {RTPROT_L3FABRIC} {tail}\n" for net in nets)


def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def build_c_writer(workdir: str) -> str:
    """Compile bench/rtnl_writer.c for this run; the executable's path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc or gcc): the C writer baseline cannot be built")
    binary = os.path.join(workdir, "rtnl_writer")
    sh(compiler, "-O2", "-Wall", "-o", binary, C_WRITER)
    return binary


class Bench:
    def __init__(self, netns: str, batch_size: int, c_writer: str) -> None:
        self.netns = netns
        self.path = f"/run/netns/{netns}"
        self.batch_size = batch_size
        self.c_writer = c_writer
        self.device_index = 0
        self.dataplane: NetlinkDataplane | None = None

    def setup(self) -> None:
        ns = self.netns
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", DEVICE, "type", "veth", "peer", "name", "vb")
        sh("ip", "-n", ns, "addr", "add", "198.18.0.1/24", "dev", DEVICE)
        sh("ip", "-n", ns, "addr", "add", "fd00:198:18::1/64", "dev", DEVICE, "nodad")
        sh("ip", "-n", ns, "link", "set", DEVICE, "up")
        sh("ip", "-n", ns, "link", "set", "vb", "up")
        self.device_index = int(sh("ip", "-n", ns, "-o", "link", "show", DEVICE).split(":")[0])

        def make() -> NetlinkDataplane:
            socket = RouteSocket(protocol=RTPROT_L3FABRIC, batch_size=self.batch_size)
            dataplane = NetlinkDataplane(route_socket=socket)
            dataplane.owned_links()  # opens the socket here, inside the namespace
            return dataplane

        self.dataplane = run_in_netns(self.path, make)

    def teardown(self) -> None:
        if self.dataplane is not None:
            self.dataplane.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def in_ns(self, func: Callable[[], float]) -> float:
        return run_in_netns(self.path, func)

    def count_ours(self) -> int:
        total = 0
        for family in ("-4", "-6"):
            out = sh("ip", "-n", self.netns, family, "route", "show", "proto", str(RTPROT_L3FABRIC))
            total += sum(1 for line in out.splitlines() if line and not line[0].isspace())
        return total

    def expect(self, count: int, after: str) -> None:
        found = self.count_ours()
        if found != count:
            raise RuntimeError(f"after {after}: {found} routes in the kernel, expected {count}")

    def ip_batch(self, text: str) -> float:
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as handle:
            handle.write(text)
            handle.flush()
            start = time.perf_counter()
            proc = subprocess.run(
                ["ip", "-n", self.netns, "-batch", handle.name], capture_output=True, text=True
            )
            elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"ip -batch failed: {proc.stderr.strip()[:500]}")
        return elapsed

    def c_write(self, op: str, case: str, size: int) -> float:
        gateways = GATEWAYS if case == "v4-32-multipath" else ()
        out = sh(
            "ip", "netns", "exec", self.netns, self.c_writer, op, C_CASE[case], str(size),
            str(self.batch_size), str(self.device_index), *gateways,
        )  # fmt: skip
        return float(out)

    def program(self, replace: list[Route], delete: list[IPNetwork]) -> float:
        dataplane = self.dataplane
        assert dataplane is not None

        def timed() -> float:
            start = time.perf_counter()
            failures = dataplane.program(replace, delete)
            elapsed = time.perf_counter() - start
            if failures:
                raise RuntimeError(f"{len(failures)} routes failed, first: {failures[0]}")
            return elapsed

        return self.in_ns(timed)

    def dump(self, expected: int) -> float:
        dataplane = self.dataplane
        assert dataplane is not None

        def timed() -> float:
            start = time.perf_counter()
            found = len(dataplane.dump_routes())
            elapsed = time.perf_counter() - start
            if found != expected:
                raise RuntimeError(f"dump_routes returned {found} routes, expected {expected}")
            return elapsed

        return self.in_ns(timed)

    def run_case(self, case: Case, repeats: int) -> Result:
        nets = prefixes(case.name, case.size)
        routes = routes_for(case.name, nets)
        add_text = ip_batch_lines(case.name, nets, "add")
        del_text = ip_batch_lines(case.name, nets, "del")
        keys = ("ip_add", "ip_del", "l3f_add", "l3f_del", "c_add", "c_del")
        times: dict[str, list[float]] = {k: [] for k in keys}
        dumps = []
        for _ in range(repeats):
            times["ip_add"].append(self.ip_batch(add_text))
            self.expect(case.size, "ip add")
            times["ip_del"].append(self.ip_batch(del_text))
            self.expect(0, "ip del")
            times["l3f_add"].append(self.program(routes, []))
            self.expect(case.size, "l3fabric add")
            dumps.append(self.dump(case.size))
            times["l3f_del"].append(self.program([], nets))
            self.expect(0, "l3fabric delete")
            times["c_add"].append(self.c_write("add", case.name, case.size))
            self.expect(case.size, "C writer add")
            times["c_del"].append(self.c_write("del", case.name, case.size))
            self.expect(0, "C writer delete")
        rate = {k: case.size / statistics.median(v) for k, v in times.items()}
        return Result(
            case.name,
            case.size,
            case.targeted,
            rate["ip_add"],
            rate["l3f_add"],
            rate["ip_del"],
            rate["l3f_del"],
            statistics.median(dumps),
            rate["c_add"],
            rate["c_del"],
        )


def cases(sizes: list[int]) -> Iterator[Case]:
    for size in sizes:
        yield Case("v4-32-dev", size, True)
    yield Case("v6-128-dev", 10_000, False)
    yield Case("v4-32-multipath", 10_000, False)


def table(results: list[Result]) -> str:
    head = (
        f"{'case':<16} {'N':>6}  {'ip add/s':>9} {'l3f add/s':>9} {'ratio':>6}"
        f"  {'ip del/s':>9} {'l3f del/s':>9} {'ratio':>6}  {'dump s':>6}  target"
        f"  {'C add/s':>9} {'of C':>6}  {'C del/s':>9} {'of C':>6}  C target"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if r.targeted:
            ok = min(r.add_ratio, r.del_ratio) >= TARGET_RATIO
            verdict = "met" if ok else f"MISSED (<{TARGET_RATIO}x)"
            c_ok = min(r.c_add_ratio, r.c_del_ratio) >= C_TARGET_RATIO
            c_verdict = "met" if c_ok else f"MISSED (<{C_TARGET_RATIO}x)"
        else:
            verdict = c_verdict = "-"
        lines.append(
            f"{r.case:<16} {r.size:>6}  {r.ip_add:>9.0f} {r.l3f_add:>9.0f} {r.add_ratio:>5.2f}x"
            f"  {r.ip_del:>9.0f} {r.l3f_del:>9.0f} {r.del_ratio:>5.2f}x  {r.l3f_dump_s:>6.2f}"
            f"  {verdict:<6}  {r.c_add:>9.0f} {r.c_add_ratio:>5.2f}x  {r.c_del:>9.0f}"
            f" {r.c_del_ratio:>5.2f}x  {c_verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,50000", help="v4 /32 sizes (default 10000,50000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per number; median reported")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="routes per send")
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root: it creates a network namespace")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1 or max(sizes) > 65536:
        parser.error("--sizes must be within 1..65536 (one /16 of /32s)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    workdir = tempfile.TemporaryDirectory(prefix="l3fbench-")
    bench = Bench(f"l3fbench{os.getpid()}", args.batch_size, build_c_writer(workdir.name))
    results: list[Result] = []
    try:
        bench.setup()
        for case in cases(sizes):
            print(f"measuring {case.name} x {case.size} ...", file=sys.stderr, flush=True)
            results.append(bench.run_case(case, args.repeats))
    finally:
        bench.teardown()
        workdir.cleanup()
    print(f"batch size {args.batch_size}, median of {args.repeats}, routes/s")
    print(table(results))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if any(r.missed() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
