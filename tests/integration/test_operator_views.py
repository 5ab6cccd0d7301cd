"""The operator views on a real two-node mesh (ExaBGP sessions, one file
datastore): routes with workload names, what each peer is sent, one
session in detail, every node's workloads and the fabric table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.agentlab import AgentNode, start_mesh
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def fabric(netns: Namespaces, procs: Processes, tmp_path: Path) -> list[AgentNode]:
    nodes = start_mesh(netns, procs, tmp_path)
    for node in nodes:
        node.cli_json("workload", "add", f"{node.name}-w0", "--netns", netns.add("w"))
    return nodes


def test_operator_views_on_a_mesh(fabric: list[AgentNode], tmp_path: Path) -> None:
    n1, n2 = fabric
    mine = n1.cli_json("workload", "list")[0]
    v4 = mine["addresses"][0]
    local = {r["prefix"]: r for r in n1.cli_json("routes")["routes"]}
    assert local[f"{v4}/32"]["workload"] == "node1-w0"
    peer = "198.18.0.2"
    sent = n1.cli_json("routes", "--advertised", "--peer", peer)
    assert {r["prefix"] for r in sent["routes"]} == {f"{v4}/32"}
    detail = n1.cli_json("status", "--peer", peer)["peer"]
    assert detail["state"] == "Established" and detail["families"] == ["ipv4"]
    assert detail["hold_time"] > 0 and detail["uptime_seconds"] is not None
    # node2's workload route arrives at node1.
    theirs = n2.cli_json("workload", "list")[0]["addresses"][0]
    wait_for(
        lambda: any(r["prefix"] == f"{theirs}/32" for r in n1.cli_json("routes")["routes"]),
        timeout=20,
        what="node1 learns node2's workload",
    )
    store = ["--datastore-path", str(tmp_path / "store")]
    every = n1.cli_json("workload", "list", "--all-nodes", *store)
    assert [(w["node"], w["name"]) for w in every] == [
        ("node1", "node1-w0"),
        ("node2", "node2-w0"),
    ]
    rows = {r["name"]: r for r in n1.cli_json("fabric", "status", *store)}
    assert rows["node1"]["source"] == "agent" and rows["node1"]["state"] == "ready"
    assert (rows["node1"]["peers_up"], rows["node1"]["peers_total"]) == (2, 2)
    assert rows["node1"]["routes_in"] >= 1 and rows["node1"]["routes_out"] >= 1
    assert rows["node2"]["source"] == "datastore" and rows["node2"]["state"] == "registered"
    assert rows["node2"]["peers_up"] is None and rows["node2"]["workloads"] == 1
    refused = n1.cli("workload", "add", "Bad_Name", "--netns", "/run/netns/none", check=False)
    assert refused.returncode == 2 and "not a DNS label" in refused.stderr
