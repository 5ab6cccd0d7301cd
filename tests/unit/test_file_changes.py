"""DirectoryChanges: inotify on the file datastore's directory tells a
waiting watcher that something was written, and nothing else does."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.file_changes import DirectoryChanges


def test_a_write_in_the_directory_is_notified_once(tmp_path: Path) -> None:
    with DirectoryChanges(str(tmp_path), 0.02) as changes:
        assert changes.notified
        assert not changes.pending()
        (tmp_path / "rev").write_bytes(b"1")
        assert changes.pending()
        changes.wait(10.0)  # returns at once: the change is there
        assert not changes.pending()
        # A write one level down is not this directory's.
        (tmp_path / "keys").mkdir()
        changes.wait(10.0)
        (tmp_path / "keys" / "k").write_bytes(b"v")
        assert not changes.pending()
    assert not changes.notified  # closed


def test_without_inotify_it_polls(tmp_path: Path) -> None:
    missing = tmp_path / "not-there"
    with DirectoryChanges(str(missing), 0.001) as changes:
        assert not changes.notified and not changes.pending()
        changes.wait(0.001)


def test_a_watch_wakes_for_another_instances_write(tmp_path: Path) -> None:
    """Two instances on one store, as two agents: the watcher's wait is
    ended by the writer's put, whatever the timeout (an hour here)."""
    watcher, writer = FileDatastore(tmp_path / "store"), FileDatastore(tmp_path / "store")
    start = writer.put("/l3f/nodes/a", b"1")
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(watcher.watch("/l3f/nodes/", start, 3600)))
    thread.start()
    try:
        writer.put("/l3f/nodes/b", b"2")
        thread.join(timeout=60)
        assert not thread.is_alive(), "the watch did not wake for the write"
        ((revision, events),) = got  # type: ignore[misc]
        assert revision > start and [e.key for e in events] == ["/l3f/nodes/b"]
    finally:
        if thread.is_alive():
            writer.put("/l3f/nodes/c", b"3")
            thread.join(timeout=60)
        watcher.close()
        writer.close()
    assert os.path.isdir(tmp_path / "store")


def test_after_a_change_the_wait_lasts_a_poll_interval_so_bursts_are_read_together(
    tmp_path: Path,
) -> None:
    """Without this a watcher read the store once per write: at start-up an
    agent registering 3,000 names took 92 s instead of 11."""
    slept: list[float] = []
    with DirectoryChanges(str(tmp_path), 0.02, clock=lambda: 5.0, sleep=slept.append) as changes:
        (tmp_path / "rev").write_bytes(b"1")
        (tmp_path / "rev").write_bytes(b"2")
        changes.wait(10.0)
        assert slept == [0.02] and not changes.pending()  # both writes taken at once
        changes.wait(0.0)  # nothing changed: no rest to wait out
        assert slept == [0.02]
