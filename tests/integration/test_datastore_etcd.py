"""The etcd backend against real etcd: failover, unavailability, compaction,
leases in real time, TLS, and concurrent writers (threads, processes, IPAM).

The contract both backends share is in tests/unit/test_datastore_contract.py;
this is what only a real cluster can show. Clusters run on loopback on
random ports (tests/etcdlab.py), each test stops only the members it started.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

import pytest

from l3fabric.datastore import (
    DatastoreError,
    DatastoreUnavailable,
    EtcdDatastore,
    VersionConflict,
    WatchCompacted,
    WatchEvent,
    open_datastore,
)
from tests import etcdlab
from tests.etcdlab import EtcdCluster, etcd_server  # noqa: F401 - the session fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def own_etcd() -> Iterator[EtcdCluster]:
    """A single member this test may stop, pause and restart."""
    etcdlab.require_etcd()
    cluster = EtcdCluster(1, "own")
    try:
        yield cluster.start()
    finally:
        cluster.cleanup()


@pytest.fixture
def server(etcd_server: EtcdCluster) -> EtcdCluster:  # noqa: F811
    etcdlab.wipe(etcd_server.urls[0])
    return etcd_server


def dead_endpoint() -> str:
    """A loopback port nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{etcdlab.free_port()}"


def wait_for_write(store: EtcdDatastore, key: str, deadline_s: float = 20) -> int:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return store.put(key, b"x")
        except DatastoreUnavailable:
            assert time.monotonic() < deadline, "etcd never took a write again"
            time.sleep(0.1)


# -- failover ---------------------------------------------------------------------------


def test_a_dead_endpoint_listed_first_is_skipped(server: EtcdCluster) -> None:
    store = EtcdDatastore([dead_endpoint(), *server.urls])
    try:
        start = store.revision()
        version = store.put("/l3fabric/nodes/a", b"1", expect_version=0)
        assert store.get("/l3fabric/nodes/a").version == version  # type: ignore[union-attr]
        revision, events = store.watch("/l3fabric/nodes/", start, timeout=1)
        assert [e.key for e in events] == ["/l3fabric/nodes/a"] and revision == version
        lease = store.grant_lease(30)
        assert store.keep_alive(lease) is not None
    finally:
        store.close()


def test_writes_go_on_when_one_of_three_members_is_killed() -> None:
    etcdlab.require_etcd()
    cluster = EtcdCluster(3, "trio").start()
    store = EtcdDatastore(cluster.urls, timeout=2)
    try:
        store.put("/l3fabric/counter", b"0")
        start = store.revision()
        cluster.members[0].kill()  # the endpoint the store was using
        wait_for_write(store, "/l3fabric/after-kill")  # a leader election may be under way
        for n in range(20):
            kv = store.get("/l3fabric/counter")
            assert kv is not None
            store.put("/l3fabric/counter", str(n + 1).encode(), expect_version=kv.version)
        assert store.get("/l3fabric/counter").value == b"20"  # type: ignore[union-attr]
        _, events = store.watch("/l3fabric/counter", start, timeout=2)
        assert [e.value for e in events] == [str(n).encode() for n in range(1, 21)]
    finally:
        store.close()
        cluster.cleanup()


# -- etcd down ----------------------------------------------------------------------------


def _every_call(store: EtcdDatastore) -> dict[str, object]:
    return {
        "get": lambda: store.get("/l3fabric/nodes/a"),
        "put": lambda: store.put("/l3fabric/nodes/a", b"2"),
        "cas": lambda: store.put("/l3fabric/nodes/a", b"2", expect_version=1),
        "delete": lambda: store.delete("/l3fabric/nodes/a"),
        "list": lambda: store.list("/l3fabric/"),
        "revision": store.revision,
        "watch": lambda: store.watch("/l3fabric/nodes/", 1, timeout=0.5),
        "grant_lease": lambda: store.grant_lease(10),
        "keep_alive": lambda: store.keep_alive(1),
    }


def _assert_unavailable_quickly(store: EtcdDatastore, url: str) -> list[str]:
    messages = []
    for name, call in _every_call(store).items():
        started = time.monotonic()
        with pytest.raises(DatastoreUnavailable) as info:
            call()  # type: ignore[operator]
        elapsed = time.monotonic() - started
        # Bounded by the 1 s timeout; generous, as the machine is shared.
        assert elapsed < 6, f"{name} took {elapsed:.1f}s to give up"
        message = str(info.value)
        assert message.startswith(f"datastore unavailable (etcd at {url}"), message
        assert message.endswith("; try again"), message
        messages.append(message)
    return messages


