"""The benchmark runner's model and output: figures with their baseline and
target, the met/missed verdict, the machine, the Markdown table, the plots,
and running one scenario as a child process.

A figure is one number measured in a run with the baseline it is compared
with measured in the same run (so a shared machine's noise hits both), its
raw samples, and the target it is held to. Scenarios write their figures as
JSON (`write_figures`); the runner never computes a number itself beyond the
ratio of a figure to its baseline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

Of = Literal["value", "ratio"]
Op = Literal["<=", ">="]
Status = Literal["ok", "failed", "not available"]


@dataclass(frozen=True)
class Target:
    """`of` is the figure itself or its ratio to the baseline."""

    op: Op
    bound: float
    of: Of = "value"

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"target op must be <= or >=, got {self.op!r}")
        if self.of not in ("value", "ratio"):
            raise ValueError(f"target of must be value or ratio, got {self.of!r}")
        if not math.isfinite(self.bound):
            raise ValueError(f"target bound must be finite, got {self.bound!r}")

    def text(self, unit: str) -> str:
        if self.of == "ratio":
            return f"{self.op} {self.bound:g}x baseline"
        return f"{self.op} {self.bound:g} {unit}".rstrip()

    def holds(self, value: float) -> bool:
        return value <= self.bound if self.op == "<=" else value >= self.bound


@dataclass(frozen=True)
class Figure:
    """One measured number. `value` and `baseline` summarise `samples` and
    `baseline_samples` the way `summary` says (median, p50, ...)."""

    measure: str
    unit: str
    value: float | None
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    samples: tuple[float, ...] = ()
    baseline_samples: tuple[float, ...] = ()
    summary: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        """ "met", "missed", or "" when there is no target. A figure that
        could not be measured misses its target: an absent number meets
        nothing."""
        if self.target is None:
            return ""
        checked = self.ratio if self.target.of == "ratio" else self.value
        if checked is None:
            return "missed"
        return "met" if self.target.holds(checked) else "missed"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Figure:
        target = data.get("target")
        return cls(
            measure=str(data["measure"]),
            unit=str(data.get("unit", "")),
            value=_number(data.get("value"), "value"),
            baseline=_number(data.get("baseline"), "baseline"),
            baseline_name=str(data.get("baseline_name", "")),
            target=Target(target["op"], float(target["bound"]), target.get("of", "value"))
            if target
            else None,
            samples=tuple(float(s) for s in data.get("samples", ())),
            baseline_samples=tuple(float(s) for s in data.get("baseline_samples", ())),
            summary=str(data.get("summary", "")),
            note=str(data.get("note", "")),
        )


def _number(raw: object, key: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"figure {key} must be a finite number or null, got {raw!r}")
    return float(raw)


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    status: Status
    figures: tuple[Figure, ...] = ()
    seconds: float = 0.0
    command: tuple[str, ...] = ()
    detail: str = ""  # why it failed or is not available; parameters of the run
    raw: Any = None  # what the scenario itself wrote (its samples)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["figures"] = [f.to_dict() for f in self.figures]
        return data


def write_figures(path: Path, figures: Iterable[Figure], raw: Any = None, detail: str = "") -> None:
    """What a scenario of ours writes for the runner (its --json FILE)."""
    doc = {"figures": [f.to_dict() for f in figures], "raw": raw, "detail": detail}
    path.write_text(json.dumps(doc, indent=1))


def read_figures(path: Path) -> tuple[tuple[Figure, ...], Any, str]:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("figures"), list):
        raise ValueError(f"{path}: expected an object with a figures list")
    figures = tuple(Figure.from_dict(f) for f in doc["figures"])
    return figures, doc.get("raw"), str(doc.get("detail", ""))


# -- the machine -------------------------------------------------------------------


def _first_line(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _iproute2() -> str:
    line = _first_line(["ip", "-V"])  # "ip utility, iproute2-6.1.0, libbpf 1.1.2"
    return next((part for part in line.split(", ") if part.startswith("iproute2")), line)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "exabgp": _package("exabgp"),
        "pyroute2": _package("pyroute2"),
        "bird": _first_line(["bird", "--version"]).removeprefix("BIRD version "),
        "iproute2": _iproute2(),
        "iperf3": _first_line(["iperf3", "--version"]).split(" (")[0],
        "load_average": list(os.getloadavg()),
    }


# -- the table ---------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """Three significant digits, no exponent for the sizes benchmarks give."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def figure_row(figure: Figure) -> list[str]:
    ratio = figure.ratio
    baseline = fmt(figure.baseline)
    if figure.baseline is not None and figure.baseline_name:
        baseline = f"{baseline} ({figure.baseline_name})"
    verdict = figure.verdict
    if verdict == "missed":
        verdict = "**missed**"
    measure = f"{figure.measure}, {figure.unit}" if figure.unit else figure.measure
    if figure.summary:
        measure += f" ({figure.summary})"
    return [
        measure,
        fmt(figure.value),
        baseline,
        f"{ratio:.2f}x" if ratio is not None else "-",
        figure.target.text(figure.unit) if figure.target else "-",
        verdict or "-",
    ]


