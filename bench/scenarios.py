"""The runner's registry: every scenario by name, how it is started in full and
in quick mode, and how its output becomes figures.

The list is explicit. A scenario whose script is not in the checkout is
reported as not available, never searched for. Each script keeps its own
command line and table; the runner only adds its JSON option and reads that.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.runner import Figure, Target, read_figures

Parse = Callable[[str, Path], tuple[tuple[Figure, ...], Any, str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str  # relative to the checkout's root
    about: str
    full: tuple[str, ...]  # arguments, before the JSON ones
    quick: tuple[str, ...]
    parse: Parse
    json_file: bool = True  # --json FILE; else --json prints JSON on stdout
    as_module: bool = True  # python -m bench.NAME (imports bench.*) or python SCRIPT
    timeout_full: float = 3600.0
    timeout_quick: float = 300.0

    def argv(self, python: str, quick: bool, json_path: Path) -> list[str]:
        if self.as_module:
            start = [python, "-m", self.script.removesuffix(".py").replace("/", ".")]
        else:
            start = [python, self.script]
        args = list(self.quick if quick else self.full)
        args += ["--json", str(json_path)] if self.json_file else ["--json"]
        return start + args


# -- adapters for the scripts that print their own tables ------------------------------


def _json_tail(stdout: str) -> Any:
    """The JSON document a script prints after its table."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("[", "{")):
            return json.loads("\n".join(lines[i:]))
    raise ValueError("no JSON in the script's output")


def parse_route_programming(stdout: str, _path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    rows = _json_tail(stdout)
    figures = []
    for row in rows:
        for op, ours, ip_batch, c_writer in (
            ("add", "l3f_add", "ip_add", "c_add"),
            ("delete", "l3f_del", "ip_del", "c_del"),
        ):
            name = f"{row['case']} x {row['size']}, {op}"
            figures.append(
                Figure(
                    name,
                    "routes/s",
                    row[ours],
                    row[c_writer],
                    "C batched-rtnetlink writer",
                    Target(">=", 0.8, "ratio") if row["targeted"] else None,
                    summary="median",
                )
            )
            figures.append(
                Figure(
                    f"{name}, against ip -batch",
                    "routes/s",
                    row[ours],
                    row[ip_batch],
                    "ip -batch",
                    Target(">=", 0.6, "ratio") if row["targeted"] else None,
                    summary="median",
                )
            )
    detail = (
        "The C writer (bench/rtnl_writer.c, built in the run) sends the same requests, "
        "batches and acks as l3fabric's route socket: what it takes is what the kernel "
        "takes, so it is the limit."
    )
    return tuple(figures), rows, detail


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _latency(system: dict[str, Any] | None, key: str) -> list[float]:
    if not system:
        return []
    out = []
    for sample in system.get("latency", []):
        if key == "start_reply":
            if sample["reply_ms"] is not None:
                out.append(sample["add_ms"] + sample["reply_ms"])
        elif sample[key] is not None:
            out.append(sample[key])
    return out


def _bulk(system: dict[str, Any] | None, key: str, attr: str) -> list[float]:
    if not system:
        return []
    return [s[attr] for s in system.get("bulk", {}).get(key, []) if s[attr] is not None]


def parse_convergence(_stdout: str, path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    raw = json.loads(path.read_text())
    l3f, bird = raw.get("l3fabric"), raw.get("bird")
    figures: list[Figure] = []
    for key, what, pct, target in (
        (
            "start_reply",
            "one add: add call start -> ping reply, p50",
            50,
            Target("<=", 1.0, "ratio"),
        ),
        ("reply_ms", "one add: add returned -> ping reply, p50", 50, Target("<=", 15.0)),
        ("reply_ms", "one add: add returned -> ping reply, p99", 99, Target("<=", 60.0)),
        ("add_ms", "one add: the add call itself, p50", 50, None),
    ):
        ours, theirs = _latency(l3f, key), _latency(bird, key)
        figures.append(
            Figure(
                what,
                "ms",
                _pct(ours, pct) if ours else None,
                _pct(theirs, pct) if theirs else None,
                "BIRD 2 node speaker",
                target,
                tuple(ours),
                tuple(theirs),
                f"p{pct} of {len(ours)}",
            )
        )
    sizes = sorted({int(k.split("/")[1]) for k in (l3f or {}).get("bulk", {})})
    for size in sizes:
        for attr, label in (
            ("from_established_s", "from Established"),
            ("from_start_s", "from speaker start"),
        ):
            ours = _bulk(l3f, f"workloads/{size}", attr)
            theirs = _bulk(bird, f"workloads/{size}", attr)
            target = None
            if size == 10_000 and attr == "from_established_s":
                target = Target("<=", 3.0, "ratio")
            figures.append(
                Figure(
                    f"bulk {size} per-workload routes, {label}",
                    "s",
                    statistics.median(ours) if ours else None,
                    statistics.median(theirs) if theirs else None,
                    "BIRD 2 node speaker",
                    target,
                    tuple(ours),
                    tuple(theirs),
                    f"median of {len(ours)}",
                )
            )
        blocks = _bulk(l3f, f"blocks/{size}", "from_established_s")
        figures.append(
            Figure(
                f"bulk {size} workloads in blocks mode, from Established",
                "s",
                statistics.median(blocks) if blocks else None,
                target=Target("<=", 0.5) if size == 10_000 else None,
                samples=tuple(blocks),
                summary=f"median of {len(blocks)}",
            )
        )
    return tuple(figures), raw, ""


def parse_cni(stdout: str, _path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    report = _json_tail(stdout)
    figures = []
    for mode in ("sequential", "concurrent"):
        for command in ("ADD", "DEL"):
            row = report[mode][command]
            target = (
                Target("<=", 2.0, "ratio") if (mode, command) == ("sequential", "ADD") else None
            )
            figures.append(
                Figure(
                    f"CNI {command}, {mode}, exec to result, p50",
                    "ms",
                    row["l3fabric"]["p50_ms"],
                    row["reference"]["p50_ms"],
                    "ptp + host-local",
                    target,
                    summary=f"p50 of {row['l3fabric']['n']}",
                )
            )
    return tuple(figures), report, ""


def parse_figures(_stdout: str, path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    """Our own scenarios write figures in the runner's format."""
    return read_figures(path)


def _p(values: list[float], q: float) -> float | None:
    return _pct(values, q) if values else None


def parse_datastore(_stdout: str, path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    """etcd against the file datastore (the single-machine reference) in the
    same run; neither is an outside baseline, so there are no targets."""
    rows = json.loads(path.read_text())
    by = {row["backend"]: row for row in rows}
    etcd, file = by.get("etcd"), by.get("file")
    if etcd is None or file is None:
        raise ValueError(f"expected file and etcd results, got {sorted(by)}")
    figures = []
    for count, seconds, lat, what in (
        ("single_adds", "single_seconds", "single_latency_ms", "one node"),
        ("parallel_adds", "parallel_seconds", "parallel_latency_ms", "three nodes at once"),
    ):
        rate = [r[count] / r[seconds] if r[seconds] else 0.0 for r in (etcd, file)]
        figures.append(Figure(f"workload adds, {what}, etcd", "adds/s", rate[0], rate[1], "file"))
        figures.append(
            Figure(
                f"workload add latency, {what}, etcd, p50",
                "ms",
                _p(etcd[lat], 50),
                _p(file[lat], 50),
                "file",
                samples=tuple(etcd[lat]),
                baseline_samples=tuple(file[lat]),
                summary=f"p50 of {len(etcd[lat])}",
            )
        )
    joins = [r["join_from_answer_s"] for r in (etcd, file)]
    figures.append(
        Figure(
            "new node on every peer list, from its first answer, etcd",
            "s",
            statistics.median(joins[0]) if joins[0] else None,
            statistics.median(joins[1]) if joins[1] else None,
            "file",
            samples=tuple(joins[0]),
            baseline_samples=tuple(joins[1]),
            summary=f"median of {len(joins[0])}",
        )
    )
    return tuple(figures), rows, "etcd against the file datastore; no targets set."


def parse_dns(stdout: str, _path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    report = _json_tail(stdout)
    load = {row["server"]: row for row in report["load"]}
    figures = []
    for suffix, what in (("", f"{report['window']} in flight"), (" (1 in flight)", "1 in flight")):
        ours, theirs = load[f"l3fabric dns{suffix}"], load[f"dnsmasq{suffix}"]
        for key, unit, label in (("qps", "queries/s", "rate"), ("p50_ms", "ms", "p50"),
                                 ("p99_ms", "ms", "p99")):  # fmt: skip
            figures.append(
                Figure(
                    f"DNS {label}, {what}, {report['workloads']} names",
                    unit,
                    ours[key],
                    theirs[key],
                    "dnsmasq (hosts file)",
                    summary=f"{ours['queries']} queries",
                )
            )
    adds = report["add_to_name"]
    figures.append(
        Figure(
            "workload add returned -> name resolves, p50",
            "ms",
            adds["after_return_p50_ms"],
            summary=f"p50 of {adds['adds']}",
        )
    )
    detail = "dnsmasq's rate is bounded by the one-process Python client (a lower bound)."
    return tuple(figures), report, detail


REGISTRY: tuple[Scenario, ...] = (
    Scenario(
        "route_programming",
        "bench/route_programming.py",
        "10k/50k /32 and /128 add and delete: program() vs a C writer and ip -batch",
        full=("--sizes", "10000,50000", "--repeats", "3"),
        quick=("--sizes", "2000", "--repeats", "1"),
        parse=parse_route_programming,
        json_file=False,
        as_module=False,
        timeout_quick=180,
    ),
    Scenario(
        "convergence",
        "bench/convergence.py",
        "one add -> reachable on the peer; 1k/10k bulk from session start; BIRD 2 beside it",
        full=(),
        quick=("--iterations", "5", "--bulk", "100", "--repeats", "1"),
        parse=parse_convergence,
        timeout_quick=240,
    ),
    Scenario(
        "cni",
        "bench/cni.py",
        "CNI ADD/DEL exec to result vs reference ptp + host-local",
        full=(),
        quick=("--count", "5", "--concurrency", "3"),
        parse=parse_cni,
        json_file=False,
        as_module=False,
        timeout_quick=180,
    ),
    Scenario(
        "dataplane",
        "bench/dataplane.py",
        "iperf3 TCP and ping RTT between workloads on two nodes: l3fabric vs plain veth, VXLAN",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=180,
    ),
    Scenario(
        "learned",
        "bench/learned.py",
        "20k/50k/100k prefixes from one peer: learn, withdraw, CPU, RSS; BIRD 2 node beside it",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=180,
    ),
    Scenario(
        "mesh",
        "bench/mesh.py",
        "full mesh of 10/25/50 nodes: start -> every route everywhere, CPU, RSS; BIRD 2 mesh",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=180,
    ),
    Scenario(
        "mesh-rr",
        "bench/mesh.py",
        "50 nodes peering with 2 BIRD 2 route reflectors instead of a mesh; BIRD 2 nodes beside",
        full=("--sizes", "50", "--reflectors", "2"),
        quick=("--sizes", "4", "--reflectors", "2"),
        parse=parse_figures,
        timeout_quick=180,
    ),
    Scenario(
        "receive",
        "bench/receive.py",
        "the receive path's stages per 10k learned routes and bytes per route, in-process",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=120,
    ),
    Scenario(
        "idle",
        "bench/idle.py",
        "CPU and RSS of a node holding N local and N learned routes, idle; BIRD 2 beside it",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=180,
    ),
    Scenario(
        "datastore",
        "bench/datastore.py",
        "workload adds/s on one and three nodes and node joins, etcd vs the file datastore",
        full=(),
        quick=("--quick",),
        parse=parse_datastore,
    ),
    Scenario(
        "churn",
        "bench/churn.py",
        "workload adds and deletes on one node up to 1,000, p50/p99, file and etcd",
        full=(),
        quick=("--quick",),
        parse=parse_figures,
        timeout_quick=240,
    ),
    Scenario(
        "dns",
        "bench/dns.py",
        "DNS queries/s and p50/p99 with 10k names vs dnsmasq; add -> resolvable name",
        full=(),
        quick=("--quick",),
        parse=parse_dns,
        json_file=False,
    ),
)


def by_name(names: list[str]) -> list[Scenario]:
    known = {s.name: s for s in REGISTRY}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names] if names else list(REGISTRY)
