"""`ipam show --ip`, `ipam show --blocks` and `ipam release` through the
agent's control handlers, with the agent's fakes and a real file datastore."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.agent.server import RequestError
from l3fabric.cli.main import main
from l3fabric.config import PoolConfig
from l3fabric.ipam.allocator import Ipam
from tests.nettools import Namespaces
from tests.unit.clipatch import through
from tests.unit.test_agent import Harness, node_config

net = ipaddress.ip_network
POOL = PoolConfig(cidr=net("100.64.0.0/24"), block_size=28)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path, node_config(tmp_path))
    made.agent.start()
    try:
        yield made
    finally:
        made.agent.stop()


def other_node(harness: Harness, ago: float = 0.0) -> Ipam:
    """A second node's IPAM on the same datastore, assigning `ago` seconds
    in the past (the agent's IPAM reads the real wall clock)."""
    return Ipam(harness.store, "node2", [POOL], clock=lambda: time.time() - ago)


def test_show_ip_names_the_workload_node_block_and_handle(
    harness: Harness, netns: Namespaces
) -> None:
    added = harness.call["workload.add"]({"name": "web", "netns": f"/run/netns/{netns.add('w')}"})
    address = added["addresses"][0]
    found = harness.call["ipam.show"]({"ip": address})
    assert found["workload"] == "web" and found["workload_node"] == "node1"
    assert found["handle"] == "web" and found["node"] == "node1"
    assert found["block"] == "100.64.0.0/28" and found["block_node"] == "node1"
    assert found["pool"] == "100.64.0.0/24" and not found["borrowed"]
    free = harness.call["ipam.show"]({"ip": "100.64.0.9"})
    assert not free["allocated"] and free["handle"] is None and free["workload"] is None
    with pytest.raises(RequestError) as refused:
        harness.call["ipam.show"]({"ip": "bogus"})
    assert refused.value.code == "invalid"


def test_show_blocks_lists_affinity_borrowed_addresses_and_utilisation(harness: Harness) -> None:
    harness.agent.ipam.assign("a")  # node1 claims 100.64.0.0/28
    other_node(harness).assign("b", [ipaddress.ip_address("100.64.0.5")])  # borrowed
    blocks = harness.call["ipam.show"]({"blocks": True})["blocks"]
    assert [(b["cidr"], b["node"], b["used"], b["free"]) for b in blocks] == [
        ("100.64.0.0/28", "node1", 2, 14)
    ]
    assert blocks[0]["utilisation"] == 12.5
    assert blocks[0]["borrowed"] == [{"address": "100.64.0.5", "node": "node2", "handle": "b"}]
    borrowed = harness.call["ipam.show"]({"ip": "100.64.0.5"})
    assert borrowed["borrowed"] and borrowed["node"] == "node2"
    assert borrowed["block_node"] == "node1"


def test_release_refuses_a_live_workloads_address(harness: Harness, netns: Namespaces) -> None:
    added = harness.call["workload.add"]({"name": "web", "netns": f"/run/netns/{netns.add('w')}"})
    with pytest.raises(RequestError) as refused:
        harness.call["ipam.release"]({"address": added["addresses"][0]})
    assert refused.value.code == "conflict"
    assert "live workload web on node node1" in refused.value.message
    assert harness.agent.ipam.addresses_of("web")


def test_release_frees_a_leaked_address_once_past_the_grace_period(harness: Harness) -> None:
    (young,) = other_node(harness).assign("young")  # no workload record anywhere
    with pytest.raises(RequestError) as refused:
        harness.call["ipam.release"]({"address": str(young)})
    assert refused.value.code == "conflict" and "add in progress" in refused.value.message
    (leaked,) = other_node(harness, ago=3600).assign("ghost")
    result = harness.call["ipam.release"]({"address": str(leaked)})
    assert result == {"address": str(leaked), "handle": "ghost", "released": True}
    assert not harness.agent.ipam.addresses_of("ghost")
    assert harness.store.get("/l3fabric/ipam/handles/ghost") is None
    with pytest.raises(RequestError) as again:
        harness.call["ipam.release"]({"address": str(leaked)})
    assert again.value.code == "not-found"


def test_the_ipam_commands_print_and_exit(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    through(monkeypatch, harness.call)
    harness.agent.ipam.assign("a")  # node1 claims 100.64.0.0/28
    other_node(harness, ago=3600).assign("ghost", [ipaddress.ip_address("100.64.0.5")])
    assert main(["ipam", "show", "--ip", "100.64.0.5"]) == 0
    shown = capsys.readouterr().out
    assert "handle:        ghost" in shown and "no live workload" in shown
    assert main(["ipam", "show", "--blocks"]) == 0
    assert "100.64.0.5@node2" in capsys.readouterr().out
    assert main(["ipam", "show", "--ip", "100.64.0.5", "--blocks"]) == 2
    assert main(["ipam", "release", "100.64.0.5"]) == 0
    assert capsys.readouterr().out == "released 100.64.0.5 (handle ghost)\n"
    assert main(["ipam", "release", "100.64.0.5"]) == 2  # not assigned: input error
    assert main(["ipam", "release", "nonsense"]) == 2


def test_release_refuses_when_the_handles_record_cannot_be_read(harness: Harness) -> None:
    (address,) = other_node(harness, ago=3600).assign("db")
    harness.store.put("/l3fabric/workloads/node2/db", b"{damaged")
    with pytest.raises(RequestError) as refused:
        harness.call["ipam.release"]({"address": str(address)})
    assert refused.value.code == "conflict" and "live workload db on node node2" in (
        refused.value.message
    )
    assert harness.call["ipam.show"]({"ip": str(address)})["workload"] == "db"
