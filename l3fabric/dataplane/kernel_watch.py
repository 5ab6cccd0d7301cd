"""Whether the kernel's links, addresses or routes changed since the last look.

The periodic pass dumps every link and route of the node: at 10k workloads
the link dump alone costs the kernel over a second. A socket subscribed to
the kernel's link, address and route notifications tells, without a dump,
that nothing changed since the last pass (Calico Felix likewise works from
netlink notifications between its resyncs).

The socket is never parsed: any notification means "read the kernel
again", and so does one the kernel could not queue (ENOBUFS), a socket
error, or the first look. After a change is seen the socket is replaced by
a fresh one (opened before the old one is closed, so no notification falls
between them) instead of being drained: a queue of 100k route notifications
costs nothing to drop.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)

# rtnetlink multicast groups (linux/rtnetlink.h, the legacy bitmask form).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
WATCHED_GROUPS = (
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)


def _subscribed_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, WATCHED_GROUPS))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class KernelChangeWatch:
    """`changed()` answers "did the kernel change since I last asked?".

    The socket lives in the network namespace of the thread that first asks.
    Not thread-safe (the data plane calls it under its lock).
    """

    def __init__(self, *, opener: Callable[[], socket.socket] = _subscribed_socket) -> None:
        self._opener = opener
        self._socket: socket.socket | None = None

    def changed(self) -> bool:
        if self._socket is None:
            return self._renew()
        try:
            self._socket.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                log.warning("kernel change watch failed", extra={"error": str(exc)})
        return self._renew()

    def _renew(self) -> bool:
        """Start watching afresh; always True (what came before is unknown)."""
        try:
            fresh = self._opener()
        except OSError as exc:
            log.warning("kernel change watch not opened", extra={"error": str(exc)})
            fresh = None
        if self._socket is not None:
            self._socket.close()
        self._socket = fresh
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
