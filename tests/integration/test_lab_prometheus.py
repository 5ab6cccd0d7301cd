"""`l3fabric lab deploy --prometheus`: a Prometheus node on the lab's
management network scrapes every agent; PromQL over its HTTP API sees the
fabric's sessions and routes; destroy leaves nothing, its TSDB included."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from typing import Any

import pytest

from l3fabric.lab.paths import LAB_ROOT
from tests.integration.test_lab import CLAB, assert_destroyed_cleanly, inspect, need
from tests.integration.test_lab import lab_run as lab_run  # the fixture
from tests.nettools import wait_for

pytestmark = pytest.mark.integration
WORKLOADS = 2


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_every_agent_of_the_lab(lab_run: Any) -> None:
    need("nsenter", "unshare", "curl")
    run = lab_run(CLAB / "two-nodes.clab.yml", "prom")
    out = run.ok("deploy", "--workloads", str(WORKLOADS), "--prometheus")
    assert "Prometheus: http://198.19.255.254:9090" in out

    rows = {r["node"]: r for r in inspect(run)}
    assert set(rows) == {"node1", "node2", "prometheus"}
    url = rows["prometheus"]["url"]
    assert url == "http://198.19.255.254:9090"
    assert f"--name {run.name} prometheus -- curl" in rows["prometheus"]["reach"]
    assert rows["node1"]["mgmt_ipv4"] == "198.19.255.2/24"
    assert "198.19.255.3/24" in rows["node2"]["addresses"]
    config = LAB_ROOT / run.name / "clab" / "prometheus" / "config" / "prometheus.yml"
    assert "scrape_interval: 2s" in config.read_text()

    def query(promql: str) -> dict[str, float] | None:
        """{node label or "": value} of an instant query, asked from inside the lab."""
        api = f"{url}/api/v1/query?query={urllib.parse.quote(promql)}"
        proc = run.exec("prometheus", "curl", "-sf", api)
        if proc.returncode != 0:
            return None
        result = json.loads(proc.stdout)["data"]["result"]
        return {r["metric"].get("node", ""): float(r["value"][1]) for r in result}

    up = 'up{job="l3fabric"}'
    wait_for(lambda: query(up) == {"node1": 1.0, "node2": 1.0}, timeout=60, what="both up")
    established = 'sum(l3fabric_bgp_session_state{state="Established"})'
    wait_for(lambda: query(established) == {"": 4.0}, timeout=90, what="4 Established")
    per_family = 2 * WORKLOADS  # a remote node's workloads, v4 and v6
    learned = 'sum(l3fabric_routes_programmed{kind="learned"})'
    wait_for(lambda: query(learned) == {"": 2.0 * per_family}, timeout=90, what="learned routes")
    local = 'sum(l3fabric_routes_programmed{kind="local"})'
    assert query(local) == {"": 2.0 * per_family}
    # Grouped by the node label the scrape config sets.
    by_node = 'sum by (node) (l3fabric_routes_programmed{kind="learned"})'
    assert query(by_node) == {"node1": float(per_family), "node2": float(per_family)}

    state = run.state()
    assert any(p["what"] == "prometheus" for p in state["processes"])
    assert_destroyed_cleanly(run, state)