HEADER = ("measure", "l3fabric", "baseline (same run)", "ratio", "target", "result")


def markdown(results: Sequence[ScenarioResult], info: dict[str, Any], quick: bool) -> str:
    lines = [f"# Benchmark results{' (quick mode: small sizes, not comparable)' if quick else ''}"]
    lines.append("")
    lines.append(
        f"Machine: {info.get('cores')} cores ({info.get('cpu')}), {info.get('memory_gb')} GB, "
        f"Linux {info.get('kernel')}, Python {info.get('python')}, ExaBGP {info.get('exabgp')}, "
        f"BIRD {info.get('bird')}, {info.get('iproute2')}, {info.get('iperf3')}; load average at "
        f"the start {', '.join(f'{x:.2f}' for x in info.get('load_average', []))}."
    )
    ok = [r for r in results if r.status == "ok"]
    met = sum(1 for r in ok for f in r.figures if f.verdict == "met")
    missed = [(r.name, f) for r in ok for f in r.figures if f.verdict == "missed"]
    lines.append("")
    lines.append(f"Targets: {met} met, {len(missed)} missed.")
    for name, figure in missed:
        lines.append(f"- missed: {name}: {figure.measure} ({figure_row(figure)[4]})")
    for result in results:
        if result.status != "ok":
            lines.append(f"- {result.status}: {result.name}: {result.detail}")
    for result in results:
        lines.append("")
        lines.append(f"## {result.name} ({result.status}, {result.seconds:.0f} s)")
        if result.detail:
            lines.append("")
            lines.append(result.detail)
        if result.status != "ok":
            continue
        lines.append("")
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "---|" * len(HEADER))
        for figure in result.figures:
            lines.append("| " + " | ".join(figure_row(figure)) + " |")
        notes = [f"- {f.measure}: {f.note}" for f in result.figures if f.note]
        if notes:
            lines.append("")
            lines.extend(notes)
    return "\n".join(lines) + "\n"


def check_honest(result: ScenarioResult) -> list[str]:
    """What makes a scenario's output untrustworthy, whatever its numbers:
    no figures, a baseline named but not measured, a ratio target without a
    baseline, or summaries without the samples behind them."""
    if result.status != "ok":
        return []  # reported as failed or not available instead
    problems = []
    if not result.figures:
        problems.append(f"{result.name}: no figures")
    for f in result.figures:
        if f.baseline_name and f.baseline is None and "not measured" not in f.note:
            problems.append(f"{result.name}: {f.measure}: baseline {f.baseline_name} missing")
        if f.target is not None and f.target.of == "ratio" and not f.baseline_name:
            problems.append(f"{result.name}: {f.measure}: ratio target without a baseline")
        if f.value is not None and f.samples and not min(f.samples) <= f.value <= max(f.samples):
            problems.append(f"{result.name}: {f.measure}: value outside its samples")
    return problems


