"""The contract every datastore backend keeps, run against each backend.

Every test here runs against the file backend and against a real etcd
(Debian's etcd, started once per test process by tests/etcdlab.py; each test
starts from an empty etcd). The file backend's own crash recovery,
compaction and clock are in test_datastore_file.py; etcd's own behaviour
(failover, unavailability, compaction, real lease expiry) is in
tests/integration/test_datastore_etcd.py.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from l3fabric.datastore import (
    Datastore,
    DatastoreError,
    EtcdDatastore,
    FileDatastore,
    InvalidKey,
    LeaseExpired,
    VersionConflict,
    open_datastore,
)
from tests import etcdlab
from tests.etcdlab import etcd_server  # noqa: F401 - the session fixture

BACKENDS = ["file", pytest.param("etcd", marks=pytest.mark.integration)]


@dataclass(frozen=True)
class StoreSpec:
    """How to open one store; picklable, so child processes can open it too."""

    backend: str
    path: Path | None = None
    endpoints: tuple[str, ...] = ()

    def open(self) -> Datastore:
        if self.backend == "etcd":
            return open_datastore("etcd", endpoints=self.endpoints)
        return open_datastore(self.backend, path=self.path)


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    if request.param == "etcd":
        cluster: etcdlab.EtcdCluster = request.getfixturevalue("etcd_server")
        etcdlab.wipe(cluster.urls[0])
        return StoreSpec("etcd", endpoints=tuple(cluster.urls))
    return StoreSpec(request.param, tmp_path / "store")


@pytest.fixture
def store(spec: StoreSpec) -> Iterator[Datastore]:
    opened = spec.open()
    try:
        yield opened
    finally:
        opened.close()


# -- get / put / delete / CAS ------------------------------------------------------


def test_get_of_missing_key_is_none(store: Datastore) -> None:
    assert store.get("/l3fabric/nodes/nope") is None


def test_put_then_get_returns_value_and_version(store: Datastore) -> None:
    before = store.revision()
    version = store.put("/l3fabric/nodes/n1", b"one")
    assert version > before
    kv = store.get("/l3fabric/nodes/n1")
    assert kv is not None
    assert (kv.key, kv.value, kv.version) == ("/l3fabric/nodes/n1", b"one", version)
    assert store.revision() == version


def test_every_put_bumps_version_and_revision(store: Datastore) -> None:
    first = store.put("/k/a", b"1")
    second = store.put("/k/a", b"2")
    other = store.put("/k/b", b"x")
    assert first < second < other
    assert store.revision() == other
    kv = store.get("/k/a")
    assert kv is not None and kv.value == b"2" and kv.version == second


def test_empty_and_binary_values_round_trip(store: Datastore) -> None:
    store.put("/k/empty", b"")
    blob = bytes(range(256)) * 300
    store.put("/k/blob", blob)
    assert store.get("/k/empty").value == b""  # type: ignore[union-attr]
    assert store.get("/k/blob").value == blob  # type: ignore[union-attr]


def test_create_only_if_absent(store: Datastore) -> None:
    version = store.put("/k/a", b"1", expect_version=0)
    with pytest.raises(VersionConflict) as info:
        store.put("/k/a", b"2", expect_version=0)
    assert info.value.actual == version
    assert "expected absent" in str(info.value) and "/k/a" in str(info.value)
    assert store.get("/k/a").value == b"1"  # type: ignore[union-attr]


def test_cas_on_version(store: Datastore) -> None:
    v1 = store.put("/k/a", b"1")
    v2 = store.put("/k/a", b"2", expect_version=v1)
    revision = store.revision()
    with pytest.raises(VersionConflict) as info:
        store.put("/k/a", b"stale", expect_version=v1)
    assert (info.value.expected, info.value.actual) == (v1, v2)
    assert store.revision() == revision, "a failed CAS must change nothing"
    assert store.get("/k/a").value == b"2"  # type: ignore[union-attr]


def test_cas_on_missing_key_conflicts(store: Datastore) -> None:
    with pytest.raises(VersionConflict) as info:
        store.put("/k/missing", b"x", expect_version=7)
    assert info.value.actual is None and "found absent" in str(info.value)
    assert store.get("/k/missing") is None


def test_delete(store: Datastore) -> None:
    assert store.delete("/k/a") is False
    v1 = store.put("/k/a", b"1")
    with pytest.raises(VersionConflict):
        store.delete("/k/a", expect_version=v1 + 100)
    assert store.get("/k/a") is not None
    assert store.delete("/k/a", expect_version=v1) is True
    assert store.get("/k/a") is None
    assert store.delete("/k/a") is False
    with pytest.raises(VersionConflict):
        store.delete("/k/a", expect_version=v1)


def test_recreated_key_never_reuses_a_version(store: Datastore) -> None:
    old = store.put("/k/a", b"1")
    store.delete("/k/a")
    new = store.put("/k/a", b"1")
    assert new > old
    with pytest.raises(VersionConflict):
        store.put("/k/a", b"2", expect_version=old)


def test_bad_expect_version_is_rejected(store: Datastore) -> None:
    with pytest.raises(ValueError, match="expect_version must be >= 0"):
        store.put("/k/a", b"1", expect_version=-1)
    with pytest.raises(TypeError, match="expect_version must be an int"):
        store.put("/k/a", b"1", expect_version="1")  # type: ignore[arg-type]


def test_value_must_be_bytes(store: Datastore) -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        store.put("/k/a", "text")  # type: ignore[arg-type]


# -- list -----------------------------------------------------------------------------


def test_list_is_sorted_and_filtered_by_prefix(store: Datastore) -> None:
    for key in ["/a/b/2", "/a/b/1", "/a/bc", "/a/c", "/b/1"]:
        store.put(key, key.encode())
    assert [kv.key for kv in store.list("/a/b/")] == ["/a/b/1", "/a/b/2"]
    assert [kv.key for kv in store.list("/a/b")] == ["/a/b/1", "/a/b/2", "/a/bc"]
    assert [kv.key for kv in store.list("/")] == ["/a/b/1", "/a/b/2", "/a/bc", "/a/c", "/b/1"]
    assert store.list("/zzz") == []
    assert all(kv.value == kv.key.encode() for kv in store.list("/"))


def test_list_omits_deleted_keys(store: Datastore) -> None:
    store.put("/a/1", b"")
    store.put("/a/2", b"")
    store.delete("/a/1")
    assert [kv.key for kv in store.list("/a/")] == ["/a/2"]


@pytest.mark.parametrize(
    "key",
    [
        "/l3fabric/ipam/blocks/fd00:64::-122",
        "/odd/100%25/~tilde/a.b_c-d",
        "/unicode/żółw/雪",
        "/quote'and\"/semi;colon",
    ],
)
def test_unusual_but_valid_keys_round_trip(store: Datastore, key: str) -> None:
    store.put(key, b"v")
    assert store.get(key).value == b"v"  # type: ignore[union-attr]
    parent = key.rsplit("/", 1)[0] + "/"
    assert [kv.key for kv in store.list(parent)] == [key]


# -- key validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "not absolute"),
        ("relative/key", "not absolute"),
        ("/a/../b", "'..'"),
        ("/a/./b", "'.'"),
        ("/a//b", "empty path segment"),
        ("/a/", "ends with '/'"),
        ("/a\nb", "contains '\\n'"),
        ("/a\x00b", "contains '\\x00'"),
        ("/a b", "contains ' '"),
        ("/a\tb", "contains '\\t'"),
        ("/" + "x" * 300, "at most 200"),
    ],
)
def test_bad_keys_are_rejected_with_the_reason(store: Datastore, key: str, complaint: str) -> None:
    for call in (
        lambda: store.get(key),
        lambda: store.put(key, b"x"),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKey) as info:
            call()
        assert complaint in str(info.value)
    assert store.list("/") == []


def test_non_string_key_is_rejected(store: Datastore) -> None:
    with pytest.raises(InvalidKey, match="must be a string"):
        store.get(b"/a")  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["", "a/", "/a\n"])
def test_bad_prefixes_are_rejected(store: Datastore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        store.list(prefix)
    with pytest.raises(InvalidKey):
        store.watch(prefix, 0, 0)


# -- watch ------------------------------------------------------------------------------------


def test_watch_returns_changes_since_a_revision_in_order(store: Datastore) -> None:
    start = store.revision()
    v1 = store.put("/w/a", b"1")
    store.put("/other/x", b"ignored")
    v2 = store.put("/w/b", b"2")
    store.delete("/w/a")
    revision, events = store.watch("/w/", start, timeout=1)
    assert revision == store.revision()
    assert [(e.kind, e.key, e.value) for e in events] == [
        ("put", "/w/a", b"1"),
        ("put", "/w/b", b"2"),
        ("delete", "/w/a", None),
    ]
    assert events[0].revision == v1 and events[1].revision == v2
    assert events[2].revision == revision
    # From the middle: only what came after.
    _, later = store.watch("/w/", v2, timeout=1)
    assert [(e.kind, e.key) for e in later] == [("delete", "/w/a")]


def test_watch_times_out_with_no_events(store: Datastore) -> None:
    store.put("/other/x", b"1")
    now = store.revision()
    started = time.monotonic()
    revision, events = store.watch("/w/", now, timeout=0.3)
    elapsed = time.monotonic() - started
    assert events == [] and revision == now
    # It waited for the timeout, and did not hang (generous: the machine is shared).
    assert 0.25 <= elapsed < 8


def test_watch_skips_past_changes_outside_the_prefix(store: Datastore) -> None:
    start = store.revision()
    store.put("/other/x", b"1")
    revision, events = store.watch("/w/", start, timeout=0.1)
    assert events == [] and revision == store.revision()


def test_watch_blocks_until_a_put_from_another_thread(store: Datastore) -> None:
    start = store.revision()

    def later() -> None:
        time.sleep(0.3)
        store.put("/w/late", b"hello")

    writer = threading.Thread(target=later)
    started = time.monotonic()
    writer.start()
    try:
        revision, events = store.watch("/w/", start, timeout=10)
    finally:
        writer.join()
    elapsed = time.monotonic() - started
    assert [(e.key, e.value) for e in events] == [("/w/late", b"hello")]
    assert revision == events[0].revision
    # It blocked until the put, well before its own timeout of 10 s.
    assert 0.25 <= elapsed < 8, f"watch returned after {elapsed:.2f}s"


def test_watch_rejects_bad_arguments(store: Datastore) -> None:
    with pytest.raises(ValueError, match="since_revision"):
        store.watch("/", -1, 0)
    with pytest.raises(ValueError, match="timeout"):
        store.watch("/", 0, -1)


# -- several processes ------------------------------------------------------------------------


def _increment(spec: StoreSpec, key: str, times: int) -> int:
    """CAS loop; returns how many conflicts it had to retry."""
    store = spec.open()
    conflicts = 0
    try:
        done = 0
        while done < times:
            kv = store.get(key)
            assert kv is not None
            try:
                store.put(key, str(int(kv.value) + 1).encode(), expect_version=kv.version)
            except VersionConflict:
                conflicts += 1
                continue
            done += 1
    finally:
        store.close()
    return conflicts


def test_concurrent_cas_increments_lose_no_update(spec: StoreSpec, store: Datastore) -> None:
    store.put("/counter", b"0")
    start = store.revision()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        conflicts = pool.starmap(_increment, [(spec, "/counter", 150)] * 3)
    kv = store.get("/counter")
    assert kv is not None and kv.value == b"450"
    assert store.revision() == start + 450
    assert sum(conflicts) > 0, "the processes never raced; the test proves nothing"
    # Every increment is in the history, in order.
    _, events = store.watch("/counter", start, timeout=1)
    assert [e.value for e in events] == [str(n).encode() for n in range(1, 451)]


def _write_self_checking_values(spec: StoreSpec, key: str, count: int) -> None:
    store = spec.open()
    try:
        for n in range(count):
            body = bytes([n % 251]) * (1 + (n * 7919) % 60000)
            store.put(key, zlib.crc32(body).to_bytes(4, "big") + body)
    finally:
        store.close()


def test_readers_never_see_a_torn_value(spec: StoreSpec, store: Datastore) -> None:
    key = "/torn/value"
    ctx = multiprocessing.get_context("spawn")
    writer = ctx.Process(target=_write_self_checking_values, args=(spec, key, 400))
    writer.start()
    reads = 0
    try:
        while writer.is_alive() or reads == 0:
            kv = store.get(key)
            for item in [kv, *store.list("/torn/")]:
                if item is None:
                    continue
                crc, body = int.from_bytes(item.value[:4], "big"), item.value[4:]
                assert zlib.crc32(body) == crc, f"torn read at version {item.version}"
                reads += 1
    finally:
        writer.join(timeout=60)
    assert writer.exitcode == 0
    assert reads > 50


def test_a_watcher_in_another_instance_sees_every_change(spec: StoreSpec) -> None:
    writer, watcher = spec.open(), spec.open()
    try:
        start = watcher.revision()
        for n in range(30):
            writer.put(f"/w/{n % 4}", str(n).encode())
            if n % 5 == 4:
                writer.delete(f"/w/{n % 4}")
        revision, events = watcher.watch("/w/", start, timeout=5)
        assert [e.revision for e in events] == list(range(start + 1, revision + 1))
        replayed: dict[str, bytes] = {}
        for event in events:
            if event.kind == "put":
                assert event.value is not None
                replayed[event.key] = event.value
            else:
                del replayed[event.key]
        assert replayed == {kv.key: kv.value for kv in watcher.list("/w/")}
    finally:
        writer.close()
        watcher.close()


def test_data_survives_reopening(spec: StoreSpec) -> None:
    first = spec.open()
    version = first.put("/k/a", b"kept")
    first.put("/k/b", b"gone")
    first.delete("/k/b")
    revision = first.revision()
    first.close()
    with pytest.raises(DatastoreError, match="closed"):
        first.put("/k/c", b"")
    second = spec.open()
    try:
        assert second.revision() == revision
        kv = second.get("/k/a")
        assert kv is not None and (kv.value, kv.version) == (b"kept", version)
        assert second.get("/k/b") is None
    finally:
        second.close()


# -- leases ------------------------------------------------------------------------------------


def test_lease_grant_keep_alive_and_ttl(store: Datastore) -> None:
    lease = store.grant_lease(30)
    assert lease > 0
    remaining = store.lease_ttl(lease)
    assert remaining is not None and 0 < remaining <= 30
    assert store.keep_alive(lease) == pytest.approx(30, abs=1)
    version = store.put("/l3fabric/nodes/n1", b"up", lease=lease)
    kv = store.get("/l3fabric/nodes/n1")
    assert kv is not None and (kv.version, kv.lease) == (version, lease)
    assert [kv.lease for kv in store.list("/l3fabric/nodes/")] == [lease]
    store.put("/l3fabric/nodes/n2", b"no lease")
    assert store.get("/l3fabric/nodes/n2").lease == 0  # type: ignore[union-attr]


def test_revoking_a_lease_deletes_its_keys_and_watchers_see_it(store: Datastore) -> None:
    lease = store.grant_lease(60)
    store.put("/l3fabric/nodes/a", b"1", lease=lease)
    store.put("/l3fabric/nodes/b", b"2", lease=lease, expect_version=0)
    store.put("/l3fabric/nodes/c", b"3")
    start = store.revision()
    assert store.revoke_lease(lease) is True
    assert [kv.key for kv in store.list("/l3fabric/nodes/")] == ["/l3fabric/nodes/c"]
    _, events = store.watch("/l3fabric/nodes/", start, timeout=2)
    assert sorted((e.kind, e.key) for e in events) == [
        ("delete", "/l3fabric/nodes/a"),
        ("delete", "/l3fabric/nodes/b"),
    ]
    assert store.revoke_lease(lease) is False
    assert store.keep_alive(lease) is None
    assert store.lease_ttl(lease) is None


def test_a_write_under_a_dead_lease_changes_nothing(store: Datastore) -> None:
    lease = store.grant_lease(60)
    store.revoke_lease(lease)
    revision = store.revision()
    with pytest.raises(LeaseExpired, match="expired or does not exist"):
        store.put("/l3fabric/nodes/a", b"1", lease=lease)
    with pytest.raises(LeaseExpired):
        store.put("/l3fabric/nodes/a", b"1", lease=lease, expect_version=0)
    assert store.get("/l3fabric/nodes/a") is None
    assert store.revision() == revision


def test_a_put_without_the_lease_detaches_the_key(store: Datastore) -> None:
    lease = store.grant_lease(60)
    store.put("/k/a", b"1", lease=lease)
    store.put("/k/a", b"2")
    store.revoke_lease(lease)
    assert store.get("/k/a").value == b"2"  # type: ignore[union-attr]


def test_an_expired_lease_takes_its_keys_with_it(store: Datastore) -> None:
    """Real time, polled: etcd expires a 1 s lease within about a second."""
    lease = store.grant_lease(1)
    kept = store.grant_lease(60)
    start = store.revision()
    store.put("/l3fabric/nodes/gone", b"1", lease=lease)
    store.put("/l3fabric/nodes/kept", b"2", lease=kept)
    deadline = time.monotonic() + 20
    while store.get("/l3fabric/nodes/gone") is not None:
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)
    assert store.keep_alive(lease) is None
    assert [kv.key for kv in store.list("/l3fabric/")] == ["/l3fabric/nodes/kept"]
    _, events = store.watch("/l3fabric/nodes/", start, timeout=2)
    assert [(e.kind, e.key) for e in events][-1] == ("delete", "/l3fabric/nodes/gone")


def test_bad_lease_arguments_are_rejected(store: Datastore) -> None:
    for ttl in (0, -1, "10", True):
        with pytest.raises(ValueError, match="ttl"):
            store.grant_lease(ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease"):
        store.put("/k/a", b"1", lease=-1)
    with pytest.raises(ValueError, match="lease id"):
        store.keep_alive(0)


# -- opening -----------------------------------------------------------------------------------


def test_open_datastore_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatastoreError, match="needs a path"):
        open_datastore("file")
    assert isinstance(open_datastore("etcd", endpoints=["http://127.0.0.1:2379"]), EtcdDatastore)
    with pytest.raises(DatastoreError, match="needs at least one endpoint"):
        open_datastore("etcd")
    with pytest.raises(DatastoreError, match="must look like"):
        open_datastore("etcd", endpoints=["127.0.0.1:2379"])
    with pytest.raises(DatastoreError, match="takes no path"):
        open_datastore("etcd", endpoints=["http://127.0.0.1:2379"], path=tmp_path)
    with pytest.raises(DatastoreError, match="need https"):
        open_datastore("etcd", endpoints=["http://127.0.0.1:2379"], ca=tmp_path / "ca.pem")
    with pytest.raises(DatastoreError, match="both a client cert and its key"):
        open_datastore("etcd", endpoints=["https://e:2379"], cert=tmp_path / "c.pem")
    with pytest.raises(DatastoreError, match="takes no endpoints"):
        open_datastore("file", path=tmp_path, endpoints=["http://127.0.0.1:2379"])
    with pytest.raises(DatastoreError, match="unknown datastore type 'redis'"):
        open_datastore("redis", path=tmp_path)
    with pytest.raises(InvalidKey):
        open_datastore("file", path=tmp_path, prefix="l3fabric")


def test_constructor_does_no_io(tmp_path: Path) -> None:
    FileDatastore(tmp_path / "never")
    open_datastore("file", path=tmp_path / "never")
    assert not (tmp_path / "never").exists()