def test_stopped_etcd_fails_every_call_at_once_and_recovers(own_etcd: EtcdCluster) -> None:
    store = EtcdDatastore(own_etcd.urls, timeout=1)
    try:
        version = store.put("/l3fabric/nodes/a", b"1")
        own_etcd.members[0].stop()
        messages = _assert_unavailable_quickly(store, own_etcd.urls[0])
        assert all("cannot connect" in m for m in messages), messages
        own_etcd.restart(own_etcd.members[0])
        # The same instance works again, and a watch from before the outage
        # sees what happened since.
        later = wait_for_write(store, "/l3fabric/nodes/b")
        _, events = store.watch("/l3fabric/nodes/", version, timeout=1)
        assert [(e.key, e.revision) for e in events] == [("/l3fabric/nodes/b", later)]
    finally:
        store.close()


def test_a_hung_etcd_never_hangs_the_caller(own_etcd: EtcdCluster) -> None:
    """SIGSTOPped etcd: connections are accepted by the kernel, nothing answers."""
    store = EtcdDatastore(own_etcd.urls, timeout=1)
    try:
        store.put("/l3fabric/nodes/a", b"1")
        own_etcd.members[0].pause()
        try:
            messages = _assert_unavailable_quickly(store, own_etcd.urls[0])
        finally:
            own_etcd.members[0].resume()
        put_message = messages[1]
        assert "may or may not have been applied" in put_message
        wait_for_write(store, "/l3fabric/nodes/b")
    finally:
        store.close()


def test_unavailable_names_every_endpoint_tried() -> None:
    urls = [dead_endpoint(), dead_endpoint()]
    store = open_datastore("etcd", endpoints=urls, timeout=1)
    with pytest.raises(DatastoreUnavailable) as info:
        store.get("/l3fabric/nodes/a")
    assert all(url in str(info.value) for url in urls)


# -- compaction ----------------------------------------------------------------------------


def test_a_watch_behind_compaction_must_relist_then_resumes(server: EtcdCluster) -> None:
    store = EtcdDatastore(server.urls)
    try:
        start = store.revision()
        for n in range(10):
            store.put(f"/l3fabric/k/{n % 3}", str(n).encode())
        compacted_at = store.revision() - 3
        etcdlab.compact(server.urls[0], compacted_at)
        with pytest.raises(WatchCompacted) as info:
            store.watch("/l3fabric/k/", start, timeout=1)
        assert "list again" in str(info.value)
        oldest = info.value.oldest_available
        assert oldest == compacted_at - 1
        revision, events = store.watch("/l3fabric/k/", oldest, timeout=1)
        assert [e.revision for e in events] == list(range(compacted_at, revision + 1))
        # The relist-and-watch recipe the agent follows misses nothing.
        listed = store.revision()
        state = {kv.key: kv.value for kv in store.list("/l3fabric/k/")}
        store.put("/l3fabric/k/new", b"n")
        _, events = store.watch("/l3fabric/k/", listed, timeout=1)
        assert [(e.key, e.value) for e in events] == [("/l3fabric/k/new", b"n")]
        assert len(state) == 3
    finally:
        store.close()


# -- leases in real time ----------------------------------------------------------------------


