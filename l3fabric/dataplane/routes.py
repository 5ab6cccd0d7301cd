"""Bulk route programming over a raw NETLINK_ROUTE socket.

pyroute2 spends far more time building and parsing messages than the kernel
spends installing a route, so the hot path packs messages with struct (see
codec.py), sends a few hundred per datagram and only reads back the replies
that matter: the kernel always reports a failed request, and the last request
of each batch asks for an ack, which tells us every earlier reply of the batch
has already been queued (rtnetlink handles a datagram's requests in order,
inside the send call).

The socket lives in the network namespace of the thread that opened it (on
first use), whichever thread uses it later.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping, Sequence

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import DataplaneError, RouteFailure
from l3fabric.model import IPNetwork, NextHop, Route, RouteKind, is_owned_iface

log = logging.getLogger(__name__)

SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
NLM_F_DUMP_INTR = 0x10
_FLAGS_AT = struct.Struct("=H")  # nlmsg_flags sits at byte 6 of a message
_FLAGS_OFFSET = 6

# Deleting what is already gone is success: delete must be idempotent.
_ABSENT = frozenset({errno.ENOENT, errno.ESRCH})

DEFAULT_BATCH = 512
DEFAULT_RCVBUF = 32 * 1024 * 1024
DEFAULT_SNDBUF = 4 * 1024 * 1024
_RECV_SIZE = 1 << 16
_DUMP_ATTEMPTS = 3


class RouteSocket:
    """Route programming and dumps for the current network namespace.

    Not thread-safe: the caller serialises use (NetlinkDataplane holds a lock).
    """

    def __init__(
        self,
        *,
        protocol: int,
        batch_size: int = DEFAULT_BATCH,
        rcvbuf: int = DEFAULT_RCVBUF,
        reply_timeout: float = 30.0,
    ) -> None:
        if not 1 <= batch_size <= 65536:
            raise ValueError(f"batch_size must be within 1..65536, got {batch_size}")
        if not 0 < protocol < 256:
            raise ValueError(f"route protocol must be within 1..255, got {protocol}")
        self.protocol = protocol
        self.batch_size = batch_size
        self.rcvbuf = rcvbuf
        self.reply_timeout = reply_timeout
        self._encoder = codec.RouteEncoder(protocol)
        self._socket: socket.socket | None = None
        self._seq = 1

    # -- socket -------------------------------------------------------------

    def _sock(self) -> socket.socket:
        if self._socket is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
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

    def _next_seqs(self, count: int) -> int:
        base = self._seq
        self._seq = (self._seq + count) & 0xFFFFFFFF or 1
        return base

    def _recv(self) -> bytes:
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

    # -- dumps --------------------------------------------------------------

    def _dump(self, make_request: Callable[[int], bytes]) -> list[codec.Message]:
        for attempt in range(1, _DUMP_ATTEMPTS + 1):
            seq = self._next_seqs(1)
            try:
                self._sock().send(make_request(seq))
            except OSError as exc:
                self.close()
                raise DataplaneError(f"netlink dump request failed: {exc}") from exc
            try:
                messages, interrupted = self._collect_dump(seq)
                lost = False
            except OSError as exc:  # ENOBUFS: part of the dump was dropped
                log.warning("netlink dump lost messages (%s), attempt %d", exc, attempt)
                self._drain()
                messages, interrupted, lost = [], True, True
            if not interrupted:
                return messages
            log.info("netlink dump interrupted by a concurrent change (attempt %d)", attempt)
        if lost:
            raise DataplaneError(f"netlink dump lost messages {_DUMP_ATTEMPTS} times")
        # Still changing under us: a dump of a moving table is the best there is.
        log.warning("netlink dump still inconsistent after %d attempts; using it", _DUMP_ATTEMPTS)
        return messages

    def _collect_dump(self, seq: int) -> tuple[list[codec.Message], bool]:
        messages: list[codec.Message] = []
        interrupted = False
        while True:
            for msg in codec.iter_messages(self._recv()):
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

    def links(self) -> dict[str, int]:
        """Interface name -> ifindex for every link in this namespace."""
        names: dict[str, int] = {}
        for msg in self._dump(codec.link_dump_request):
            if msg.msg_type == codec.RTM_NEWLINK:
                index, name = codec.decode_link_name(msg.payload)
                names[name] = index
        return names

    def dump_raw(self, family: int, oif: int = 0) -> list[codec.DecodedRoute]:
        """Our unicast routes of one family in the main table (optionally one oif)."""
        routes = []

        def request(seq: int) -> bytes:
            return codec.route_dump_request(seq, family, self.protocol, oif)

        for msg in self._dump(request):
            if msg.msg_type != codec.RTM_NEWROUTE:
                continue
            route = codec.decode_route(msg.payload)
            if (
                route.protocol == self.protocol
                and route.table == codec.RT_TABLE_MAIN
                and route.route_type == codec.RTN_UNICAST
                and (not oif or any(hop.ifindex == oif for hop in route.nexthops))
            ):
                routes.append(route)
        return routes

    def dump(self) -> list[Route]:
        """Our routes, v4 then v6, as model values (see RouteConverter)."""
        converter = RouteConverter({index: name for name, index in self.links().items()})
        return [
            converter.convert(raw)
            for family in (socket.AF_INET, socket.AF_INET6)
            for raw in self.dump_raw(family)
        ]

    # -- programming --------------------------------------------------------

    def program(
        self,
        replace: Sequence[Route],
        delete: Sequence[IPNetwork],
        *,
        links: Mapping[str, int] | None = None,
    ) -> list[RouteFailure]:
        """Deletes are sent before replaces, so a prefix in both ends up installed.

        `links` (name -> ifindex) spares a dump of every link when the caller
        knows the interfaces its routes use: a node with 10k workload veths
        takes seconds to dump them, which must not happen per workload."""
        failures: list[RouteFailure] = []
        ops: list[tuple[IPNetwork, str]] = []
        messages: list[bytes] = []
        base = self._next_seqs(len(replace) + len(delete))
        encoder = self._encoder
        for prefix in delete:
            family = codec.FAMILY_OF_VERSION[prefix.version]
            seq = (base + len(ops)) & 0xFFFFFFFF
            dst = prefix.network_address.packed
            messages.append(encoder.delete(seq, family, dst, prefix.prefixlen))
            ops.append((prefix, "delete"))
        if replace:
            if links is None:
                links = self.links() if any(_needs_links(r) for r in replace) else {}
            # Routes share a few next-hop sets; each is resolved and encoded once.
            shapes: dict[_ShapeKey, _Shape] = {}
            for route in replace:
                seq = (base + len(ops)) & 0xFFFFFFFF
                encoded = self._encode_replace(seq, route, links, shapes)
                if isinstance(encoded, _Unencodable):
                    failures.append(
                        RouteFailure(route.prefix, "replace", encoded.errno, str(encoded))
                    )
                    continue
                messages.append(encoded)
                ops.append((route.prefix, "replace"))
        for start in range(0, len(messages), self.batch_size):
            end = min(start + self.batch_size, len(messages))
            failures.extend(self._send_batch(messages, ops, start, end, base))
        return failures

    def _encode_replace(
        self, seq: int, route: Route, links: Mapping[str, int], shapes: dict[_ShapeKey, _Shape]
    ) -> bytes | _Unencodable:
        prefix = route.prefix
        key = (prefix.version, route.nexthops)
        shape = shapes.get(key)
        if shape is None:
            shape = shapes[key] = _shape(prefix, route.nexthops, links)
        if isinstance(shape, _Unencodable):
            return shape
        family = codec.FAMILY_OF_VERSION[prefix.version]
        dst = prefix.network_address.packed
        if isinstance(shape, bytes):
            scope = codec.RT_SCOPE_UNIVERSE
            if family == socket.AF_INET and all(hop.gateway is None for hop in route.nexthops):
                scope = codec.RT_SCOPE_LINK
            return self._encoder.replace_multipath(seq, family, dst, prefix.prefixlen, scope, shape)
        if shape.gateway is None:
            return self._encoder.replace_dev(seq, family, dst, prefix.prefixlen, shape.ifindex)
        return self._encoder.replace_gateway(
            seq, family, dst, prefix.prefixlen, shape.gateway, shape.ifindex
        )

    def _send_batch(
        self,
        messages: list[bytes],
        ops: list[tuple[IPNetwork, str]],
        start: int,
        end: int,
        base: int,
    ) -> list[RouteFailure]:
        last = bytearray(messages[end - 1])
        (flags,) = _FLAGS_AT.unpack_from(last, _FLAGS_OFFSET)
        _FLAGS_AT.pack_into(last, _FLAGS_OFFSET, flags | codec.NLM_F_ACK)
        payload = b"".join(messages[start : end - 1]) + last
        last_seq = (base + end - 1) & 0xFFFFFFFF
        sock = self._sock()
        try:
            sock.send(payload)
        except OSError as exc:
            self.close()
            raise DataplaneError(f"sending {end - start} route requests failed: {exc}") from exc
        failures: list[RouteFailure] = []
        while True:
            try:
                data = self._recv()
            except OSError:  # ENOBUFS; _recv turned anything else into DataplaneError
                # Replies were dropped, so which requests failed is unknown;
                # report the whole batch so the caller re-checks it.
                log.warning("netlink replies lost (ENOBUFS); reporting %d routes", end - start)
                self._drain()
                return [
                    RouteFailure(prefix, op, errno.ENOBUFS, "reply lost; state unknown")
                    for prefix, op in ops[start:end]
                ]
            for msg in codec.iter_messages(data):
                if msg.msg_type != codec.NLMSG_ERROR:
                    continue
                ack = codec.decode_ack(msg)
                index = (ack.seq - base) & 0xFFFFFFFF
                if not start <= index < end:
                    continue  # a reply to an earlier, abandoned batch
                prefix, op = ops[index]
                if ack.errno and not (op == "delete" and ack.errno in _ABSENT):
                    text = os.strerror(ack.errno)
                    if ack.message:
                        text = f"{text}: {ack.message}"
                    failures.append(RouteFailure(prefix, op, ack.errno, text))
                if ack.seq == last_seq:
                    return failures

    def _drain(self) -> None:
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


class _Unencodable(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


# A next-hop set, resolved: one RawNextHop, an encoded RTA_MULTIPATH, or why
# it cannot be sent. Keyed by IP version too: a gateway's family must match.
_ShapeKey = tuple[int, tuple[NextHop, ...]]
_Shape = codec.RawNextHop | bytes | _Unencodable


def _shape(prefix: IPNetwork, nexthops: tuple[NextHop, ...], links: Mapping[str, int]) -> _Shape:
    try:
        hops = tuple(_raw_nexthop(prefix, hop, links) for hop in nexthops)
    except _Unencodable as exc:
        return exc
    return hops[0] if len(hops) == 1 else codec.multipath_attr(hops)


def _needs_links(route: Route) -> bool:
    return any(hop.ifname is not None for hop in route.nexthops)


def _raw_nexthop(prefix: IPNetwork, hop: NextHop, links: Mapping[str, int]) -> codec.RawNextHop:
    ifindex = 0
    if hop.ifname is not None:
        found = links.get(hop.ifname)
        if found is None:
            raise _Unencodable(errno.ENODEV, f"no interface named {hop.ifname!r}")
        ifindex = found
    gateway = None
    if hop.gateway is not None:
        if hop.gateway.version != prefix.version:
            raise _Unencodable(
                errno.EAFNOSUPPORT,
                f"gateway {hop.gateway} is IPv{hop.gateway.version}, prefix is IPv{prefix.version}",
            )
        gateway = hop.gateway.packed
    return codec.RawNextHop(gateway, ifindex)


class RouteConverter:
    """Dumped routes as model.Route.

    A next hop with a gateway is reported by its gateway alone: the kernel
    always records the resolved device too, and the RIB describes learned
    routes by gateway, so including it would make every learned route differ
    from what was asked for. A next hop without a gateway is its device.

    Tens of thousands of routes share a handful of next-hop sets, so each set
    is converted once per dump.
    """

    def __init__(self, names: dict[int, str]) -> None:
        self._names = names
        self._hops: dict[tuple[codec.RawNextHop, ...], tuple[tuple[NextHop, ...], RouteKind]] = {}

    def convert(self, raw: codec.DecodedRoute) -> Route:
        prefix: IPNetwork
        if raw.family == socket.AF_INET:
            prefix = ipaddress.IPv4Network((int.from_bytes(raw.dst, "big"), raw.dst_len))
        else:
            prefix = ipaddress.IPv6Network((int.from_bytes(raw.dst, "big"), raw.dst_len))
        cached = self._hops.get(raw.nexthops)
        if cached is None:
            cached = self._hops[raw.nexthops] = self._convert_hops(raw)
        return Route(prefix, *cached)

    def _convert_hops(self, raw: codec.DecodedRoute) -> tuple[tuple[NextHop, ...], RouteKind]:
        make_addr = ipaddress.IPv4Address if raw.family == socket.AF_INET else ipaddress.IPv6Address
        hops = []
        for hop in raw.nexthops:
            if hop.gateway is not None:
                hops.append(NextHop(gateway=make_addr(hop.gateway)))
            else:
                hops.append(NextHop(ifname=self._names.get(hop.ifindex, f"if{hop.ifindex}")))
        local = all(hop.ifname is not None and is_owned_iface(hop.ifname) for hop in hops)
        return tuple(hops), RouteKind.LOCAL_WORKLOAD if local else RouteKind.LEARNED


def _set_buffer(sock: socket.socket, option: int, force_option: int, size: int) -> None:
    """Ask for size; the FORCE variant ignores net.core.*mem_max but needs root."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_option, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
