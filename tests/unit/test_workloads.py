"""WorkloadManager at its seams: a fake data plane, a real file datastore
and IPAM. Failed adds leave nothing behind; names are fabric-wide."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from l3fabric.agent.server import RequestError
from l3fabric.agent.workloads import WorkloadManager
from l3fabric.config import PoolConfig
from l3fabric.datastore.file import FileDatastore
from l3fabric.ipam import Ipam
from l3fabric.model import Workload
from tests.nettools import Namespaces

POOLS = [PoolConfig(ipaddress.ip_network("100.64.0.0/24"), 28)]


class FakeDataplane:
    def __init__(self) -> None:
        self.attached: dict[str, Workload] = {}
        self.fail_with: Exception | None = None

    def attach(self, workload: Workload) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.attached[workload.host_iface] = workload

    def detach(self, host_iface: str) -> None:
        self.attached.pop(host_iface, None)


@pytest.fixture
def store(tmp_path: Path) -> FileDatastore:
    return FileDatastore(tmp_path / "store")


@pytest.fixture
def netns_file(netns: Namespaces) -> str:
    """A real namespace that is not our own (resolve_netns checks it)."""
    return f"/run/netns/{netns.add('w')}"


def manager(store: FileDatastore, node: str, dataplane: FakeDataplane) -> WorkloadManager:
    ipam = Ipam(store, node, POOLS)
    return WorkloadManager(node=node, store=store, ipam=ipam, dataplane=dataplane)  # type: ignore[arg-type]


def test_a_name_in_use_on_another_node_is_refused(store: FileDatastore, netns_file: str) -> None:
    n1 = manager(store, "node1", FakeDataplane())
    n2 = manager(store, "node2", FakeDataplane())
    first = n1.add("web", netns_file)
    with pytest.raises(RequestError, match="in use on node node1"):
        n2.add("web", netns_file)
    assert n1.get("web") == first
    assert Ipam(store, "node1", POOLS).addresses_of("web") == first.addresses


def test_the_nodes_own_namespace_is_refused(store: FileDatastore) -> None:
    wm = manager(store, "node1", FakeDataplane())
    with pytest.raises(RequestError, match="node's own network namespace"):
        wm.add("w", "/proc/self/ns/net")
    assert wm.list() == []


@pytest.mark.parametrize("error", [ValueError("odd netlink answer"), OSError(5, "EIO")])
def test_a_failed_wiring_gives_everything_back(
    store: FileDatastore, netns_file: str, error: Exception
) -> None:
    dataplane = FakeDataplane()
    dataplane.fail_with = error
    wm = manager(store, "node1", dataplane)
    with pytest.raises(RequestError, match="wiring w"):
        wm.add("w", netns_file)
    assert wm.list() == []
    assert Ipam(store, "node1", POOLS).addresses_of("w") == ()
    dataplane.fail_with = None
    assert wm.add("w", netns_file).addresses  # and a retry works


def test_add_is_idempotent_and_delete_gives_back(store: FileDatastore, netns_file: str) -> None:
    dataplane = FakeDataplane()
    wm = manager(store, "node1", dataplane)
    first = wm.add("w", netns_file)
    assert wm.add("w", netns_file) == first
    wm.delete("w")
    assert dataplane.attached == {} and wm.list() == []
    assert Ipam(store, "node1", POOLS).addresses_of("w") == ()
    with pytest.raises(RequestError, match="no workload named w"):
        wm.delete("w")
