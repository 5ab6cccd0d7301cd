"""Clocks for the convergence bench: an ICMP prober and a route watcher.

Both are plain sockets opened inside a namespace (a socket stays in the
namespace it was created in), then read from the bench's own thread, so no
helper process or pipe sits between the event and the timestamp. Times are
time.monotonic(), which every namespace shares.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from l3fabric.dataplane.netns import run_in_netns

# A host prefix as the kernel reports it: (IPv4 address as int, prefix length).
Prefix = tuple[int, int]

_NLMSG_HDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_GETROUTE = 24, 25, 26
_RTMGRP_IPV4_ROUTE = 0x40
_RTA_DST, _RTA_TABLE = 1, 15
_RT_TABLE_MAIN = 254
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_SO_RCVBUFFORCE = 33
_RCVBUF = 64 * 1024 * 1024  # 10k route notifications need ~10 MB of socket buffer

_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0


def prefix_of(network: str | ipaddress.IPv4Network) -> Prefix:
    net = ipaddress.IPv4Network(network)
    return int(net.network_address), net.prefixlen


class NetlinkOverrun(Exception):
    """The kernel dropped route notifications (ENOBUFS); the count is unknown."""


def _parse_routes(data: bytes, protocol: int) -> tuple[list[tuple[bool, Prefix]], bool]:
    """(added?, prefix) for each IPv4 main-table route of `protocol` in a
    netlink datagram, and whether a dump ended in it."""
    found: list[tuple[bool, Prefix]] = []
    done = False
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size:
            break
        body = offset + _NLMSG_HDR.size
        if msg_type == _NLMSG_DONE:
            done = True
        elif msg_type == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, body)
            if code:
                raise OSError(-code, f"route dump failed: {os.strerror(-code)}")
        elif msg_type in (_RTM_NEWROUTE, _RTM_DELROUTE):
            family, dst_len, _src, _tos, table, proto, _scope, _type, _fl = _RTMSG.unpack_from(
                data, body
            )
            if family == socket.AF_INET and proto == protocol:
                dst = 0
                attr = body + _RTMSG.size
                end = offset + length
                while attr + _RTATTR.size <= end:
                    alen, atype = _RTATTR.unpack_from(data, attr)
                    if alen < _RTATTR.size:
                        break
                    if atype == _RTA_DST:
                        (dst,) = struct.unpack_from("!I", data, attr + _RTATTR.size)
                    elif atype == _RTA_TABLE:
                        (table,) = struct.unpack_from("=I", data, attr + _RTATTR.size)
                    attr += (alen + 3) & ~3
                if table == _RT_TABLE_MAIN:
                    found.append((msg_type == _RTM_NEWROUTE, (dst, dst_len)))
        offset += (length + 3) & ~3
    return found, done


def dump_prefixes(netns_path: str, protocol: int) -> set[Prefix]:
    """IPv4 main-table prefixes of `protocol` in a namespace, by one netlink dump."""
    sock = run_in_netns(
        netns_path,
        lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE),
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
        request = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        header = _NLMSG_HDR.pack(
            _NLMSG_HDR.size + len(request), _RTM_GETROUTE, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0
        )
        sock.send(header + request)
        present: set[Prefix] = set()
        while True:
            routes, done = _parse_routes(sock.recv(1 << 20), protocol)
            present.update(prefix for _added, prefix in routes)
            if done:
                return present
    finally:
        sock.close()


class RouteWatcher:
    """Follows one namespace's IPv4 routes of one protocol through netlink
    notifications, and says when a set of prefixes is all present.

    A timestamp is taken when the datagram holding the notification is read,
    so it is late by at most the parsing of the datagrams before it.
    """

    def __init__(self, netns_path: str, protocol: int) -> None:
        self.netns_path = netns_path
        self.protocol = protocol
        self.present: set[Prefix] = set()
        self.first_seen: float | None = None  # first add of a watched prefix
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Subscribe first, then dump, so nothing between the two is missed."""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
            sock.bind((0, _RTMGRP_IPV4_ROUTE))
            return sock

        self._sock = run_in_netns(self.netns_path, make)
        self._sock.setblocking(False)
        self.present = dump_prefixes(self.netns_path, self.protocol)
        self.first_seen = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def fileno(self) -> int:
        assert self._sock is not None, "RouteWatcher.open() first"
        return self._sock.fileno()

    def drain(self, watched: set[Prefix] | None = None) -> None:
        """Read every queued notification without blocking."""
        assert self._sock is not None, "RouteWatcher.open() first"
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    raise NetlinkOverrun("route notifications were dropped") from exc
                raise
            now = time.monotonic()
            for added, prefix in _parse_routes(data, self.protocol)[0]:
                if added:
                    self.present.add(prefix)
                    if self.first_seen is None and (watched is None or prefix in watched):
                        self.first_seen = now
                else:
                    self.present.discard(prefix)

    def wait_all(self, wanted: Iterable[Prefix], timeout: float) -> float | None:
        """The time at which every wanted prefix was present, or None at the
        deadline. A dropped notification falls back to dumps every 50 ms."""
        want = set(wanted)
        deadline = time.monotonic() + timeout
        polling = False
        while True:
            if polling:
                self.present = dump_prefixes(self.netns_path, self.protocol)
                now = time.monotonic()
            else:
                try:
                    self.drain(want)
                except NetlinkOverrun:
                    polling = True
                    continue
                now = time.monotonic()
            if want <= self.present:
                return now
            if now > deadline:
                return None
            if polling:
                time.sleep(0.05)
            else:
                select.select([self], [], [], min(0.5, max(0.0, deadline - now)))


