"""`lab status` and `lab graph --html` on a deployed lab (two-nodes, the
smallest): the view against what the agents say, then one agent stopped by
its PID: that node is shown down and the rest is still there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_lab import (
    L3FABRIC,
    LabRun,
    copy_topology,
    kill_daemon,
    lab_run,
    need,
    set_node_key,
    wait_agents_ready,
)
from tests.nettools import wait_for

__all__ = ["lab_run"]  # the fixture, used by name

pytestmark = pytest.mark.integration


def status_rows(run: LabRun) -> tuple[int, list[dict[str, Any]]]:
    proc = run.cli("status", "-o", "json")
    assert proc.returncode in (0, 1), proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return proc.returncode, rows


def test_status_and_html_graph_against_the_agents(lab_run: Any, tmp_path: Path) -> None:
    need("nsenter", "unshare")
    topology = copy_topology("two-nodes", tmp_path)
    # Not restarted once stopped, so the test sees it down.
    set_node_key(topology, "node2", "restart-policy", "no")
    run = lab_run(topology, "st")
    never = run.cli("status")
    assert never.returncode == 1 and "not deployed" in never.stderr, never.stderr
    run.ok("deploy", "--workloads", "2")
    wait_agents_ready(run, ["node1", "node2"])

    def all_well() -> list[dict[str, Any]] | None:
        code, rows = status_rows(run)
        return rows if code == 0 else None

    rows = {r["name"]: r for r in wait_for(all_well, timeout=60, interval=1, what="lab status 0")}
    assert set(rows) == {"node1", "node2"}
    for name in ("node1", "node2"):
        row = rows[name]
        agent = json.loads(run.exec(name, *L3FABRIC, "status", "-o", "json").stdout)
        assert row["kind"] == "l3fabric" and row["role"] == "l3fabric node"
        assert row["state"] == "running" and row["answers"] is True
        assert row["asn"] == agent["asn"] == 64512
        assert row["peers_total"] == len(agent["peers"]) == 2  # IPv4 and IPv6
        assert row["peers_up"] == 2
        listed = json.loads(run.exec(name, *L3FABRIC, "workload", "list", "-o", "json").stdout)
        assert row["workloads"] == len(listed) == 2
        # The other node's two workloads, each over both families.
        assert row["routes_in"] is not None and row["routes_in"] >= 2
        assert row["routes_out"] is not None and row["routes_out"] >= 2
    table = run.ok("status")
    assert table.splitlines()[0].split()[:4] == ["NODE", "KIND", "ROLE", "STATE"]

    html = tmp_path / "fabric.html"
    run.ok("graph", "--html", str(html))
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert 'id="node-node1"' in page and 'id="node-node2"' in page
    assert "<script" not in page and "href=" not in page

    kill_daemon(run, "node2", "agent")
    code, after = status_rows(run)
    assert code == 1
    by_name = {r["name"]: r for r in after}
    assert set(by_name) == {"node1", "node2"}
    down = by_name["node2"]
    assert down["state"] == "exited (agent)" and down["answers"] is False
    assert down["peers_total"] is None and down["error"]
    assert by_name["node1"]["answers"] is True and by_name["node1"]["workloads"] == 2
    text = run.cli("status").stdout
    assert "exited (agent)" in text and "node1" in text

    run.ok("graph", "--html", str(html), "-o", str(tmp_path / "fabric.svg"))
    page = html.read_text()
    assert 'id="node-node1"' in page and 'id="node-node2"' in page
    assert "exited (agent)" in page
    svg = (tmp_path / "fabric.svg").read_text()
    assert 'class="node l3fabric down"' in svg and "exited (agent)" in svg
    run.ok("destroy")
