"""A thread that follows a datastore prefix and tells the work loop when it
changed (the mesh follows the node records this way)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from l3fabric.datastore.base import Datastore, WatchCompacted

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 1.0


class PrefixWatcher:
    def __init__(
        self,
        store: Datastore,
        prefix: str,
        *,
        on_change: Callable[[], None],
        stopping: threading.Event,
        timeout: float = WATCH_TIMEOUT,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._on_change = on_change
        self._stopping = stopping
        self._timeout = timeout

    def run(self, revision: int) -> None:
        """Watch from `revision` (the one the first listing saw, so that a
        change between the listing and the watch is not missed)."""
        while not self._stopping.is_set():
            try:
                revision, events = self._store.watch(self._prefix, revision, self._timeout)
                changed = bool(events)
            except WatchCompacted:
                # History is gone: the receiver relists everything.
                revision, changed = self._store.revision(), True
            except Exception as exc:
                # Never die silently: whatever follows this prefix would freeze.
                log.warning(
                    "watch failed, retrying", extra={"prefix": self._prefix, "error": str(exc)}
                )
                self._stopping.wait(self._timeout)
                continue
            if changed:
                self._on_change()
