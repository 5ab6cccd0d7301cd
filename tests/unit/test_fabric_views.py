"""`fabric status` and `workload list --all-nodes`: every node from the
datastore, and the local agent's own view of itself through its socket."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.bgp.events import PeerState, PeerStateEvent
from l3fabric.cli.main import main
from l3fabric.model import NodeRecord, Workload
from tests.nettools import Namespaces
from tests.unit.clipatch import through
from tests.unit.test_agent import Harness, node_config

PEER = ipaddress.IPv4Address("198.18.0.2")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path, node_config(tmp_path))
    made.agent.start()
    try:
        record = NodeRecord("node2", 64512, PEER)
        made.store.put("/l3fabric/nodes/node2", json.dumps(record.to_dict()).encode())
        remote = Workload("db", "node2", "/run/netns/db", (ipaddress.ip_address("100.64.0.200"),))
        made.store.put("/l3fabric/workloads/node2/db", json.dumps(remote.to_dict()).encode())
        assert made.agent.bgp is not None
        made.agent.bgp.refresh_neighbors()
        made.agent.bgp.handle_events([PeerStateEvent(PEER, PeerState.UP)])
        yield made
    finally:
        made.agent.stop()


def store_flags(tmp_path: Path) -> list[str]:
    return ["--datastore-path", str(tmp_path / "store")]


def test_fabric_status_joins_the_datastore_and_the_local_agent(
    harness: Harness,
    netns: Namespaces,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness.call["workload.add"]({"name": "web", "netns": f"/run/netns/{netns.add('w')}"})
    through(monkeypatch, harness.call)
    assert main(["fabric", "status", *store_flags(tmp_path), "-o", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"node1", "node2"}
    local, remote = rows["node1"], rows["node2"]
    assert local["source"] == "agent" and local["state"] == "ready"
    assert (local["peers_up"], local["peers_total"]) == (1, 1)
    assert (local["workloads"], local["blocks"], local["routes_out"]) == (1, 1, 1)
    assert local["routes_in"] == 0
    assert remote["source"] == "datastore" and remote["state"] == "no lease"
    assert remote["workloads"] == 1 and remote["blocks"] == 0
    assert remote["peers_up"] is None and remote["routes_in"] is None
    assert main(["fabric", "status", *store_flags(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "NODE", "AS", "STATE", "PEERS", "WORKLOADS", "BLOCKS", "ROUTES-IN", "ROUTES-OUT"
    ]  # fmt: skip
    assert table[1].split() == ["node1", "64512", "ready", "1/1", "1", "1", "0", "1"]
    assert table[2].split() == [
        "node2", "64512", "no", "lease", "unknown", "1", "0", "unknown", "unknown"
    ]  # fmt: skip


def test_fabric_status_without_a_local_agent_says_unknown(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fabric", "status", *store_flags(tmp_path), "--socket", str(tmp_path / "none.sock")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "node1" in out and "registered" in out and "unknown" in out
    assert "no local agent answered: cannot reach the l3fabric agent" in out
    assert main(["fabric", "status"]) == 2  # no datastore named


def test_workload_list_all_nodes_reads_every_node_from_the_datastore(
    harness: Harness,
    netns: Namespaces,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    harness.call["workload.add"]({"name": "web", "netns": f"/run/netns/{netns.add('w')}"})
    harness.store.put("/l3fabric/workloads/node3/broken", b"{not json")
    argv = ["workload", "list", "--all-nodes", *store_flags(tmp_path), "-o", "json"]
    assert main(argv) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(w["node"], w["name"]) for w in listed] == [
        ("node1", "web"),
        ("node2", "db"),
        ("node3", "broken"),
    ]
    assert listed[1]["addresses"] == ["100.64.0.200"]
    assert "unreadable record" in listed[2]["error"]
    assert main(["workload", "list", "--all-nodes", *store_flags(tmp_path)]) == 0
    assert "db" in capsys.readouterr().out
    through(monkeypatch, harness.call)
    assert main(["workload", "list", *store_flags(tmp_path)]) == 2  # store flags need --all-nodes
