"""The operator docs stay true to the code: every exported metric is in
docs/metrics.md under its exposed name and nothing else is, the Grafana
dashboard queries only metrics that exist, and every CLI subcommand has a
section in docs/cli.md."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from l3fabric.agent.metrics import Metrics
from l3fabric.cli import lab as cli_lab
from l3fabric.cli.main import build_parser

DOCS = Path(__file__).resolve().parents[2] / "docs"
METRIC_NAME = re.compile(r"\bl3fabric_[a-z0-9_]*[a-z0-9]")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exposed_families() -> dict[str, str]:
    """Exposed family name -> type, from the `# TYPE` lines of a scrape of a
    fresh registry (so `_total` and `_info` are as Prometheus sees them)."""
    text = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    families = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    # prometheus_client's creation-time companions of counters and histograms.
    return {
        name: kind
        for name, kind in families.items()
        if not (name.endswith("_created") and _created_base(name, families))
    }


def _created_base(name: str, families: dict[str, str]) -> bool:
    base = name.removesuffix("_created")
    return families.get(base) == "histogram" or families.get(base + "_total") == "counter"


def series_names(families: dict[str, str]) -> set[str]:
    """Every name a query may use: families, histogram series, _created."""
    names = set(families)
    for name, kind in families.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in (*HISTOGRAM_SERIES, "_created"))
        elif kind == "counter":
            names.add(name.removesuffix("_total") + "_created")
    return names


def test_registry_exposes_every_metric_with_its_conventional_suffix() -> None:
    families = exposed_families()
    metrics = Metrics(CollectorRegistry())
    declared = {family.name for family in metrics.registry.collect()}
    assert len(families) == len(declared) >= 20
    assert all(name.startswith("l3fabric_") for name in families)
    for name, kind in families.items():
        if kind == "counter":
            assert name.endswith("_total"), name
    assert families["l3fabric_build_info"] == "gauge"


def test_every_metric_is_documented_by_its_exposed_name() -> None:
    doc = (DOCS / "metrics.md").read_text()
    table_names = set(re.findall(r"^\| `(l3fabric_[a-z0-9_]+)` \|", doc, re.MULTILINE))
    missing = set(exposed_families()) - table_names
    assert not missing, f"metrics without a row in docs/metrics.md: {sorted(missing)}"


def test_metrics_doc_names_only_metrics_that_exist() -> None:
    doc = (DOCS / "metrics.md").read_text()
    known = series_names(exposed_families())
    unknown = set(METRIC_NAME.findall(doc)) - known
    assert not unknown, f"docs/metrics.md names metrics that do not exist: {sorted(unknown)}"


def test_metrics_doc_rows_have_the_exposed_type() -> None:
    doc = (DOCS / "metrics.md").read_text()
    families = exposed_families()
    for name, kind in re.findall(r"^\| `(l3fabric_[a-z0-9_]+)` \| ([a-z]+)", doc, re.MULTILINE):
        assert families[name] == kind, f"{name}: documented as {kind}, exposed as {families[name]}"


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DOCS / "grafana-dashboard.json").read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    data = dashboard()
    queries = [
        (f"panel {p.get('title')!r}", target["expr"])
        for p in panels(data["panels"])
        for target in p.get("targets", [])
    ]
    for var in data["templating"]["list"]:
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if var.get("type") == "query" and text:
            queries.append((f"variable {var['name']!r}", text))
    return queries


def test_dashboard_is_an_importable_l3fabric_dashboard() -> None:
    data = dashboard()
    assert data["title"] == "l3fabric" and data["uid"]
    assert 36 <= data["schemaVersion"] <= 39
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert "instance" in variables or "node" in variables
    ids = [p["id"] for p in panels(data["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_dashboard_panel_has_a_title_and_the_input_datasource() -> None:
    for panel in panels(dashboard()["panels"]):
        assert panel.get("title"), f"panel {panel.get('id')} has no title"
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel[
            "title"
        ]
        assert panel.get("targets"), f"panel {panel['title']!r} has no queries"
        for target in panel["targets"]:
            assert target.get("expr") and target.get("refId"), panel["title"]


def test_dashboard_queries_use_only_metrics_that_exist() -> None:
    known = series_names(exposed_families())
    histograms = {n for n, kind in exposed_families().items() if kind == "histogram"}
    for where, expr in dashboard_queries():
        names = set(METRIC_NAME.findall(expr))
        assert names, f"{where}: queries no l3fabric metric: {expr}"
        assert names <= known, f"{where}: unknown metrics {sorted(names - known)}"
        assert not names & histograms, f"{where}: a histogram needs _bucket/_sum/_count: {expr}"


def test_dashboard_covers_the_metrics_operators_need() -> None:
    used = {name for _where, expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    for needed in (
        "l3fabric_bgp_session_state",
        "l3fabric_bgp_session_flaps_total",
        "l3fabric_bgp_prefixes",
        "l3fabric_bgp_prefixes_rejected",
        "l3fabric_routes_programmed",
        "l3fabric_route_program_batch_seconds_bucket",
        "l3fabric_reconcile_duration_seconds_bucket",
        "l3fabric_reconcile_errors_total",
        "l3fabric_reconcile_drift_repaired_total",
        "l3fabric_workloads",
        "l3fabric_ipam_addresses_in_use",
        "l3fabric_exabgp_restarts_total",
        "l3fabric_config_reload_errors_total",
    ):
        assert needed in used, f"the dashboard has no panel on {needed}"


def _as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by values Prometheus accepts."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace('"$instance"', '".*"')
        .replace("$instance", ".*")
    )


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus) is not installed")
def test_dashboard_and_doc_queries_parse_as_promql(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    rules = [
        {"record": f"l3fabric:dashboard_query_{i}", "expr": _as_plain_promql(expr)}
        for i, (_where, expr) in enumerate(dashboard_queries())
        if not expr.startswith("label_values(")
    ]
    doc = (DOCS / "metrics.md").read_text()
    alerts = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
        if block.startswith("groups:")
    ]
    assert len(alerts) == 1, "docs/metrics.md should hold one alert rules example"
    groups = yaml.safe_load(alerts[0])["groups"]
    alert_exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    known = series_names(exposed_families())
    for expr in alert_exprs:
        assert set(METRIC_NAME.findall(expr)) <= known, expr
    groups.append({"name": "dashboard", "rules": rules})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def subcommands(parser: argparse.ArgumentParser, prefix: str = "l3fabric") -> Iterator[str]:
    """Every leaf command, as typed: 'l3fabric status', 'l3fabric ipam show'."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield prefix
    for action in actions:
        for name, child in action.choices.items():
            yield from subcommands(child, f"{prefix} {name}")


