"""Waiting for a file datastore to change: inotify on its directory.

A watch on the file datastore used to poll the store's revision every 20 ms,
and an agent keeps two watches open (the node registry, the service
records): some 100 wake-ups a second, about 1 % of a core on an idle node.
Every write updates the `rev` file in the store's directory, so an inotify
watch on that directory wakes a waiting watcher as soon as any process
writes, and otherwise not at all.

Under a burst of writes the waiter still returns at most once a poll
interval, so that the watcher reads many writes at once. Leases expire by
time, not by a write, so a waiter still wakes every
LEASE_CHECK seconds to let the caller expire them. Where inotify is not
available (the limit of instances reached, a filesystem without it) the
waiter polls at the caller's interval as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import time
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# How late an expired lease may be noticed by a waiting watcher.
LEASE_CHECK = 0.25
_EVENTS = IN_MODIFY | IN_MOVED_TO | IN_CREATE


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


class DirectoryChanges:
    """`with DirectoryChanges(path, poll) as changes: changes.wait(t)` returns
    when something in the directory changed since the watch began or since
    the last wait, after LEASE_CHECK, or after t, whichever is first. Begin
    it before reading what it guards, so no change falls in between."""

    def __init__(
        self,
        path: str,
        poll_interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._path = path
        self._poll_interval = poll_interval
        self._clock = clock
        self._sleep = sleep
        self._fd: int | None = None

    def __enter__(self) -> DirectoryChanges:
        self._fd = _inotify(self._path)
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def notified(self) -> bool:
        """False: inotify was not available, wait() polls."""
        return self._fd is not None

    def pending(self) -> bool:
        """A change has been notified and not yet waited for (never blocks)."""
        if self._fd is None:
            return False
        ready, _, _ = select.select([self._fd], [], [], 0)
        return bool(ready)

    def wait(self, timeout: float) -> None:
        if self._fd is None:
            self._sleep(max(0.0, min(timeout, self._poll_interval)))
            return
        began = self._clock()
        ready, _, _ = select.select([self._fd], [], [], max(0.0, min(timeout, LEASE_CHECK)))
        if ready:
            # A burst of writes (10k records registered at start-up) must
            # not wake the watcher once per write: it reads the store at
            # most once a poll interval, as it did when it polled, and idle
            # it reads nothing at all.
            rest = min(self._poll_interval, timeout) - (self._clock() - began)
            if rest > 0:
                self._sleep(rest)
            try:
                while os.read(self._fd, 65536):
                    pass
            except BlockingIOError:
                pass


def _inotify(path: str) -> int | None:
    if _LIBC is None:
        return None
    fd = int(_LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
    if fd < 0:
        log.info("inotify not available, polling", extra={"error": os.strerror(ctypes.get_errno())})
        return None
    if int(_LIBC.inotify_add_watch(fd, os.fsencode(path), _EVENTS)) < 0:
        error = os.strerror(ctypes.get_errno())
        os.close(fd)
        log.info("inotify watch not added, polling", extra={"path": path, "error": error})
        return None
    return fd
