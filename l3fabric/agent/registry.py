"""The node's record in the datastore, kept under a lease.

A thread of its own keeps the lease alive (a datastore request may take its
whole timeout while the store is down, and the work loop must not wait on
that). A node whose agent dies disappears from every other node's mesh when
its lease expires; a lease lost while the store was away is granted again and
the record rewritten. Whether the store answers is reported to the loop, so
status, the metric and readiness say so, and a return triggers a resync.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Protocol

from l3fabric.datastore.base import Datastore, DatastoreError, LeaseExpired
from l3fabric.datastore.keys import KeyLayout
from l3fabric.model import NodeRecord

log = logging.getLogger(__name__)

# While the store does not answer, try again this often.
RETRY_WHILE_DOWN = 1.0


class NodeRegistration:
    def __init__(
        self,
        store: Datastore,
        keys: KeyLayout,
        record: NodeRecord,
        *,
        ttl: float,
        on_state: Callable[[bool, str], None],
        stopping: threading.Event,
        on_lease: Callable[[int], None] = lambda lease: None,
    ) -> None:
        self._store = store
        self._key = keys.node(record.name)
        self._value = json.dumps(record.to_dict(), sort_keys=True).encode()
        self._ttl = ttl
        self._on_state = on_state
        self._on_lease = on_lease
        self._stopping = stopping
        self._lease = 0
        self._up: bool | None = None
        self._thread: threading.Thread | None = None

    @property
    def lease(self) -> int:
        """The lease the node record lives under now; 0 while there is none.
        Whatever else should go when this node does is written under it."""
        return self._lease

    def register(self) -> None:
        """The first registration, synchronous: an agent that cannot write its
        record at start fails to start (the datastore error says why)."""
        self._write()
        self._set_up(True, "")

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="node-lease", daemon=True)
        thread.start()
        self._thread = thread

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self._ttl / 3 if self._up else RETRY_WHILE_DOWN):
            try:
                if not self._lease or self._store.keep_alive(self._lease) is None:
                    log.warning("node lease lost, registering again", extra={"key": self._key})
                    self._write()
                    # What lived under the old lease went with it.
                    self._on_lease(self._lease)
                self._set_up(True, "")
            except DatastoreError as exc:
                self._set_up(False, str(exc))

    def _write(self) -> None:
        self._lease = self._store.grant_lease(self._ttl)
        try:
            self._store.put(self._key, self._value, lease=self._lease)
        except LeaseExpired:
            self._lease = 0
            raise

    def _set_up(self, up: bool, reason: str) -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("datastore answers, node registered", extra={"key": self._key})
        else:
            log.error("datastore unavailable", extra={"error": reason})
        self._on_state(up, reason)


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class DatastoreHealth:
    """Whether the datastore answers, as the registration thread last saw
    it (set on the work loop); a return after an outage triggers `on_back`."""

    def __init__(self, up_gauge: Gauge, *, on_back: Callable[[], None]) -> None:
        self._gauge = up_gauge
        self._on_back = on_back
        self.error: str | None = None

    def set(self, up: bool, why: str) -> None:
        was_down = self.error is not None
        self.error = None if up else why or "datastore unavailable"
        self._gauge.set(1 if up else 0)
        if up and was_down:
            self._on_back()