# -- plots -------------------------------------------------------------------------


def plot(result: ScenarioResult, path: Path) -> bool:
    """One horizontal bar pair per figure that has a baseline, each bar
    scaled to the larger of the two (units differ between figures), with
    the samples as dots. Returns False when there is nothing to draw."""
    figures = [f for f in result.figures if f.value is not None and f.baseline is not None]
    if not figures:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 0.8 + 0.45 * len(figures)
    fig, ax = plt.subplots(figsize=(12, height))
    labels = []
    for i, f in enumerate(figures):
        assert f.value is not None and f.baseline is not None
        scale = max(abs(f.value), abs(f.baseline)) or 1.0
        y = len(figures) - 1 - i
        ax.barh(y + 0.18, f.value / scale, height=0.34, color="#1f77b4")
        ax.barh(y - 0.18, f.baseline / scale, height=0.34, color="#aaaaaa")
        for s in f.samples:
            ax.plot(s / scale, y + 0.18, "k.", markersize=3)
        for s in f.baseline_samples:
            ax.plot(s / scale, y - 0.18, "k.", markersize=3)
        ratio = f.ratio
        text = f"{fmt(f.value)} vs {fmt(f.baseline)} {f.unit}"
        if ratio is not None:
            text += f" ({ratio:.2f}x)"
        if f.verdict:
            text += f" {f.verdict}"
        ax.text(1.02, y, text, va="center", fontsize=7)
        labels.append((y, f.measure))
    short = [m if len(m) <= 44 else m[:43] + "..." for _, m in labels]
    ax.set_yticks([y for y, _ in labels], short, fontsize=7)
    ax.set_xlim(0, 1.9)
    ax.set_xticks([0, 0.5, 1.0])
    ax.set_xlabel("relative to the larger of the pair (blue l3fabric, grey baseline)")
    ax.set_title(result.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- running one scenario ------------------------------------------------------------


@dataclass
class Child:
    """A scenario process of ours; stopped by its PID on Ctrl-C or a timeout.
    SIGTERM first: every bench script removes its namespaces and processes
    on SIGTERM; SIGKILL only if it does not finish within `grace`."""

    argv: Sequence[str]
    log_prefix: str
    stderr_log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    grace: float = 180.0
    timed_out: bool = field(default=False, init=False)
    _proc: subprocess.Popen[str] | None = field(default=None, init=False)

    def run(self, timeout: float, on_line: Callable[[str], None]) -> tuple[int, str]:
        # Own process group so a terminal's Ctrl-C reaches the runner only,
        # which then stops the child in order (below).
        self._proc = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        out: list[str] = []
        assert self._proc.stdout is not None and self._proc.stderr is not None
        reader = threading.Thread(target=lambda: out.append(self._proc.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        deadline = time.monotonic() + timeout
        with open(self.stderr_log, "w") as log:
            stderr = self._proc.stderr

            def pump() -> None:
                for line in stderr:
                    log.write(line)
                    log.flush()
                    on_line(line.rstrip("\n"))

            pumper = threading.Thread(target=pump, daemon=True)
            pumper.start()
            try:
                while self._proc.poll() is None:
                    if time.monotonic() > deadline:
                        on_line(f"timed out after {timeout:.0f} s; stopping it")
                        self.timed_out = True
                        self.stop()
                        break
                    time.sleep(0.2)
            except BaseException:
                self.stop()
                raise
            finally:
                reader.join(timeout=self.grace)
                pumper.join(timeout=5)
        return self._proc.wait(), "".join(out)

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def progress(message: str) -> None:
    print(time.strftime("%H:%M:%S ") + message, file=sys.stderr, flush=True)
