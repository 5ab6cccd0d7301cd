"""The embedded datastore: one directory shared by every agent on a machine.

Layout of the directory (created on first use, not by the constructor):

    lock      flock(2) target; held around every write, by every process
    journal   write-ahead log: header, then one record per revision
    rev       40 bytes: applied revision, journal end, journal generation,
              oldest revision still in the journal, crc32 of those
    boot      boot id of the machine that last replayed the journal
    keys/     one file per key: magic, version, [lease,] value
    leases/   one file per lease: ttl and deadline (see file_leases.py)
    tmp/      files being written, renamed into keys/ when complete

A write takes the lock, appends a record to the journal and fdatasyncs it
(that is the commit point), then renames the new key file into place and
updates `rev`. Readers never lock: a key file is replaced by rename, so a
reader sees the old or the new file and never a torn one, and watchers read
only journal records at or below the revision in `rev`, which only ever
names complete records.

A writer killed between the journal append and the `rev` update leaves a
record beyond `rev`'s journal end; the next writer replays it before doing
anything else (replay is idempotent: a key file whose version is already at
or past a record's revision is left alone). A torn final record, from a kill
mid-append, fails its checksum and is cut off: that put never returned, so
dropping it is correct. Key files are not fsynced one by one; after a power
cut (a new boot id) the whole journal is replayed instead, and before
journal records are dropped by compaction everything is flushed with sync().

Leases expire on access: every read, write and watch poll first deletes the
keys of leases whose deadline has passed (file_leases.py says how that stays
cheap), so a watcher sees the delete events as it would from etcd.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from l3fabric.datastore.base import (
    DatastoreError,
    InvalidKey,
    KeyValue,
    LeaseExpired,
    VersionConflict,
    WatchCompacted,
    WatchEvent,
    validate_expect_version,
    validate_key,
    validate_lease,
    validate_lease_id,
    validate_prefix,
    validate_ttl,
)
from l3fabric.datastore.file_changes import DirectoryChanges
from l3fabric.datastore.file_format import (
    DELETE,
    HEAD,
    JOURNAL_FORMAT,
    JOURNAL_HEADER,
    JOURNAL_MAGIC,
    KEY_FILE,
    KEY_MAGIC,
    LEASED_KEY_FILE,
    LEASED_KEY_MAGIC,
    PUT,
    PUT_LEASED,
    Head,
    Record,
    decode_name,
    decode_records,
    encode_key,
    encode_record,
    key_file_header,
)
from l3fabric.datastore.file_leases import LeaseTable

log = logging.getLogger(__name__)

_MAX_NAME = 255  # NAME_MAX on every Linux file system we care about
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class FileDatastore:
    """Datastore in a directory; see the module docstring for the layout.

    Safe for many processes and threads at once. The directory is created and
    recovered on first use. A forked child must open its own instance.
    clock times leases; every instance on one store must use the same one.
    """

    def __init__(
        self,
        path: Path,
        *,
        journal_limit: int = 8192,
        poll_interval: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if journal_limit < 2:
            raise ValueError(f"journal_limit must be at least 2, not {journal_limit}")
        if not 0 < poll_interval <= 0.05:
            raise ValueError(f"poll_interval must be in (0, 0.05] seconds, not {poll_interval}")
        self.path = Path(path)
        self._keys = self.path / "keys"
        self._tmp = self.path / "tmp"
        # Plain strings for the per-operation paths: pathlib costs more than
        # the system calls on tmpfs.
        self._keys_prefix = f"{self._keys}/"
        self._tmp_prefix = f"{self._tmp}/{os.getpid()}-{id(self):x}-"
        self._journal = self.path / "journal"
        self._clock = clock
        self._leases = LeaseTable(self.path / "leases", clock, self._write_file)
        self._journal_limit = journal_limit
        self._poll_interval = poll_interval
        # flock excludes other open files, not other threads sharing ours.
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self._rev_fd: int | None = None
        self._journal_writer: tuple[int | None, int] = (None, 0)  # fd, generation
        self._closed = False
        self._tmp_serial = 0
        # (generation, revision, journal offset just past it) where the last
        # watch read up to, so that a following watch need not scan the journal.
        self._cursor: tuple[int, int, int] = (0, -1, 0)

    def __repr__(self) -> str:
        return f"FileDatastore({str(self.path)!r})"

    # -- reading -----------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        name = self._name(validate_key(key))
        self._ready()
        self._expire_leases()
        return self._read_key_file(self._keys_prefix + name, key)

    def list(self, prefix: str) -> list[KeyValue]:
        wanted = encode_key(validate_prefix(prefix))
        self._ready()
        self._expire_leases()
        found = []
        for name in os.listdir(self._keys):
            if not name.startswith(wanted):
                continue
            key = decode_name(name)
            kv = self._read_key_file(self._keys_prefix + name, key) if key else None
            if kv is not None:
                found.append(kv)
        found.sort(key=lambda kv: kv.key)
        return found

    def revision(self) -> int:
        self._ready()
        self._expire_leases()
        return self._read_head().revision

    def watch(
        self, prefix: str, since_revision: int, timeout: float
    ) -> tuple[int, builtins.list[WatchEvent]]:
        validate_prefix(prefix)
        if not isinstance(since_revision, int) or since_revision < 0:
            raise ValueError(f"since_revision must be an int >= 0, not {since_revision!r}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
        deadline = time.monotonic() + timeout
        self._ready()
        # Begun before the first read of the head: no write falls between.
        with DirectoryChanges(str(self.path), self._poll_interval) as changes:
            while True:
                self._expire_leases()
                head = self._read_head()
                if since_revision < head.base:
                    raise WatchCompacted(since_revision, head.base)
                if head.revision > since_revision:
                    records = self._read_records(head, since_revision)
                    if records is None:  # compaction replaced the journal under us
                        continue
                    events = [r.event() for r in records if r.key.startswith(prefix)]
                    since_revision = head.revision
                    if events:
                        return since_revision, events
                elif head.revision == since_revision:
                    self._cursor = (head.generation, head.revision, head.journal_end)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return since_revision, []
                changes.wait(remaining)

    # -- writing -----------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        lease: int | None = None,
    ) -> int:
        name = self._name(validate_key(key))
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value for {key} must be bytes, not {type(value).__name__}")
        expected = validate_expect_version(expect_version)
        lease_id = validate_lease(lease)
        self._expire_leases()
        with self._writing() as head:
            current = self._read_version(self._keys_prefix + name)
            _check_expected(key, expected, current)
            if lease_id and self._leases.alive(lease_id) is None:
                raise LeaseExpired(lease_id)
            kind = PUT_LEASED if lease_id else PUT
            return self._commit(head, kind, key, bytes(value), lease_id).revision

    def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        name = self._name(validate_key(key))
        expected = validate_expect_version(expect_version)
        self._expire_leases()
        with self._writing() as head:
            current = self._read_version(self._keys_prefix + name)
            _check_expected(key, expected, current)
            if current is None:
                return False
            self._commit(head, DELETE, key, b"")
            return True

    # -- leases ------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        seconds = validate_ttl(ttl)
        with self._writing():
            return self._leases.grant(seconds).lease_id

    def keep_alive(self, lease_id: int) -> float | None:
        lease_id = validate_lease_id(lease_id)
        with self._writing():
            lease = self._leases.alive(lease_id)
            if lease is None:
                return None
            return self._leases.renew(lease).ttl

    def lease_ttl(self, lease_id: int) -> float | None:
        lease_id = validate_lease_id(lease_id)
        self._ready()
        lease = self._leases.alive(lease_id)
        return None if lease is None else lease.deadline - self._clock()

    def revoke_lease(self, lease_id: int) -> bool:
        lease_id = validate_lease_id(lease_id)
        with self._writing() as head:
            alive = self._leases.alive(lease_id) is not None
            if self._leases.read(lease_id) is not None:
                self._drop_lease(head, lease_id)
            return alive

    def _expire_leases(self) -> None:
        due = self._leases.due()
        if not due:
            return
        with self._writing() as head:
            for lease_id in due:
                if self._leases.alive(lease_id) is None:  # not renewed meanwhile
                    head = self._drop_lease(head, lease_id)

    def _drop_lease(self, head: Head, lease_id: int) -> Head:
        """Delete the lease's keys and then the lease. Lock held."""
        for name in sorted(os.listdir(self._keys)):
            key = decode_name(name)
            if key is not None and self._read_lease_of(self._keys_prefix + name) == lease_id:
                head = self._commit(head, DELETE, key, b"")
        self._leases.remove(lease_id)
        log.info("lease expired or revoked", extra={"lease": f"{lease_id:x}"})
        return head

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            for fd in (self._rev_fd, self._lock_fd, self._journal_writer[0]):
                if fd is not None:
                    os.close(fd)
            self._rev_fd = self._lock_fd = None
            self._journal_writer = (None, 0)

    # -- internals: setup and locking ---------------------------------------

    def _ready(self) -> int:
        rev_fd = self._rev_fd
        if rev_fd is not None:
            return rev_fd
        with self._mutex:
            if self._closed:
                raise DatastoreError(f"datastore {self.path} is closed")
            if self._rev_fd is None:
                self._initialise()
            assert self._rev_fd is not None
            return self._rev_fd

    def _initialise(self) -> None:
        try:
            for directory in (self.path, self._keys, self._tmp, self._leases.directory):
                directory.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DatastoreError(f"cannot open datastore directory {self.path}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                rev_fd = self._set_up_locked()
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._rev_fd = rev_fd

    def _set_up_locked(self) -> int:
        # Only lock holders write temporary files, so any left are from a
        # writer that died.
        for stale in self._tmp.iterdir():
            stale.unlink(missing_ok=True)
        if not self._journal.exists():
            self._write_journal(generation=1, base=0, body=b"")
        rev_path = self.path / "rev"
        if not rev_path.exists():
            # Zeros fail the checksum, so recovery rebuilds it from the journal.
            self._write_file(rev_path, bytes(HEAD.size))
        rev_fd = os.open(rev_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            boot_path = self.path / "boot"
            boot = _boot_id()
            after_reboot = not boot_path.exists() or boot_path.read_text() != boot
            self._recover(rev_fd, full=after_reboot)
            if after_reboot:
                self._leases.restart_all()
                self._write_file(boot_path, boot.encode())
        except BaseException:
            os.close(rev_fd)
            raise
        return rev_fd

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Head]:
        self._ready()
        with self._mutex:
            if self._closed or self._lock_fd is None or self._rev_fd is None:
                raise DatastoreError(f"datastore {self.path} is closed")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield self._recover(self._rev_fd, full=False)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- internals: journal ----------------------------------------------------

    def _recover(self, rev_fd: int, *, full: bool) -> Head:
        """Bring keys/ and rev up to the journal. Called with the lock held."""
        head = Head.unpack(os.pread(rev_fd, HEAD.size, 0))
        with open(self._journal, "rb") as journal:
            generation, base = self._journal_header(journal.read(JOURNAL_HEADER.size))
            size = os.fstat(journal.fileno()).st_size
            trusted = (
                not full
                and head is not None
                and head.generation == generation
                and JOURNAL_HEADER.size <= head.journal_end <= size
            )
            if trusted and head is not None:
                if head.journal_end == size:
                    return head
                start, revision = head.journal_end, head.revision
            else:
                start, revision = JOURNAL_HEADER.size, base
                log.info("replaying the whole journal of %s", self.path)
            journal.seek(start)
            data = journal.read(size - start)
        end = start
        for record in decode_records(data, start):
            if record.revision != revision + 1:
                raise DatastoreError(
                    f"journal {self._journal} is damaged: record at offset {end} has "
                    f"revision {record.revision}, expected {revision + 1}"
                )
            self._apply(
                record.kind, record.key, record.value, record.revision, record.lease, replay=True
            )
            revision, end = record.revision, record.end
        if end < size:
            log.warning(
                "discarding %d bytes of an unfinished write at the end of %s",
                size - end,
                self._journal,
            )
            os.truncate(self._journal, end)
        recovered = Head(revision, end, generation, base)
        os.pwrite(rev_fd, recovered.pack(), 0)
        return recovered

    def _commit(self, head: Head, kind: int, key: str, value: bytes, lease: int = 0) -> Head:
        record = encode_record(head.revision + 1, kind, key, value, lease)
        fd = self._journal_fd(head.generation)
        if os.pwrite(fd, record, head.journal_end) != len(record):
            raise DatastoreError(f"short write to {self._journal} (file system full?)")
        os.fdatasync(fd)
        self._apply(kind, key, value, head.revision + 1, lease, replay=False)
        committed = Head(
            head.revision + 1, head.journal_end + len(record), head.generation, head.base
        )
        assert self._rev_fd is not None
        os.pwrite(self._rev_fd, committed.pack(), 0)
        if committed.revision - committed.base > self._journal_limit:
            committed = self._compact(committed)
        return committed

    def _journal_fd(self, generation: int) -> int:
        """The journal open for writing, reopened after compaction replaced it."""
        fd, open_generation = self._journal_writer
        if fd is not None and open_generation == generation:
            return fd
        if fd is not None:
            os.close(fd)
        self._journal_writer = (None, 0)
        fd = os.open(self._journal, os.O_WRONLY | os.O_CLOEXEC)
        self._journal_writer = (fd, generation)
        return fd

    def _apply(
        self, kind: int, key: str, value: bytes, revision: int, lease: int, *, replay: bool
    ) -> None:
        path = self._keys_prefix + encode_key(key)
        if replay:
            current = self._read_version(path)
            if current is not None and current >= revision:
                return
        if kind == PUT:
            self._write_file(path, KEY_FILE.pack(KEY_MAGIC, revision) + value)
        elif kind == PUT_LEASED:
            header = LEASED_KEY_FILE.pack(LEASED_KEY_MAGIC, revision, lease)
            self._write_file(path, header + value)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _compact(self, head: Head) -> Head:
        """Drop the older half of the journal. Watchers further behind than
        what is kept get WatchCompacted and list again."""
        new_base = head.revision - self._journal_limit // 2
        # Key files are renamed into place without fsync: until now the
        # journal was their durable copy. Flush them before dropping it.
        os.sync()
        with open(self._journal, "rb") as journal:
            journal.seek(JOURNAL_HEADER.size)
            data = journal.read(head.journal_end - JOURNAL_HEADER.size)
        keep_from = next(
            (r.end for r in decode_records(data, JOURNAL_HEADER.size) if r.revision == new_base),
            None,
        )
        if keep_from is None:
            raise DatastoreError(f"journal {self._journal} is damaged: revision {new_base} missing")
        body = data[keep_from - JOURNAL_HEADER.size :]
        self._write_journal(head.generation + 1, new_base, body)
        compacted = Head(
            head.revision, JOURNAL_HEADER.size + len(body), head.generation + 1, new_base
        )
        assert self._rev_fd is not None
        os.pwrite(self._rev_fd, compacted.pack(), 0)
        log.debug("compacted %s to revisions %d..%d", self._journal, new_base + 1, head.revision)
        return compacted

    def _write_journal(self, generation: int, base: int, body: bytes) -> None:
        header = JOURNAL_HEADER.pack(JOURNAL_MAGIC, JOURNAL_FORMAT, generation, base)
        self._write_file(self._journal, header + body, durable=True)

    def _journal_header(self, data: bytes) -> tuple[int, int]:
        if len(data) != JOURNAL_HEADER.size:
            raise DatastoreError(f"journal {self._journal} is truncated")
        magic, fmt, generation, base = JOURNAL_HEADER.unpack(data)
        if magic != JOURNAL_MAGIC or fmt != JOURNAL_FORMAT:
            raise DatastoreError(f"{self._journal} is not an l3fabric journal (format {fmt})")
        return generation, base

    def _read_head(self) -> Head:
        rev_fd = self._ready()
        for _ in range(100):
            head = Head.unpack(os.pread(rev_fd, HEAD.size, 0))
            if head is not None:
                return head
            time.sleep(0.001)  # a writer is halfway through updating it
        raise DatastoreError(f"{self.path / 'rev'} is damaged; run any write to recover it")

    def _read_records(self, head: Head, since: int) -> builtins.list[Record] | None:
        """Records since+1 .. head.revision, or None if the journal changed
        generation between reading rev and opening it."""
        with open(self._journal, "rb") as journal:
            generation, _ = self._journal_header(journal.read(JOURNAL_HEADER.size))
            if generation != head.generation:
                return None
            cursor_gen, cursor_rev, cursor_end = self._cursor
            if cursor_gen == generation and cursor_rev <= since:
                start = cursor_end
            else:
                start = JOURNAL_HEADER.size
            journal.seek(start)
            data = journal.read(head.journal_end - start)
        records = [r for r in decode_records(data, start) if r.revision > since]
        if not records or records[-1].revision != head.revision:
            raise DatastoreError(
                f"journal {self._journal} is damaged: revisions up to {head.revision} "
                f"are committed but not all are readable"
            )
        self._cursor = (generation, head.revision, head.journal_end)
        return records

    # -- internals: files ---------------------------------------------------------

    def _name(self, key: str) -> str:
        name = encode_key(key)
        if len(name) > _MAX_NAME:
            raise InvalidKey(f"key {key[:40]!r}... is too long once encoded as a file name")
        return name

    def _read_key_file(self, path: str, key: str) -> KeyValue | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        version, lease, start = key_file_header(data, path)
        return KeyValue(key, data[start:], version, lease)

    def _read_header(self, path: str) -> tuple[int, int] | None:
        try:
            with open(path, "rb") as f:
                data = f.read(LEASED_KEY_FILE.size)
        except FileNotFoundError:
            return None
        version, lease, _ = key_file_header(data, path)
        return version, lease

    def _read_version(self, path: str) -> int | None:
        header = self._read_header(path)
        return None if header is None else header[0]

    def _read_lease_of(self, path: str) -> int:
        header = self._read_header(path)
        return 0 if header is None else header[1]

    def _write_file(self, target: str | Path, data: bytes, *, durable: bool = False) -> None:
        """Replace target atomically. Only called with the lock held."""
        self._tmp_serial += 1
        tmp = f"{self._tmp_prefix}{self._tmp_serial}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        if durable:
            dir_fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _check_expected(key: str, expected: int | None, current: int | None) -> None:
    if expected is None:
        return
    if expected == 0 and current is None:
        return
    if current != expected:
        raise VersionConflict(key, expected, current)
