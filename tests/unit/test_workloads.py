"""WorkloadManager at its seams: a fake data plane, a real file datastore
and IPAM. Failed adds leave nothing behind; names are fabric-wide."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from l3fabric.agent.workloads import (
    InvalidWorkload,
    WiringFailed,
    WorkloadConflict,
    WorkloadManager,
    WorkloadNotFound,
)
from l3fabric.config import PoolConfig
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.allocator import Ipam
from tests.fakes import FakeKernel
from tests.nettools import Namespaces

POOLS = [PoolConfig(ipaddress.ip_network("100.64.0.0/24"), 28)]


@pytest.fixture
def store(tmp_path: Path) -> FileDatastore:
    return FileDatastore(tmp_path / "store")


@pytest.fixture
def netns_file(netns: Namespaces) -> str:
    """A real namespace that is not our own (resolve_netns checks it)."""
    return f"/run/netns/{netns.add('w')}"


def manager(store: FileDatastore, node: str, dataplane: FakeKernel) -> WorkloadManager:
    ipam = Ipam(store, node, POOLS)
    return WorkloadManager(
        node=node,
        store=store,
        ipam=ipam,
        dataplane=dataplane,
        keys=KeyLayout(),  # type: ignore[arg-type]
    )


def test_a_name_in_use_on_another_node_is_refused(store: FileDatastore, netns_file: str) -> None:
    n1 = manager(store, "node1", FakeKernel())
    n2 = manager(store, "node2", FakeKernel())
    first = n1.add("web", netns_file)
    with pytest.raises(WorkloadConflict, match="in use on node node1"):
        n2.add("web", netns_file)
    assert n1.get("web") == first
    assert Ipam(store, "node1", POOLS).addresses_of("web") == first.addresses


def test_the_nodes_own_namespace_is_refused(store: FileDatastore) -> None:
    wm = manager(store, "node1", FakeKernel())
    with pytest.raises(InvalidWorkload, match="node's own network namespace"):
        wm.add("w", "/proc/self/ns/net")
    assert wm.list() == []


@pytest.mark.parametrize("error", [ValueError("odd netlink answer"), OSError(5, "EIO")])
def test_a_failed_wiring_gives_everything_back(
    store: FileDatastore, netns_file: str, error: Exception
) -> None:
    dataplane = FakeKernel()
    dataplane.attach_error = error
    wm = manager(store, "node1", dataplane)
    with pytest.raises(WiringFailed, match="wiring w"):
        wm.add("w", netns_file)
    assert wm.list() == []
    assert Ipam(store, "node1", POOLS).addresses_of("w") == ()
    dataplane.attach_error = None
    assert wm.add("w", netns_file).addresses  # and a retry works


def test_add_is_idempotent_and_delete_gives_back(store: FileDatastore, netns_file: str) -> None:
    dataplane = FakeKernel()
    wm = manager(store, "node1", dataplane)
    first = wm.add("w", netns_file)
    assert wm.add("w", netns_file) == first
    wm.delete("w")
    assert dataplane.links == {} and wm.list() == []
    assert Ipam(store, "node1", POOLS).addresses_of("w") == ()
    with pytest.raises(WorkloadNotFound, match="no workload named w"):
        wm.delete("w")


class Killed(BaseException):
    """The agent dying at that point (SIGKILL stops it between two steps)."""


def test_a_delete_cut_short_never_leaves_a_record_with_free_addresses(
    store: FileDatastore, netns: Namespaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the churn fault test: a delete killed after IPAM released the
    addresses but before the record went left a workload whose addresses the
    next add took (one address on two workloads). The record goes first now:
    cut short there, the addresses leak (ipam check --repair frees them)."""
    ipam = Ipam(store, "node1", POOLS)
    wm = WorkloadManager(
        node="node1",
        store=store,
        ipam=ipam,
        dataplane=FakeKernel(),
        keys=KeyLayout(),  # type: ignore[arg-type]
    )
    first = wm.add("a", f"/run/netns/{netns.add('w')}")

    def killed_release(_handle: str) -> None:
        raise Killed

    monkeypatch.setattr(ipam, "release", killed_release)
    with pytest.raises(Killed):
        wm.delete("a")
    monkeypatch.undo()
    restarted = manager(store, "node1", FakeKernel())
    assert restarted.get("a") is None  # no record holds them...
    assert Ipam(store, "node1", POOLS).addresses_of("a") == first.addresses  # ...they leaked
    second = restarted.add("b", f"/run/netns/{netns.add('w')}")
    assert not set(second.addresses) & set(first.addresses)
