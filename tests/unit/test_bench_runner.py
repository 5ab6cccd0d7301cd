"""The benchmark runner's pure parts: verdicts, the table, the registry and
reading scenario output. Nothing here runs a benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import scenarios
from bench.churn import CALICO_CNI_ADD_MS, Phases
from bench.churn import figures as churn_figures
from bench.runner import (
    Figure,
    ScenarioResult,
    Target,
    check_honest,
    figure_row,
    fmt,
    markdown,
    read_figures,
    write_figures,
)

MACHINE = {
    "cores": 2,
    "cpu": "test cpu",
    "memory_gb": 1.0,
    "kernel": "6.1",
    "python": "3.11",
    "exabgp": "5.0",
    "bird": "2.0.12",
    "iproute2": "iproute2-6.1.0",
    "iperf3": "iperf 3.12",
    "load_average": [1.0, 2.0, 3.0],
}


def test_ratio_target_met_and_missed() -> None:
    target = Target(">=", 0.8, "ratio")
    assert Figure("add", "routes/s", 90.0, 100.0, "C", target).verdict == "met"
    assert Figure("add", "routes/s", 70.0, 100.0, "C", target).verdict == "missed"
    assert Figure("add", "routes/s", 80.0, 100.0, "C", target).verdict == "met"  # bound included


def test_value_target_and_no_target() -> None:
    assert Figure("p50", "ms", 16.0, target=Target("<=", 15.0)).verdict == "missed"
    assert Figure("p50", "ms", 15.0, target=Target("<=", 15.0)).verdict == "met"
    assert Figure("p50", "ms", 3.0).verdict == ""


def test_unmeasured_figure_misses_its_target() -> None:
    assert Figure("p50", "ms", None, target=Target("<=", 15.0)).verdict == "missed"
    no_baseline = Figure("x", "s", 1.0, None, "BIRD", Target("<=", 3.0, "ratio"))
    assert no_baseline.ratio is None and no_baseline.verdict == "missed"


def test_zero_baseline_has_no_ratio() -> None:
    assert Figure("x", "s", 1.0, 0.0, "BIRD").ratio is None


def test_target_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="op"):
        Target("<", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="of"):
        Target("<=", 1.0, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        Target("<=", math.nan)


def test_row_states_missed_plainly() -> None:
    target = Target("<=", 3.0, "ratio")
    figure = Figure("bulk 10000", "s", 0.9, 0.1, "BIRD", target, summary="median")
    assert figure_row(figure) == [
        "bulk 10000, s (median)",
        "0.9",
        "0.1 (BIRD)",
        "9.00x",
        "<= 3x baseline",
        "**missed**",
    ]


def test_fmt() -> None:
    assert fmt(None) == "-"
    assert fmt(188296.4) == "188,296"
    assert fmt(123.4) == "123"
    assert fmt(12.34) == "12.3"
    assert fmt(1.234) == "1.23"
    assert fmt(0.01234) == "0.0123"


def test_markdown_lists_misses_and_unavailable() -> None:
    results = [
        ScenarioResult(
            "conv",
            "ok",
            (
                Figure("a", "ms", 1.0, 2.0, "BIRD", Target("<=", 1.0, "ratio")),
                Figure("b", "s", 9.0, 1.0, "BIRD", Target("<=", 3.0, "ratio"), note="why"),
            ),
            12.0,
        ),
        ScenarioResult("dns", "not available", detail="bench/dns.py is absent"),
        ScenarioResult(
            "mesh",
            "failed",
            (Figure("c", "s", 9.0, None, "BIRD", Target("<=", 3.0, "ratio")),),
            detail="timed out after 180 s",
        ),
    ]
    text = markdown(results, MACHINE, quick=True)
    assert "quick mode" in text
    assert "Targets: 1 met, 1 missed." in text
    assert "- missed: conv: b (<= 3x baseline)" in text
    assert "## dns (not available, 0 s)" in text
    assert "- failed: mesh: timed out after 180 s" in text
    assert "- not available: dns: bench/dns.py is absent" in text
    assert "bench/dns.py is absent" in text
    assert "| b, s | 9.00 | 1.00 (BIRD) | 9.00x | <= 3x baseline | **missed** |" in text
    assert "- b: why" in text
    assert "2 cores (test cpu)" in text


def test_figures_round_trip(tmp_path: Path) -> None:
    figure = Figure(
        "tcp",
        "Gbit/s",
        11.8,
        12.1,
        "plain veth",
        Target(">=", 0.97, "ratio"),
        (11.0, 11.8, 12.0),
        (12.1, 12.2, 12.0),
        "median of 3",
        "MTU 1500",
    )
    path = tmp_path / "f.json"
    write_figures(path, [figure], raw={"x": 1}, detail="d")
    assert read_figures(path) == ((figure,), {"x": 1}, "d")
    assert json.loads(path.read_text())["figures"][0]["verdict"] == "met"  # 0.975x


def test_figure_from_dict_refuses_non_numbers() -> None:
    with pytest.raises(ValueError, match="value"):
        Figure.from_dict({"measure": "m", "value": "fast"})
    with pytest.raises(ValueError, match="baseline"):
        Figure.from_dict({"measure": "m", "value": 1, "baseline": math.inf})


def test_check_honest() -> None:
    good = ScenarioResult("s", "ok", (Figure("m", "s", 2.0, 1.0, "BIRD", samples=(1.0, 3.0)),))
    assert check_honest(good) == []
    empty = ScenarioResult("s", "ok")
    assert check_honest(empty) == ["s: no figures"]
    assert check_honest(ScenarioResult("s", "failed")) == []  # reported as failed
    lying = ScenarioResult(
        "s",
        "ok",
        (
            Figure("m", "s", 2.0, None, "BIRD"),
            Figure("n", "s", 2.0, target=Target("<=", 1.0, "ratio")),
            Figure("o", "s", 5.0, samples=(1.0, 2.0)),
        ),
    )
    assert check_honest(lying) == [
        "s: m: baseline BIRD missing",
        "s: n: ratio target without a baseline",
        "s: o: value outside its samples",
    ]


def test_registry_is_explicit_and_unique() -> None:
    names = [s.name for s in scenarios.REGISTRY]
    assert len(names) == len(set(names))
    for name in ("route_programming", "convergence", "cni", "datastore", "dns"):
        assert name in names
    root = Path(scenarios.__file__).resolve().parent.parent
    for s in scenarios.REGISTRY:
        assert s.script.startswith("bench/") and s.script.endswith(".py")
        if s.name in ("route_programming", "convergence"):
            assert (root / s.script).exists()


def test_by_name() -> None:
    assert [s.name for s in scenarios.by_name([])] == [s.name for s in scenarios.REGISTRY]
    assert [s.name for s in scenarios.by_name(["convergence"])] == ["convergence"]
    with pytest.raises(KeyError, match="nosuch"):
        scenarios.by_name(["nosuch"])


def test_argv_keeps_the_scripts_command_lines(tmp_path: Path) -> None:
    (rp,) = scenarios.by_name(["route_programming"])
    assert rp.argv("py", True, tmp_path / "x.json") == [
        "py",
        "bench/route_programming.py",
        "--sizes",
        "2000",
        "--repeats",
        "1",
        "--json",
    ]
    (conv,) = scenarios.by_name(["convergence"])
    argv = conv.argv("py", False, tmp_path / "x.json")
    assert argv == ["py", "-m", "bench.convergence", "--json", str(tmp_path / "x.json")]


def test_parse_route_programming_reads_the_json_after_the_table(tmp_path: Path) -> None:
    rows = [
        {
            "case": "v4-32-dev",
            "size": 10000,
            "targeted": True,
            "ip_add": 100.0,
            "l3f_add": 50.0,
            "ip_del": 100.0,
            "l3f_del": 70.0,
            "l3f_dump_s": 0.1,
            "c_add": 60.0,
            "c_del": 100.0,
        }
    ]
    stdout = "batch size 512\ncase N\n-----\nv4-32-dev ...\n" + json.dumps(rows, indent=2)
    figures, raw, _ = scenarios.parse_route_programming(stdout, tmp_path / "unused")
    assert raw == rows
    # Against the C writer (the limit, >= 0.8x) and against ip -batch (>= 0.6x).
    assert [(f.measure, f.baseline_name, f.verdict) for f in figures] == [
        ("v4-32-dev x 10000, add", "C batched-rtnetlink writer", "met"),
        ("v4-32-dev x 10000, add, against ip -batch", "ip -batch", "missed"),
        ("v4-32-dev x 10000, delete", "C batched-rtnetlink writer", "missed"),
        ("v4-32-dev x 10000, delete, against ip -batch", "ip -batch", "met"),
    ]


def test_parse_convergence(tmp_path: Path) -> None:
    def system(add: float, reply: float, bulk: float) -> dict[str, object]:
        return {
            "latency": [{"add_ms": add, "reply_ms": reply, "route_ms": 1.0}] * 3,
            "bulk": {"workloads/10000": [{"from_established_s": bulk, "from_start_s": bulk + 1}]},
        }

    path = tmp_path / "conv.json"
    doc = {"l3fabric": system(18.0, 3.0, 0.9), "bird": system(20.0, 0.5, 0.1)}
    path.write_text(json.dumps(doc))
    figures, _, _ = scenarios.parse_convergence("", path)
    by = {f.measure: f for f in figures}
    start = by["one add: add call start -> ping reply, p50"]
    assert (start.value, start.baseline, start.verdict) == (21.0, 20.5, "missed")
    assert by["bulk 10000 per-workload routes, from Established"].verdict == "missed"
    blocks = by["bulk 10000 workloads in blocks mode, from Established"]
    assert blocks.value is None and blocks.verdict == "missed"


def test_churn_figures_are_honest_and_hold_the_add_to_the_anchor() -> None:
    phases = Phases("file", 4, fill_s=0.2, add_ms=[10.0, 20.0, 30.0, 40.0], churn_s=0.1,
                    churn_add_ms=[25.0], churn_delete_ms=[35.0], drain_s=0.4,
                    delete_ms=[50.0, 60.0, 70.0, 80.0])  # fmt: skip
    found = churn_figures([phases])
    assert check_honest(ScenarioResult("churn", "ok", tuple(found))) == []
    by_measure = {f.measure: f for f in found}
    assert by_measure["file: adds from 0 to 4 workloads"].value == pytest.approx(20.0)
    assert by_measure["file: deletes from 4 to 0 workloads"].value == pytest.approx(10.0)
    p50 = by_measure["file: one add, p50"]
    assert p50.value == 30.0 and p50.target == Target("<=", CALICO_CNI_ADD_MS)
    assert p50.verdict == "missed"
    assert by_measure["file: delete and add at 4 workloads"].value == pytest.approx(10.0)
