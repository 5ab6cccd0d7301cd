"""A raw NETLINK_ROUTE socket: opened lazily with large buffers and the
options the route path relies on, sequence numbers, datagram send and
receive with a reply timeout, and dumps retried when the kernel reports
them interrupted or lost.

The socket lives in the network namespace of the thread that opened it (on
first use), whichever thread uses it later. Not thread-safe.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import DataplaneError

log = logging.getLogger(__name__)

SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
NLM_F_DUMP_INTR = 0x10

DEFAULT_RCVBUF = 32 * 1024 * 1024
DEFAULT_SNDBUF = 4 * 1024 * 1024
_RECV_SIZE = 1 << 16
_DUMP_ATTEMPTS = 3


class NetlinkSocket:
    def __init__(
        self,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        reply_timeout: float = 30.0,
        opener: Callable[[], socket.socket] | None = None,
    ) -> None:
        """`opener` makes the raw socket (default: one in the calling
        thread's namespace; netns.netlink_socket_in for another one)."""
        self.rcvbuf = rcvbuf
        self.reply_timeout = reply_timeout
        self._opener = opener or _route_socket
        self._socket: socket.socket | None = None
        self._seq = 1

    def _sock(self) -> socket.socket:
        if self._socket is None:
            sock = self._opener()
            try:
                _set_buffer(sock, socket.SO_SNDBUF, SO_SNDBUFFORCE, DEFAULT_SNDBUF)
                _set_buffer(sock, socket.SO_RCVBUF, SO_RCVBUFFORCE, self.rcvbuf)
                # Failed-request replies carry only the request's header, not
                # the whole request, plus the kernel's explanation.
                sock.setsockopt(codec.SOL_NETLINK, codec.NETLINK_CAP_ACK, 1)
                sock.setsockopt(codec.SOL_NETLINK, codec.NETLINK_EXT_ACK, 1)
                # Lets the kernel filter dumps by table, protocol and oif.
                sock.setsockopt(codec.SOL_NETLINK, codec.NETLINK_GET_STRICT_CHK, 1)
                sock.bind((0, 0))
                sock.settimeout(self.reply_timeout)
            except BaseException:
                sock.close()
                raise
            self._socket = sock
        return self._socket

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def next_seqs(self, count: int) -> int:
        """Reserve `count` consecutive sequence numbers; the first one."""
        base = self._seq
        self._seq = (self._seq + count) & 0xFFFFFFFF or 1
        return base

    def send(self, payload: bytes, what: str) -> None:
        """Send one datagram; `what` names it in the error."""
        try:
            self._sock().send(payload)
        except OSError as exc:
            self.close()
            raise DataplaneError(f"{what} failed: {exc}") from exc

    def recv(self) -> bytes:
        """One datagram. ENOBUFS (replies dropped) is left to the caller."""
        try:
            return self._sock().recv(_RECV_SIZE)
        except TimeoutError as exc:
            self.close()
            raise DataplaneError(f"no netlink reply within {self.reply_timeout}s") from exc
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise
            self.close()
            raise DataplaneError(f"reading from netlink failed: {exc}") from exc

    def drain(self) -> None:
        """Discard whatever replies are queued, without waiting for more."""
        sock = self._sock()
        sock.settimeout(0)
        try:
            while True:
                try:
                    sock.recv(_RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
        finally:
            sock.settimeout(self.reply_timeout)

    def ask(self, make_request: Callable[[int], bytes]) -> codec.Message:
        """The kernel's one reply to a request that is not a dump (a get):
        the answer, or the NLMSG_ERROR saying why there is none."""
        seq = self.next_seqs(1)
        self.send(make_request(seq), "netlink request")
        while True:
            for msg in codec.iter_messages(self.recv()):
                if msg.seq == seq:
                    return msg

    def dump(self, make_request: Callable[[int], bytes]) -> list[codec.Message]:
        """The messages of one dump (`make_request` builds it for a sequence
        number), asked again while the kernel says it was interrupted."""
        for attempt in range(1, _DUMP_ATTEMPTS + 1):
            seq = self.next_seqs(1)
            self.send(make_request(seq), "netlink dump request")
            try:
                messages, interrupted = self._collect_dump(seq)
                lost = False
            except OSError as exc:  # ENOBUFS: part of the dump was dropped
                log.warning(
                    "netlink dump lost messages", extra={"error": str(exc), "attempt": attempt}
                )
                self.drain()
                messages, interrupted, lost = [], True, True
            if not interrupted:
                return messages
            log.info("netlink dump interrupted by a concurrent change", extra={"attempt": attempt})
        if lost:
            raise DataplaneError(f"netlink dump lost messages {_DUMP_ATTEMPTS} times")
        # Still changing under us: a dump of a moving table is the best there is.
        log.warning("netlink dump still inconsistent, using it", extra={"attempts": _DUMP_ATTEMPTS})
        return messages

    def _collect_dump(self, seq: int) -> tuple[list[codec.Message], bool]:
        messages: list[codec.Message] = []
        interrupted = False
        while True:
            for msg in codec.iter_messages(self.recv()):
                if msg.seq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if msg.flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if msg.msg_type == codec.NLMSG_DONE:
                    return messages, interrupted
                if msg.msg_type == codec.NLMSG_ERROR:
                    ack = codec.decode_ack(msg)
                    raise DataplaneError(
                        f"netlink dump failed: {ack.message or os.strerror(ack.errno)}"
                    )
                messages.append(msg)


def _route_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)


def _set_buffer(sock: socket.socket, option: int, force_option: int, size: int) -> None:
    """Ask for size; the FORCE variant ignores net.core.*mem_max but needs root."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_option, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
