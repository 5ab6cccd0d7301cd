"""A single-threaded work loop.

All state changes of the agent (workloads, reconcile, BGP events) run on one
thread, one at a time, so none of them needs a lock. Other threads (control
connections, the speaker's reader) hand work in with `submit` or `call`.
Signal handlers never touch the queue: they only set flags that the loop
checks between items.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long the loop blocks at most; bounds how late it notices a signal flag.
MAX_WAIT = 0.2


class WorkLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any] | None]] = (
            queue.SimpleQueue()
        )
        self._timers: list[tuple[float, int, Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._thread_id: int | None = None
        self.last_iteration = clock()

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run fn on the loop; errors are logged, not returned."""
        self._queue.put((fn, None))

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run fn on the loop and return its result (or raise its error)."""
        if threading.get_ident() == self._thread_id:
            return fn()
        future: Future[T] = Future()
        self._queue.put((fn, future))
        return future.result(timeout=timeout)

    def call_later(self, delay: float, fn: Callable[[], Any]) -> None:
        """Schedule fn; only from the loop's own thread."""
        heapq.heappush(self._timers, (self._clock() + delay, next(self._seq), fn))

    def run(self, should_continue: Callable[[], bool], between: Callable[[], None]) -> None:
        """Process work until should_continue() is false. `between` runs after
        every batch of work (the agent checks its signal flags there)."""
        self._thread_id = threading.get_ident()
        while should_continue():
            self.last_iteration = self._clock()
            self._run_due_timers()
            wait = MAX_WAIT
            if self._timers:
                wait = max(0.0, min(wait, self._timers[0][0] - self._clock()))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            while item is not None:
                self._run(*item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            between()

    def drain(self) -> None:
        """Fail whatever is still queued (at shutdown) so no caller hangs."""
        while True:
            try:
                _fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if future is not None:
                future.set_exception(RuntimeError("agent is shutting down"))

    def _run_due_timers(self) -> None:
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            _due, _seq, fn = heapq.heappop(self._timers)
            self._run(fn, None)

    def _run(self, fn: Callable[[], Any], future: Future[Any] | None) -> None:
        # Per item, not per batch: a long queue of work is progress, not a stall.
        self.last_iteration = self._clock()
        if future is not None and not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except BaseException as exc:
            if future is not None:
                future.set_exception(exc)
            else:
                log.exception(
                    "work item failed", extra={"work_item": getattr(fn, "__name__", repr(fn))}
                )
            if not isinstance(exc, Exception):
                raise
        else:
            if future is not None:
                future.set_result(result)
