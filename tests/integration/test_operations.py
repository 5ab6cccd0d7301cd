"""What operators and their monitoring see: the peer table, the JSON forms,
health probes, Prometheus metrics (checked by promtool and scraped by a real
Prometheus server)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentlab import MESH_BGP, AgentNode, start_mesh
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

WORKLOADS = {1: 2, 2: 3}  # workloads per node


def http_get(ns: str, url: str) -> tuple[int, str]:
    """GET from inside a namespace (the agent's HTTP listens there)."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    out = ns_run(ns, [sys.executable, "-c", code, url])
    status, _, body = out.partition("\n")
    return int(status), body


@pytest.fixture
def fabric(netns: Namespaces, procs: Processes, tmp_path: Path) -> list[AgentNode]:
    nodes = start_mesh(
        netns,
        procs,
        tmp_path,
        extra=lambda i: {"bgp": MESH_BGP, "metrics": {"listen": f"198.18.0.{i}:9641"}},
    )
    for node in nodes:
        for w in range(WORKLOADS[int(node.name[-1])]):
            ns = netns.add("w")
            node.cli_json("workload", "add", f"{node.name}-w{w}", "--netns", ns)
    return nodes


def peer_row(node: AgentNode, peer: str) -> dict[str, Any]:
    return next(p for p in node.status()["peers"] if p["peer"] == peer)


def test_peer_table_counts_and_state_changes(fabric: list[AgentNode]) -> None:
    n1, n2 = fabric
    wait_for(
        lambda: (
            peer_row(n1, "198.18.0.2")["received"] == WORKLOADS[2]
            and peer_row(n2, "198.18.0.1")["received"] == WORKLOADS[1]
        ),
        timeout=10,
        what="prefix counts",
    )
    for node, other in ((n1, 2), (n2, 1)):
        for family_peer in (f"198.18.0.{other}", f"fd00:198:18::{other}"):
            row = peer_row(node, family_peer)
            assert row["state"] == "Established"
            assert row["type"] == "mesh" and row["asn"] == 64512
            assert row["received"] == row["accepted"] == WORKLOADS[other]
            assert row["advertised"] == WORKLOADS[int(node.name[-1])]
    table = n1.cli("status").stdout
    assert "198.18.0.2" in table and "Established" in table and "RCVD/ACPT/ADV" in table
    assert n1.cli("health").returncode == 0

    # Take node2's underlay link down: node1 notices by its hold timer.
    ns_run(n2.netns, ["ip", "link", "set", "eth1", "down"])
    wait_for(
        lambda: peer_row(n1, "198.18.0.2")["state"] != "Established",
        timeout=20,
        what="node1 sees the session to node2 drop",
    )
    row = peer_row(n1, "198.18.0.2")
    assert row["info"], row
    assert n1.cli("status", check=False).returncode == 1

    def metric(name: str, labels: str) -> float | None:
        _status, body = http_get(n1.netns, "http://198.18.0.1:9641/metrics")
        for line in body.splitlines():
            if line.startswith(f"{name}{{") and all(p in line for p in labels.split(",")):
                return float(line.rsplit(" ", 1)[1])
        return None

    wait_for(
        lambda: (
            metric("l3fabric_bgp_session_state", 'peer="198.18.0.2",state="Established"') == 0.0
        ),
        timeout=10,
        what="the state metric follows",
    )
    assert metric("l3fabric_bgp_session_flaps_total", 'peer="198.18.0.2"') == 1.0

    # Link back: the sessions return and each side has the other's routes
    # again (ExaBGP resends what it holds for a configured neighbour; the
    # agent adds its End-of-RIB).
    ns_run(n2.netns, ["ip", "link", "set", "eth1", "up"])
    for node, peer, count in ((n1, "198.18.0.2", WORKLOADS[2]), (n2, "198.18.0.1", WORKLOADS[1])):
        wait_for(
            lambda n=node, p=peer, c=count: (
                peer_row(n, p)["state"] == "Established" and peer_row(n, p)["received"] == c
            ),
            timeout=60,
            what=f"{node.name}: session to {peer} back with {count} routes",
        )


def test_json_outputs_carry_documented_fields(fabric: list[AgentNode]) -> None:
    n1, _ = fabric
    status = n1.status()
    assert {
        "node",
        "asn",
        "addresses",
        "state",
        "reason",
        "pid",
        "uptime_seconds",
        "workloads",
        "peers",
        "metrics_url",
        "health_urls",
        "exabgp_pid",
        "last_reconcile",
    } <= set(status)
    assert status["metrics_url"] == "http://198.18.0.1:9641/metrics"
    assert {
        "peer",
        "name",
        "type",
        "asn",
        "state",
        "since_seconds",
        "received",
        "accepted",
        "rejected",
        "advertised",
        "flaps",
        "info",
    } <= set(status["peers"][0])
    workloads = n1.cli_json("workload", "list")
    assert {"name", "node", "netns", "addresses", "host_iface"} <= set(workloads[0])
    routes = n1.cli_json("routes")
    assert {"prefix", "nexthops", "kind"} <= set(routes["routes"][0])
    received = n1.cli_json("routes", "--received")["routes"][0]
    assert {"prefix", "peer", "next_hop", "as_path", "accepted", "reason", "stale", "best"} <= set(
        received
    )
    assert {"prefix", "next_hop"} <= set(n1.cli_json("routes", "--advertised")["routes"][0])
    ipam = n1.cli_json("ipam", "show")
    assert {"pools", "blocks"} <= set(ipam)
    health = n1.cli_json("health")
    assert health["ready"] is True and health["live"] is True
    yaml_out = n1.cli("status", "-o", "yaml").stdout
    assert "peers:" in yaml_out
    # Probes over HTTP say the same.
    assert http_get(n1.netns, "http://198.18.0.1:9641/livez")[0] == 200
    assert http_get(n1.netns, "http://198.18.0.1:9641/readyz")[0] == 200
    bad = n1.cli("routes", "--prefix", "not-a-prefix", check=False)
    assert bad.returncode == 2 and "not-a-prefix" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_metrics_exposition_passes_promtool(fabric: list[AgentNode]) -> None:
    _status, body = http_get(fabric[0].netns, "http://198.18.0.1:9641/metrics")
    assert "l3fabric_bgp_session_state" in body and "l3fabric_routes_programmed" in body
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_scrapes_the_fabric(
    fabric: list[AgentNode], netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    # Prometheus in its own namespace, plugged into the underlay's bridge.
    switch = next(ns for ns in netns.created if "sw" in ns)
    prom = netns.add("prom")
    netns.link(prom, switch, ["198.18.0.100/24"], [], names=("eth1", "pprom"))
    ns_run(switch, ["ip", "link", "set", "pprom", "master", "br0"])
    config = tmp_path / "prometheus.yml"
    targets = [f"198.18.0.{i}:9641" for i in (1, 2)]
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: l3fabric\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    procs.start(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--web.listen-address=198.18.0.100:9090",
        ],
        netns=prom,
        log_path=str(tmp_path / "prometheus.log"),
    )

    def query(promql: str) -> float | None:
        url = "http://198.18.0.100:9090/api/v1/query?query=" + urllib.parse.quote(promql)
        status, body = http_get(prom, url)
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    established = 'sum(l3fabric_bgp_session_state{state="Established"})'
    wait_for(lambda: query(established) == 4.0, timeout=30, what="4 Established sessions")
    learned = 'sum(l3fabric_routes_programmed{kind="learned"})'
    expected = 2 * (WORKLOADS[1] + WORKLOADS[2])  # v4 + v6 of every remote workload
    wait_for(lambda: query(learned) == float(expected), timeout=30, what="learned routes")
    assert query('count(up{job="l3fabric"} == 1)') == 2.0