def lab_subcommands() -> list[str]:
    """`l3fabric lab ...`, whether or not build_parser() registers it yet."""
    parser = argparse.ArgumentParser(prog="l3fabric")
    cli_lab.register(parser.add_subparsers(dest="command"))
    return list(subcommands(parser))


def sections(doc: str) -> dict[str, str]:
    """Heading command ('l3fabric ipam show') -> the text of its section."""
    found: dict[str, str] = {}
    parts = re.split(r"^(#{2,4} .*)$", doc, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        match = re.fullmatch(r"#{2,4} `(l3fabric [^`]+)`", heading.strip())
        if match:
            found[match.group(1)] = " ".join(body.split())
    return found


def test_every_cli_subcommand_has_a_section_in_cli_md() -> None:
    commands = list(subcommands(build_parser())) + lab_subcommands()
    assert {"l3fabric status", "l3fabric workload add", "l3fabric lab deploy"} <= set(commands)
    documented = sections((DOCS / "cli.md").read_text())
    missing = []
    for command in commands:
        words = command.split()
        # Its own section, or a group's section (`l3fabric lab`) that shows
        # the command's synopsis.
        groups = [" ".join(words[:n]) for n in range(2, len(words))]
        if command not in documented and not any(
            g in documented and command in documented[g] for g in groups
        ):
            missing.append(command)
    assert not missing, f"docs/cli.md has no section for: {missing}"


# Flags every agent-facing command shares, documented once under Conventions.
SHARED_FLAGS = ("--socket", "--output")


def test_cli_md_documents_every_flag_of_the_agent_commands() -> None:
    doc = (DOCS / "cli.md").read_text()
    documented = sections(doc)
    conventions = doc[doc.index("## Conventions") : doc.index("## `l3fabric agent`")]
    for flag in (*SHARED_FLAGS, "--debug", "--version", "L3FABRIC_SOCKET"):
        assert flag in conventions, f"{flag} is not explained under Conventions"
    for command, parser in leaf_parsers(build_parser()).items():
        if command.startswith("l3fabric bird"):
            continue  # its flags are documented in docs/bird.md
        words = command.split()
        # Its own section, else its group's (`l3fabric lab`).
        text = next(
            documented[" ".join(words[:n])]
            for n in range(len(words), 1, -1)
            if " ".join(words[:n]) in documented
        )
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", *SHARED_FLAGS):
                    assert flag in text, f"{command}: {flag} is not in its section"


def leaf_parsers(
    parser: argparse.ArgumentParser, prefix: str = "l3fabric"
) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        return {prefix: parser}
    found: dict[str, argparse.ArgumentParser] = {}
    for action in actions:
        for name, child in action.choices.items():
            found.update(leaf_parsers(child, f"{prefix} {name}"))
    return found
