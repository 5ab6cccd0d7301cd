#!/usr/bin/env python3
"""CNI ADD and DEL, exec to result: l3fabric's plugin against the reference
`ptp` + `host-local` plugins (containernetworking-plugins), in the same run,
from the same node namespace, dual-stack both.

Run as root (see bench/README.md). It makes one node namespace with an agent
(BGP and metrics off: nothing to peer with) and one namespace per pod, all
named l3fcb<pid>..., and removes them and the agent at the end, also on an
error or Ctrl-C. Nothing changes outside those namespaces.

Timed for each plugin: the plugin process from exec to exit (stdin written,
stdout read), the runtime's view of ADD and DEL. Sequential: one at a time,
l3fabric and the reference alternating. Concurrent: --concurrency at once,
each operation's own latency. Then where l3fabric's time goes: interpreter
start (`python -I -c pass`), the plugin's imports, and the agent's work
(`cni.add` / `cni.del` over the control socket from this process).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
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
from pathlib import Path
from typing import Any

import yaml

from l3fabric import control

REFERENCE_DIR = Path("/usr/lib/cni")
TARGET_RATIO = 2.0  # l3fabric ADD p50 at most 2x the reference's
CLONE_NEWNET = 0x40000000


def sh(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def enter_netns(name: str) -> None:
    """This process (and what it starts) into the node namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tag = f"l3fcb{os.getpid() % 100000}"
        self.node = f"{self.tag}n"
        self.namespaces: list[str] = []
        self.agent: subprocess.Popen[bytes] | None = None
        self.socket = tmp / "state" / "agent.sock"
        self.counter = 0

    # -- setup -------------------------------------------------------------------

    def start(self) -> None:
        self.netns(self.node)
        sh("ip", "-n", self.node, "addr", "add", "198.18.0.1/32", "dev", "lo")
        sh("ip", "-n", self.node, "addr", "add", "fd00:198:18::1/128", "dev", "lo")
        config = {
            "node": {
                "name": "bench",
                "asn": 64512,
                "addresses": {"ipv4": "198.18.0.1", "ipv6": "fd00:198:18::1"},
            },
            "pools": [
                {"cidr": "100.64.0.0/16", "block_size": 26},
                {"cidr": "fd00:64::/48", "block_size": 122},
            ],
            "state_dir": str(self.tmp / "state"),
            "datastore": {"type": "file", "path": str(self.tmp / "store")},
            "bgp": {"enabled": False},
            "metrics": {"enabled": False},
            "log": {"level": "warning"},
        }
        path = self.tmp / "node.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(self.tmp / "agent.log", "ab")  # noqa: SIM115
        self.agent = subprocess.Popen(
            ["ip", "netns", "exec", self.node, sys.executable, "-m", "l3fabric.cli", "agent",
             "--config", str(path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(control.ControlError, OSError):
                if control.call("health", {}, socket_path=self.socket).get("ready"):
                    break
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start: see {self.tmp / 'agent.log'}")
            time.sleep(0.05)
        bin_dir, conf_dir = self.tmp / "bin", self.tmp / "net.d"
        sh(sys.executable, "-m", "l3fabric.cli", "cni", "install", "--bin-dir", str(bin_dir),
           "--conf-dir", str(conf_dir), "--socket", str(self.socket))  # fmt: skip
        self.plugin = bin_dir / "l3fabric"
        self.l3f_conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "l3fabric", "type": "l3fabric",
             "socket": str(self.socket)}
        ).encode()  # fmt: skip
        self.ref_conf = json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "ref",
                "type": "ptp",
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.10.0.0/16"}], [{"subnet": "fd10::/64"}]],
                    "dataDir": str(self.tmp / "host-local"),
                },
            }
        ).encode()
        enter_netns(self.node)

    def netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def pod(self) -> str:
        self.counter += 1
        return self.netns(f"{self.tag}p{self.counter}")

    def stop(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.pid, signal.SIGTERM)
            try:
                self.agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    # -- one operation -------------------------------------------------------------

    def exec(self, which: str, command: str, cid: str, netns: str) -> float:
        plugin, conf = (self.plugin, self.l3f_conf)
        if which == "ref":
            plugin, conf = REFERENCE_DIR / "ptp", self.ref_conf
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(REFERENCE_DIR),
        }
        started = time.perf_counter()
        proc = subprocess.run([str(plugin)], input=conf, capture_output=True, env=env)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{which} {command} {cid}: {proc.stdout.decode()}")
        return elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p90_ms": round(pct(values, 0.9) * 1000, 1),
        "n": len(values),
    }


