"""The file backend's own behaviour: crash recovery, compaction, its on-disk
formats, and leases on an injected clock. What every backend does is in
test_datastore_contract.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from l3fabric.datastore import DatastoreError, FileDatastore, WatchCompacted
from l3fabric.datastore.file_format import decode_name, encode_key, encode_record


def test_key_file_names_preserve_prefixes() -> None:
    keys = ["/a/b", "/a/b~c", "/a/b%2Fc", "/a/b/c", "/a/bé", "/a/b:c"]
    for key in keys:
        assert decode_name(encode_key(key)) == key
        assert "/" not in encode_key(key)
    for key in keys:
        for prefix in ["/a/b", "/a/b/", "/a/b~", "/a/b%"]:
            assert encode_key(key).startswith(encode_key(prefix)) == key.startswith(prefix)


def test_compaction_bounds_history_and_watchers_must_relist(tmp_path: Path) -> None:
    store = FileDatastore(tmp_path / "s", journal_limit=8)
    try:
        for n in range(50):
            store.put(f"/k/{n % 3}", str(n).encode())
        with pytest.raises(WatchCompacted) as info:
            store.watch("/k/", 0, timeout=0)
        assert "list again" in str(info.value)
        oldest = info.value.oldest_available
        assert 50 - 8 <= oldest < 50
        revision, events = store.watch("/k/", oldest, timeout=0)
        assert [e.revision for e in events] == list(range(oldest + 1, 51))
        assert revision == 50
        assert (tmp_path / "s" / "journal").stat().st_size < 8 * 200
    finally:
        store.close()
    reopened = FileDatastore(tmp_path / "s")
    try:
        assert reopened.revision() == 50
        assert [kv.value for kv in reopened.list("/k/")] == [b"48", b"49", b"47"]
    finally:
        reopened.close()


def test_an_unfinished_write_is_completed_by_the_next_writer(tmp_path: Path) -> None:
    """A writer killed after its journal append, before applying it."""
    store = FileDatastore(tmp_path / "s")
    store.put("/k/a", b"1")
    store.close()
    journal = tmp_path / "s" / "journal"
    with open(journal, "ab") as f:
        f.write(encode_record(2, 1, "/k/a", b"2"))
        f.write(encode_record(3, 1, "/k/b", b"new"))
    reader = FileDatastore(tmp_path / "s")
    try:
        assert reader.get("/k/a").value == b"2"  # type: ignore[union-attr]
        assert reader.get("/k/b").value == b"new"  # type: ignore[union-attr]
        assert reader.revision() == 3
        assert reader.put("/k/a", b"3", expect_version=2) == 4
    finally:
        reader.close()


def test_a_torn_journal_tail_is_discarded(tmp_path: Path) -> None:
    """A writer killed halfway through appending: that put never returned."""
    store = FileDatastore(tmp_path / "s")
    store.put("/k/a", b"1")
    store.close()
    journal = tmp_path / "s" / "journal"
    size = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(encode_record(2, 1, "/k/a", b"torn")[:-3])
    store = FileDatastore(tmp_path / "s")
    try:
        assert store.get("/k/a").value == b"1"  # type: ignore[union-attr]
        assert journal.stat().st_size == size
        assert store.put("/k/a", b"2") == 2
        _, events = store.watch("/", 0, timeout=0)
        assert [e.value for e in events] == [b"1", b"2"]
    finally:
        store.close()


def test_after_a_reboot_the_whole_journal_is_replayed(tmp_path: Path) -> None:
    """A power cut may lose key files that were renamed but not yet flushed."""
    store = FileDatastore(tmp_path / "s")
    store.put("/k/a", b"1")
    store.put("/k/b", b"2")
    store.close()
    (tmp_path / "s" / "keys" / encode_key("/k/a")).unlink()
    (tmp_path / "s" / "boot").write_text("the boot before the power cut")
    store = FileDatastore(tmp_path / "s")
    try:
        assert store.get("/k/a").value == b"1"  # type: ignore[union-attr]
        assert store.revision() == 2
    finally:
        store.close()


def test_a_damaged_rev_file_is_rebuilt_from_the_journal(tmp_path: Path) -> None:
    store = FileDatastore(tmp_path / "s")
    store.put("/k/a", b"1")
    store.put("/k/a", b"2")
    store.close()
    (tmp_path / "s" / "rev").write_bytes(os.urandom(40))
    store = FileDatastore(tmp_path / "s")
    try:
        assert store.revision() == 2
        assert store.put("/k/a", b"3", expect_version=2) == 3
    finally:
        store.close()


def test_leftover_temporary_files_are_removed(tmp_path: Path) -> None:
    store = FileDatastore(tmp_path / "s")
    store.put("/k/a", b"1")
    store.close()
    (tmp_path / "s" / "tmp" / "1234-1").write_bytes(b"half a value")
    store = FileDatastore(tmp_path / "s")
    try:
        assert store.list("/") != []
        assert list((tmp_path / "s" / "tmp").iterdir()) == []
    finally:
        store.close()


def test_a_damaged_key_file_is_reported(tmp_path: Path) -> None:
    store = FileDatastore(tmp_path / "s")
    try:
        store.put("/k/a", b"1")
        (tmp_path / "s" / "keys" / encode_key("/k/a")).write_bytes(b"garbage")
        with pytest.raises(DatastoreError, match="not an l3fabric key file"):
            store.get("/k/a")
    finally:
        store.close()


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="journal_limit"):
        FileDatastore(tmp_path, journal_limit=1)
    with pytest.raises(ValueError, match="poll_interval"):
        FileDatastore(tmp_path, poll_interval=0.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_file_leases_follow_the_injected_clock_across_instances(tmp_path: Path) -> None:
    clock = FakeClock()
    a = FileDatastore(tmp_path / "s", clock=clock)
    b = FileDatastore(tmp_path / "s", clock=clock)
    try:
        lease = a.grant_lease(10)
        a.put("/l3fabric/nodes/a", b"1", lease=lease)
        start = b.revision()
        clock.now += 9
        assert b.get("/l3fabric/nodes/a") is not None
        assert b.lease_ttl(lease) == pytest.approx(1)
        assert a.keep_alive(lease) == 10
        clock.now += 9
        assert b.get("/l3fabric/nodes/a") is not None, "the keep-alive was not seen"
        clock.now += 2
        assert b.get("/l3fabric/nodes/a") is None
        assert a.keep_alive(lease) is None and a.lease_ttl(lease) is None
        revision, events = a.watch("/l3fabric/nodes/", start, timeout=0)
        assert [(e.kind, e.key) for e in events] == [("delete", "/l3fabric/nodes/a")]
        assert revision == start + 1
        assert list((tmp_path / "s" / "leases").iterdir()) == []
    finally:
        a.close()
        b.close()


def test_a_file_watcher_sees_a_lease_expire_while_it_waits(tmp_path: Path) -> None:
    clock = FakeClock()
    store = FileDatastore(tmp_path / "s", clock=clock)
    try:
        lease = store.grant_lease(5)
        store.put("/l3fabric/nodes/a", b"1", lease=lease)
        start = store.revision()
        clock.now += 6  # nothing has looked since: the watch itself expires it
        _, events = store.watch("/l3fabric/nodes/", start, timeout=1)
        assert [(e.kind, e.key) for e in events] == [("delete", "/l3fabric/nodes/a")]
    finally:
        store.close()


def test_after_a_reboot_file_leases_get_their_full_ttl_again(tmp_path: Path) -> None:
    """The monotonic clock restarts with the machine; old deadlines mean nothing."""
    clock = FakeClock()
    store = FileDatastore(tmp_path / "s", clock=clock)
    lease = store.grant_lease(10)
    store.put("/l3fabric/nodes/a", b"1", lease=lease)
    store.close()
    (tmp_path / "s" / "boot").write_text("the boot before")
    clock.now = 5.0  # a fresh boot's clock, far before the old deadline
    store = FileDatastore(tmp_path / "s", clock=clock)
    try:
        kv = store.get("/l3fabric/nodes/a")
        assert kv is not None and kv.lease == lease
        assert store.lease_ttl(lease) == pytest.approx(10)
        clock.now += 11
        assert store.get("/l3fabric/nodes/a") is None
    finally:
        store.close()


def test_leased_puts_survive_journal_replay(tmp_path: Path) -> None:
    store = FileDatastore(tmp_path / "s")
    lease = store.grant_lease(60)
    store.put("/k/a", b"1")
    store.close()
    with open(tmp_path / "s" / "journal", "ab") as f:
        f.write(encode_record(2, 3, "/k/a", b"leased", lease))
    store = FileDatastore(tmp_path / "s")
    try:
        kv = store.get("/k/a")
        assert kv is not None and (kv.value, kv.version, kv.lease) == (b"leased", 2, lease)
        assert store.revoke_lease(lease) is True
        assert store.get("/k/a") is None
    finally:
        store.close()