def test_a_kept_alive_lease_outlives_its_ttl_and_expiry_reaches_a_live_watcher(
    server: EtcdCluster,
) -> None:
    store = EtcdDatastore(server.urls)
    try:
        lease = store.grant_lease(2)
        store.put("/l3fabric/nodes/n1", b"up", lease=lease)
        start = store.revision()
        seen: list[WatchEvent] = []
        done = threading.Event()

        def watcher() -> None:
            revision = start
            while not done.is_set():
                revision, events = store.watch("/l3fabric/nodes/", revision, timeout=0.5)
                seen.extend(events)
                if any(e.kind == "delete" for e in events):
                    return

        thread = threading.Thread(target=watcher)
        thread.start()
        try:
            kept_until = time.monotonic() + 4  # twice the ttl
            while time.monotonic() < kept_until:
                assert store.keep_alive(lease) is not None
                assert store.get("/l3fabric/nodes/n1") is not None
                time.sleep(0.3)
            assert seen == []
            thread.join(timeout=30)  # no more keep-alives: etcd expires it
            assert not thread.is_alive(), "the watcher never saw the lease expire"
        finally:
            done.set()
            thread.join(timeout=30)
        assert [(e.kind, e.key) for e in seen] == [("delete", "/l3fabric/nodes/n1")]
        assert store.lease_ttl(lease) is None
    finally:
        store.close()


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_with_client_certificates() -> None:
    etcdlab.require_etcd()
    cluster = EtcdCluster(1, "tls", tls=True).start()
    tls = cluster.tls
    assert tls is not None
    try:
        store = open_datastore(
            "etcd", endpoints=cluster.urls, ca=tls.ca, cert=tls.client_cert, key=tls.client_key
        )
        start = store.revision()
        store.put("/l3fabric/nodes/a", b"1")
        assert store.get("/l3fabric/nodes/a").value == b"1"  # type: ignore[union-attr]
        _, events = store.watch("/l3fabric/nodes/", start, timeout=1)
        assert [e.key for e in events] == ["/l3fabric/nodes/a"]
        store.close()
        # Without a client certificate, or without trusting the CA: refused.
        no_cert = open_datastore("etcd", endpoints=cluster.urls, ca=tls.ca, timeout=1)
        with pytest.raises(DatastoreError):
            no_cert.get("/l3fabric/nodes/a")
        untrusted = open_datastore(
            "etcd", endpoints=cluster.urls, cert=tls.client_cert, key=tls.client_key, timeout=1
        )
        with pytest.raises(DatastoreUnavailable, match="TLS error"):
            untrusted.get("/l3fabric/nodes/a")
    finally:
        cluster.cleanup()


# -- concurrency -------------------------------------------------------------------------------


def test_threads_sharing_one_instance_lose_no_update(server: EtcdCluster) -> None:
    store = EtcdDatastore(server.urls)
    conflicts = []
    try:
        store.put("/l3fabric/counter", b"0")

        def increment(times: int) -> None:
            done = 0
            while done < times:
                kv = store.get("/l3fabric/counter")
                assert kv is not None
                try:
                    store.put(
                        "/l3fabric/counter",
                        str(int(kv.value) + 1).encode(),
                        expect_version=kv.version,
                    )
                except VersionConflict:
                    conflicts.append(1)
                    continue
                done += 1

        threads = [threading.Thread(target=increment, args=(60,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert store.get("/l3fabric/counter").value == b"240"  # type: ignore[union-attr]
        assert conflicts, "the threads never raced; the test proves nothing"
    finally:
        store.close()


@dataclass(frozen=True)
class Pool:
    cidr: IPv4Network | IPv6Network
    block_size: int


# 32 addresses in blocks of 4 for 3 nodes x 10 handles: blocks run out and
# nodes borrow from each other's blocks, all by CAS on etcd.
POOLS = (Pool(IPv4Network("100.64.0.0/27"), 30),)


def _assign_all(urls: tuple[str, ...], node: str, count: int) -> dict[str, list[str]]:
    from l3fabric.ipam.allocator import Ipam

    store = EtcdDatastore(urls)
    try:
        ipam = Ipam(store, node, POOLS)
        return {f"{node}-w{n}": [str(a) for a in ipam.assign(f"{node}-w{n}")] for n in range(count)}
    finally:
        store.close()


def test_ipam_on_etcd_from_several_processes_never_duplicates(server: EtcdCluster) -> None:
    from l3fabric.ipam.allocator import Ipam

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(
            _assign_all, [(tuple(server.urls), node, 10) for node in ("n1", "n2", "n3")]
        )
    assigned = [a for result in results for addresses in result.values() for a in addresses]
    assert len(assigned) == 30
    assert len(set(assigned)) == 30, "an address was assigned twice"
    assert all(ipaddress.ip_address(a) in POOLS[0].cidr for a in assigned)
    store = EtcdDatastore(server.urls)
    try:
        report = Ipam(store, "n1", POOLS).check()
        assert report["problems"] == [], report
    finally:
        store.close()


def test_free_port_helper_gives_an_unused_port() -> None:
    port = etcdlab.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