def sequential(bench: Bench, count: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {w: {"ADD": [], "DEL": []} for w in ("l3f", "ref")}
    pods = {w: [(f"{w}s{i}", bench.pod()) for i in range(count)] for w in ("l3f", "ref")}
    for command in ("ADD", "DEL"):
        for i in range(count):
            for which in ("l3f", "ref") if i % 2 == 0 else ("ref", "l3f"):
                cid, ns = pods[which][i]
                times[which][command].append(bench.exec(which, command, cid, ns))
    return times


def concurrent_runs(bench: Bench, count: int, width: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {w: {"ADD": [], "DEL": []} for w in ("l3f", "ref")}
    for which in ("l3f", "ref"):
        pods = [(f"{which}c{i}", bench.pod()) for i in range(count)]
        for command in ("ADD", "DEL"):
            with concurrent.futures.ThreadPoolExecutor(max_workers=width) as pool:
                times[which][command] = list(
                    pool.map(lambda p, c=command, w=which: bench.exec(w, c, *p), pods)
                )
    return times


def breakdown(bench: Bench, count: int) -> dict[str, float]:
    """Medians in ms: interpreter start, the plugin's imports, the agent's
    ADD and DEL (the control call alone), and VERSION (exec, imports, no agent)."""

    def timed(fn: Callable[[], Any]) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    python = sys.executable
    start = [timed(lambda: sh(python, "-I", "-c", "pass")) for _ in range(count)]
    imports = [
        timed(lambda: sh(python, "-I", "-c", "import l3fabric.cni.plugin")) for _ in range(count)
    ]
    version_env = {"CNI_COMMAND": "VERSION", "PATH": os.defpath}
    version = [
        timed(lambda: subprocess.run([str(bench.plugin)], input=b"{}", capture_output=True,
                                     env=version_env))
        for _ in range(count)
    ]  # fmt: skip
    agent_add, agent_del = [], []
    for i in range(count):
        netns = f"/run/netns/{bench.pod()}"
        params: dict[str, Any] = {"container_id": f"direct{i}", "ifname": "eth0", "netns": netns}
        params |= {"pod_name": None, "pod_namespace": None, "pools": None, "labels": None}
        agent_add.append(
            timed(lambda p=params: control.call("cni.add", p, socket_path=bench.socket))
        )
        key = {"container_id": f"direct{i}", "ifname": "eth0", "netns": netns}
        agent_del.append(timed(lambda k=key: control.call("cni.del", k, socket_path=bench.socket)))
    med = statistics.median
    return {
        "interpreter_start_ms": round(med(start) * 1000, 1),
        "plugin_imports_ms": round((med(imports) - med(start)) * 1000, 1),
        "version_exec_ms": round(med(version) * 1000, 1),
        "agent_add_ms": round(med(agent_add) * 1000, 1),
        "agent_del_ms": round(med(agent_del) * 1000, 1),
    }


@contextlib.contextmanager
def bench_env() -> Iterator[Bench]:
    tmp = Path(tempfile.mkdtemp(prefix="l3fcni-bench-"))
    bench = Bench(tmp)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="operations per plugin and mode")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0 or not (REFERENCE_DIR / "ptp").exists():
        print("bench/cni.py: needs root and containernetworking-plugins", file=sys.stderr)
        return 2
    with bench_env() as bench:
        seq = sequential(bench, args.count)
        par = concurrent_runs(bench, args.count, args.concurrency)
        parts = breakdown(bench, max(5, args.count // 3))
    report: dict[str, Any] = {"sequential": {}, "concurrent": {}, "breakdown": parts}
    for mode, data in (("sequential", seq), ("concurrent", par)):
        for command in ("ADD", "DEL"):
            l3f, ref = summary(data["l3f"][command]), summary(data["ref"][command])
            report[mode][command] = {
                "l3fabric": l3f,
                "reference": ref,
                "ratio_p50": round(l3f["p50_ms"] / ref["p50_ms"], 2),
            }
    ratio = report["sequential"]["ADD"]["ratio_p50"]
    report["target"] = {"add_p50_ratio_max": TARGET_RATIO, "met": ratio <= TARGET_RATIO}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'mode':<12}{'op':<5}{'l3fabric p50/p90 ms':>22}"
        f"{'ptp+host-local p50/p90':>26}{'ratio':>8}"
    )
    for mode in ("sequential", "concurrent"):
        label = mode if mode == "sequential" else f"{args.concurrency} at once"
        for command in ("ADD", "DEL"):
            row = report[mode][command]
            l3f, ref = row["l3fabric"], row["reference"]
            print(
                f"{label:<12}{command:<5}{l3f['p50_ms']:>12} / {l3f['p90_ms']:<7}"
                f"{ref['p50_ms']:>14} / {ref['p90_ms']:<9}{row['ratio_p50']:>6}x"
            )
    print("\nwhere l3fabric's ADD goes (medians, ms):")
    for key, value in parts.items():
        print(f"  {key:<22}{value}")
    verdict = "met" if report["target"]["met"] else "MISSED"
    print(f"\ntarget ADD p50 <= {TARGET_RATIO}x reference: {verdict} ({ratio}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