@dataclass(frozen=True)
class ProbeResult:
    reply_at: float | None  # first echo reply from the target
    probes_sent: int


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class IcmpProber:
    """Sends echo requests from inside a namespace until the target answers."""

    def __init__(self, netns_path: str, interval: float = 0.001) -> None:
        self.netns_path = netns_path
        self.interval = interval
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self._sock: socket.socket | None = None

    def open(self) -> None:
        self._sock = run_in_netns(
            self.netns_path,
            lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        )
        self._sock.setblocking(False)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _echo(self) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        head = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, self._ident, self._seq)
        payload = b"l3fabric-bench"
        return (
            struct.pack(
                "!BBHHH", _ICMP_ECHO_REQUEST, 0, _checksum(head + payload), self._ident, self._seq
            )
            + payload
        )

    def _is_reply_from(self, data: bytes, target: int) -> bool:
        if len(data) < 28:
            return False
        ihl = (data[0] & 0x0F) * 4
        (source,) = struct.unpack_from("!I", data, 12)
        icmp_type, _code, _sum, ident = struct.unpack_from("!BBHH", data, ihl)
        return icmp_type == _ICMP_ECHO_REPLY and ident == self._ident and source == target

    def probe(self, target: str, timeout: float) -> ProbeResult:
        """Ping `target` every `interval` until it replies or `timeout` passes."""
        sock = self._sock
        assert sock is not None, "IcmpProber.open() first"
        address = int(ipaddress.IPv4Address(target))
        deadline = time.monotonic() + timeout
        sent = 0
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= next_send:
                try:
                    sock.sendto(self._echo(), (target, 0))
                    sent += 1
                except OSError as exc:
                    # wb's own namespace always has a default route; anything
                    # but a transient unreachable is a bench bug.
                    if exc.errno not in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                        raise
                next_send = now + self.interval
            if now > deadline:
                return ProbeResult(None, sent)
            ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
            while ready:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                if self._is_reply_from(data, address):
                    return ProbeResult(time.monotonic(), sent)


class RouteRecorder:
    """A thread noting when each IPv4 prefix of one protocol is first added in
    a namespace. The bench's main thread sleeps in a socket call or select
    while an add is in flight, so this thread takes its timestamps at once."""

    def __init__(self, netns_path: str, protocol: int) -> None:
        self.netns_path = netns_path
        self.protocol = protocol
        self.added: dict[Prefix, float] = {}
        self.overrun = False
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
            sock.bind((0, _RTMGRP_IPV4_ROUTE))
            sock.settimeout(0.2)
            return sock

        self._sock = run_in_netns(self.netns_path, make)
        self._thread = threading.Thread(target=self._run, name="route-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overrun = True
                    continue
                return
            now = time.monotonic()
            for added, prefix in _parse_routes(data, self.protocol)[0]:
                if added:
                    self.added.setdefault(prefix, now)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


_ETH_P_IP = 0x0800
_BGP_MARKER = b"\xff" * 16
_BGP_OPEN, _BGP_UPDATE, _BGP_KEEPALIVE = 1, 2, 4


class BgpWireClock:
    """Watches BGP messages from one peer arriving on an interface (a packet
    socket in the receiving node's namespace) and notes when the session
    became Established there: the first KEEPALIVE after the peer's OPEN.
    Both systems are timed by the same bytes, not by asking the speakers."""

    def __init__(self, netns_path: str, ifname: str, peer: str) -> None:
        self.netns_path = netns_path
        self.ifname = ifname
        self.peer = int(ipaddress.IPv4Address(peer))
        self.open_at: float | None = None
        self.established_at: float | None = None
        self.first_update_at: float | None = None
        self._sock: socket.socket | None = None

    def open(self) -> None:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(_ETH_P_IP))
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RCVBUF)
            sock.bind((self.ifname, _ETH_P_IP))
            return sock

        self._sock = run_in_netns(self.netns_path, make)
        self._sock.setblocking(False)
        self.open_at = self.established_at = self.first_update_at = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def fileno(self) -> int:
        assert self._sock is not None, "BgpWireClock.open() first"
        return self._sock.fileno()

    def drain(self) -> None:
        assert self._sock is not None, "BgpWireClock.open() first"
        while True:
            try:
                packet = self._sock.recv(65536)
            except BlockingIOError:
                return
            now = time.monotonic()
            for msg_type in self._bgp_types(packet):
                if msg_type == _BGP_OPEN and self.open_at is None:
                    self.open_at = now
                elif msg_type == _BGP_KEEPALIVE and self.open_at and not self.established_at:
                    self.established_at = now
                elif msg_type == _BGP_UPDATE and self.first_update_at is None:
                    self.first_update_at = now

    def _bgp_types(self, packet: bytes) -> list[int]:
        """Types of the BGP messages starting in one TCP segment from the peer
        (a message split across segments is skipped: only the first few, which
        are small, matter here)."""
        if len(packet) < 40 or packet[9] != socket.IPPROTO_TCP:
            return []
        (source,) = struct.unpack_from("!I", packet, 12)
        if source != self.peer:
            return []
        ihl = (packet[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", packet, ihl)
        if 179 not in (sport, dport):
            return []
        payload = packet[ihl + (packet[ihl + 12] >> 4) * 4 :]
        types = []
        offset = 0
        while offset + 19 <= len(payload) and payload[offset : offset + 16] == _BGP_MARKER:
            length, msg_type = struct.unpack_from("!HB", payload, offset + 16)
            types.append(msg_type)
            if length < 19:
                break
            offset += length
        return types
