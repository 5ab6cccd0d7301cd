"""The DNS server's in-memory copy of the records, fed by a datastore watch.

Queries never read the datastore: the view indexes every record under each
of its owner's ancestor names, so "every record at or below this name"
(what a SkyDNS lookup returns) is one dict lookup. The feeder lists the
prefix once, then follows the watch from the revision it read before the
list (events it replays that the list already held are idempotent); when
the history it needs is compacted away it lists again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from l3fabric.datastore.base import (
    Datastore,
    DatastoreError,
    KeyValue,
    WatchCompacted,
    WatchEvent,
)
from l3fabric.datastore.skydns import DEFAULT_PREFIX, Record, RecordError, parse_record

log = logging.getLogger(__name__)


class RecordView:
    """Records by key, and by every name at or above their owner."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._subtree: dict[str, dict[str, Record]] = {}
        self._invalid: dict[str, str] = {}
        self._revision = 0
        self._loaded = threading.Event()

    @property
    def revision(self) -> int:
        """The datastore revision the view reflects."""
        return self._revision

    @property
    def loaded(self) -> threading.Event:
        """Set once the first full list has been applied."""
        return self._loaded

    def __len__(self) -> int:
        return len(self._records)

    def invalid(self) -> dict[str, str]:
        """Keys under the prefix whose values are not valid records, with why."""
        with self._lock:
            return dict(self._invalid)

    def replace(self, items: Iterable[KeyValue], revision: int) -> None:
        """Start over from a full listing taken at (or after) revision."""
        with self._lock:
            self._records.clear()
            self._subtree.clear()
            self._invalid.clear()
            for kv in items:
                self._put(kv.key, kv.value)
            self._revision = revision
        self._loaded.set()

    def apply(self, events: Iterable[WatchEvent], revision: int) -> None:
        with self._lock:
            for event in events:
                if event.kind == "put" and event.value is not None:
                    self._put(event.key, event.value)
                else:
                    self._delete(event.key)
            self._revision = max(self._revision, revision)

    def lookup(self, name: str) -> list[Record]:
        """Every record at or below name (lowercase, no trailing dot), in key
        order, as CoreDNS's prefix read returns them."""
        with self._lock:
            found = self._subtree.get(name)
            if not found:
                return []
            return [found[key] for key in sorted(found)]

    def exists(self, name: str) -> bool:
        with self._lock:
            return bool(self._subtree.get(name))

    def _put(self, key: str, value: bytes) -> None:
        self._delete(key)
        try:
            record = parse_record(key, value, self.prefix)
        except RecordError as exc:
            self._invalid[key] = str(exc)
            log.warning("ignoring an invalid DNS record", extra={"key": key, "error": str(exc)})
            return
        self._records[key] = record
        for name in _ancestors(record.name):
            self._subtree.setdefault(name, {})[key] = record

    def _delete(self, key: str) -> None:
        self._invalid.pop(key, None)
        record = self._records.pop(key, None)
        if record is None:
            return
        for name in _ancestors(record.name):
            below = self._subtree.get(name)
            if below is not None:
                below.pop(key, None)
                if not below:
                    del self._subtree[name]


def _ancestors(name: str) -> list[str]:
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


class ViewFeeder:
    """Keeps a RecordView in step with the datastore."""

    def __init__(self, store: Datastore, view: RecordView, *, watch_timeout: float = 1.0) -> None:
        self.store = store
        self.view = view
        self.watch_timeout = watch_timeout
        self._watch_prefix = view.prefix + "/"

    def sync(self) -> None:
        revision = self.store.revision()
        items = self.store.list(self._watch_prefix)
        self.view.replace(items, revision)
        log.info(
            "DNS records loaded",
            extra={"records": len(self.view), "revision": revision, "prefix": self.view.prefix},
        )

    def step(self) -> None:
        """Apply one batch of changes (waits up to watch_timeout for one)."""
        try:
            revision, events = self.store.watch(
                self._watch_prefix, self.view.revision, self.watch_timeout
            )
        except WatchCompacted as exc:
            log.info(
                "DNS record watch compacted; listing again",
                extra={"since": exc.since_revision, "oldest": exc.oldest_available},
            )
            self.sync()
            return
        if events:
            self.view.apply(events, revision)

    def run(self, stop: threading.Event, *, retry_interval: float = 1.0) -> None:
        """sync, then step until stop is set; datastore errors are logged and
        retried (the view keeps answering from what it has)."""
        synced = False
        while not stop.is_set():
            try:
                if not synced:
                    self.sync()
                    synced = True
                else:
                    self.step()
            except DatastoreError as exc:
                log.warning("DNS record watch failed; retrying", extra={"error": str(exc)})
                stop.wait(retry_interval)
