"""python -m bench [SCENARIO ...] [--quick] [--out DIR]: every benchmark in one
run, each with its baseline measured in the same run; results.json (raw
samples and the machine), results.md (the table) and one PNG per scenario.

Run from the root of a checkout, as root (the scenarios make network
namespaces; each removes its own namespaces and processes, also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from bench.runner import (
    Child,
    ScenarioResult,
    check_honest,
    machine,
    markdown,
    plot,
    progress,
)
from bench.scenarios import REGISTRY, Scenario, by_name

ROOT = Path(__file__).resolve().parent.parent


def run_one(scenario: Scenario, quick: bool, out: Path) -> ScenarioResult:
    script = ROOT / scenario.script
    if not script.exists():
        return ScenarioResult(scenario.name, "not available", detail=f"{scenario.script} is absent")
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    json_path = logs / f"{scenario.name}.json"
    argv = scenario.argv(sys.executable, quick, json_path)
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    child = Child(argv, scenario.name, logs / f"{scenario.name}.stderr", env=env, cwd=ROOT)

    def on_line(line: str) -> None:
        progress(f"[{scenario.name} {time.monotonic() - started:4.0f}s] {line}")

    timeout = scenario.timeout_quick if quick else scenario.timeout_full
    code, stdout = child.run(timeout, on_line)
    seconds = time.monotonic() - started
    (logs / f"{scenario.name}.stdout").write_text(stdout)
    command = tuple(a if a != sys.executable else "python" for a in argv)
    try:
        figures, raw, detail = scenario.parse(stdout, json_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"exit status {code}; its output could not be read: {exc!r}"
        return ScenarioResult(scenario.name, "failed", (), seconds, command, why)
    # A script that says its target was missed exits 1 with its numbers;
    # any other exit is a failure even if it printed something.
    if child.timed_out:
        why = f"timed out after {timeout:.0f} s"
        return ScenarioResult(scenario.name, "failed", figures, seconds, command, why, raw)
    if code not in (0, 1):
        why = f"exit status {code}; see logs/{scenario.name}.stderr"
        return ScenarioResult(scenario.name, "failed", figures, seconds, command, why, raw)
    return ScenarioResult(scenario.name, "ok", figures, seconds, command, detail, raw)


def main(argv: list[str] | None = None) -> int:
    names = ", ".join(s.name for s in REGISTRY)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {names}")
    parser.add_argument("--quick", action="store_true", help="every scenario small (CI)")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/DATE)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for s in REGISTRY:
            state = "" if (ROOT / s.script).exists() else "  (not available)"
            print(f"{s.name:<20} {s.about}{state}")
        return 0
    try:
        chosen = by_name(args.scenarios)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if os.geteuid() != 0:
        parser.error("needs root: the scenarios create network namespaces")
    stamp = datetime.date.today().isoformat() + ("-quick" if args.quick else "")
    out: Path = args.out or ROOT / "bench" / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.monotonic()
    results: list[ScenarioResult] = []
    for i, scenario in enumerate(chosen, 1):
        progress(f"scenario {i}/{len(chosen)}: {scenario.name}: {scenario.about}")
        result = run_one(scenario, args.quick, out)
        progress(f"scenario {scenario.name}: {result.status} in {result.seconds:.0f} s")
        results.append(result)
        write(out, results, info, args.quick, time.monotonic() - started)
    problems = [p for r in results for p in check_honest(r)]
    failed = [r.name for r in results if r.status == "failed"]
    for problem in problems:
        progress(f"not honest: {problem}")
    progress(f"done in {time.monotonic() - started:.0f} s; results in {out}")
    print((out / "results.md").read_text())
    return 1 if failed or problems else 0


def write(
    out: Path, results: list[ScenarioResult], info: dict[str, object], quick: bool, seconds: float
) -> None:
    """Written after every scenario, so an interrupted run keeps what it has."""
    doc = {
        "quick": quick,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": info,
        "scenarios": [r.to_dict() for r in results],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1))
    (out / "results.md").write_text(markdown(results, info, quick))
    for result in results:
        if result.status == "ok":
            plot(result, out / f"{result.name}.png")


if __name__ == "__main__":
    sys.exit(main())
