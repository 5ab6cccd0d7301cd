"""Bulk route programming over a raw NETLINK_ROUTE socket.

pyroute2 spends far more time building and parsing messages than the kernel
spends installing a route, so the hot path packs messages with struct (see
codec.py and route_messages.py), sends a few hundred per datagram and only
reads back the replies that matter: the kernel always reports a failed
request, and the last request of each batch asks for an ack, which tells us
every earlier reply of the batch has already been queued (rtnetlink handles
a datagram's requests in order, inside the send call).

The socket itself (nlsocket.py) lives in the network namespace of the thread
that opened it (on first use), whichever thread uses it later.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Mapping, Sequence

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import RouteFailure
from l3fabric.dataplane.nlsocket import DEFAULT_RCVBUF, NetlinkSocket
from l3fabric.dataplane.route_batches import BatchEncoder, RequestBatch, needs_links
from l3fabric.dataplane.route_messages import RouteConverter
from l3fabric.model import IPNetwork, Route

log = logging.getLogger(__name__)

_FLAGS_AT = struct.Struct("=H")  # nlmsg_flags sits at byte 6 of a message
_FLAGS_OFFSET = 6

# Deleting what is already gone is success: delete must be idempotent.
_ABSENT = frozenset({errno.ENOENT, errno.ESRCH})

DEFAULT_BATCH = 512


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
        self._batches = BatchEncoder(codec.RouteEncoder(protocol))
        self._netlink = NetlinkSocket(rcvbuf=rcvbuf, reply_timeout=reply_timeout)

    def close(self) -> None:
        self._netlink.close()

    # -- dumps --------------------------------------------------------------

    def links(self) -> dict[str, int]:
        """Interface name -> ifindex for every link in this namespace."""
        names: dict[str, int] = {}
        for msg in self._netlink.dump(codec.link_dump_request):
            if msg.msg_type == codec.RTM_NEWLINK:
                index, name = codec.decode_link_name(msg.payload)
                names[name] = index
        return names

    def dump_raw(self, family: int, oif: int = 0) -> list[codec.DecodedRoute]:
        """Our unicast routes of one family in the main table (optionally one oif)."""
        routes = []

        def request(seq: int) -> bytes:
            return codec.route_dump_request(seq, family, self.protocol, oif)

        for msg in self._netlink.dump(request):
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

    def dump(self, links: Mapping[str, int] | None = None) -> list[Route]:
        """Our routes, v4 then v6, as model values (see RouteConverter);
        `links` (a links() result still current) saves a link dump."""
        names = self.links() if links is None else links
        converter = RouteConverter({index: name for name, index in names.items()})
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
        if links is None:
            links = self.links() if needs_links(replace) else {}
        batches, failures = self._batches.encode(
            replace, delete, links, size=self.batch_size, next_seqs=self._netlink.next_seqs
        )
        for batch in batches:
            failures.extend(self._send_batch(batch))
        return failures

    def _send_batch(self, batch: RequestBatch) -> list[RouteFailure]:
        """Send one batch in one datagram; the failures the kernel reported."""
        self._netlink.send(batch.payload, f"sending {len(batch.prefixes)} route requests")
        failures: list[RouteFailure] = []
        while True:
            try:
                data = self._netlink.recv()
            except OSError:  # ENOBUFS; recv turned anything else into DataplaneError
                # Replies were dropped, so which requests failed is unknown;
                # report the whole batch so the caller re-checks it.
                log.warning("netlink replies lost (ENOBUFS)", extra={"routes": len(batch.prefixes)})
                self._netlink.drain()
                return [
                    RouteFailure(prefix, op, errno.ENOBUFS, "reply lost; state unknown")
                    for prefix, op in batch.ops
                ]
            for msg in codec.iter_messages(data):
                if msg.msg_type != codec.NLMSG_ERROR:
                    continue
                ack = codec.decode_ack(msg)
                found = batch.op_of(ack.seq)
                if found is None:
                    continue  # a reply to an earlier, abandoned batch
                prefix, op = found
                if ack.errno and not (op == "delete" and ack.errno in _ABSENT):
                    text = os.strerror(ack.errno)
                    if ack.message:
                        text = f"{text}: {ack.message}"
                    failures.append(RouteFailure(prefix, op, ack.errno, text))
                if ack.seq == batch.last_seq:
                    return failures
