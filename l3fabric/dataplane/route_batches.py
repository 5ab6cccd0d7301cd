"""Route deletes and replaces as batches of rtnetlink requests, ready to send.

Each batch holds at most `size` requests with consecutive sequence numbers,
the last one asking for an ack (see routes.py). Interface names are resolved
and each distinct next-hop set is encoded once; a route that cannot be
encoded (unknown interface, gateway of the wrong family) becomes a
RouteFailure instead.

Thousands of learned routes share one next-hop set, and their messages then
differ only in sequence number, prefix length and destination. Such a group
is encoded by columns: one message repeated, with those three fields written
by strided slice assignment, which runs in C; a struct.pack per route cost
more than the kernel takes to install the route. A small group (a
workload's routes, each on its own veth) is packed route by route. Both give
the same bytes (the unit tests hold them to it). Pure: no I/O.
"""

from __future__ import annotations

import errno
import socket
import struct
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import RouteFailure
from l3fabric.model import IPNetwork, NextHop, Route

# Where the varying fields sit in every layout RouteEncoder makes: the
# netlink header's flags and sequence, the rtmsg's dst_len, and RTA_DST's
# payload (always the first attribute).
_FLAGS_AT = 6
_SEQ_AT = 8
_DST_LEN_AT = codec.NLMSGHDR.size + 1
_DST_AT = codec.NLMSGHDR.size + codec.RTMSG.size + codec.RTATTR.size
_FLAGS = struct.Struct("=H")
_SEQ_MASK = 0xFFFFFFFF

# A group of at least this many messages of one layout is encoded by
# columns; below it the fixed cost of the columns outweighs the saving.
COLUMNS_FROM = 8

if array("I").itemsize != 4:  # pragma: no cover - every Linux ABI l3fabric runs on
    raise ImportError("array('I') is not 32 bits here: netlink sequence numbers need it")

Op = tuple[IPNetwork, str]  # prefix, "delete" or "replace"


@dataclass(frozen=True)
class RequestBatch:
    """Requests numbered from `base`: message i has sequence base + i and is
    about prefixes[i], a delete below `replace_from`, a replace from there
    on; the last one asks for an ack."""

    base: int
    payload: bytes
    prefixes: list[IPNetwork]
    replace_from: int

    @property
    def last_seq(self) -> int:
        return (self.base + len(self.prefixes) - 1) & _SEQ_MASK

    @property
    def ops(self) -> list[Op]:
        split = self.replace_from
        return [(p, "delete") for p in self.prefixes[:split]] + [
            (p, "replace") for p in self.prefixes[split:]
        ]

    def op_of(self, seq: int) -> Op | None:
        index = (seq - self.base) & _SEQ_MASK
        if index >= len(self.prefixes):
            return None
        return self.prefixes[index], "delete" if index < self.replace_from else "replace"


def needs_links(routes: Sequence[Route]) -> bool:
    """Whether encoding `routes` needs interface indexes."""
    return any(hop.ifname is not None for route in routes for hop in route.nexthops)


# One message layout: makes the message for (seq, dst, dst_len).
_Encode = Callable[[int, bytes, int], bytes]


class _Layout:
    """The messages of one kind (a delete of a family, or a replace through
    one next-hop set): packed one by one, or repeated from a template."""

    def __init__(self, encode: _Encode, address_length: int) -> None:
        self.encode = encode
        self.address_length = address_length
        self.template = encode(0, bytes(address_length), 0)


class _Unencodable(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class BatchEncoder:
    """Turns program() calls into RequestBatches; keeps nothing between calls."""

    def __init__(self, encoder: codec.RouteEncoder) -> None:
        self._encoder = encoder
        self._deletes = {
            family: _Layout(self._delete_encoder(family), length)
            for family, length in ((socket.AF_INET, 4), (socket.AF_INET6, 16))
        }

    def encode(
        self,
        replace: Sequence[Route],
        delete: Sequence[IPNetwork],
        links: Mapping[str, int],
        *,
        size: int,
        next_seqs: Callable[[int], int],
    ) -> tuple[list[RequestBatch], list[RouteFailure]]:
        """Deletes first, then replaces, so a prefix in both ends up installed.

        `next_seqs(n)` reserves n sequence numbers and returns the first."""
        # Consecutive requests of one layout form a run; a bulk of learned
        # routes through one next hop is a single run, cut into batches by
        # slicing. Delete runs come first.
        runs: list[tuple[_Layout, list[IPNetwork], bool]] = []
        last: _Layout | None = None
        current: list[IPNetwork] = []
        deletes = {4: self._deletes[socket.AF_INET], 6: self._deletes[socket.AF_INET6]}
        for prefix in delete:
            layout = deletes[prefix.version]
            if layout is not last:
                current = []
                runs.append((layout, current, True))
                last = layout
            current.append(prefix)
        failures: list[RouteFailure] = []
        # Routes share a few next-hop sets. Within one call every route is
        # alive, so the id of its nexthops tuple is a safe first key; equal
        # tuples that are different objects still meet in `by_value`.
        by_id: dict[tuple[int, int], _Layout | _Unencodable] = {}
        by_value: dict[tuple[int, tuple[NextHop, ...]], _Layout | _Unencodable] = {}
        for route in replace:
            prefix = route.prefix
            key = (prefix.version, id(route.nexthops))
            found = by_id.get(key)
            if found is None:
                value_key = (prefix.version, route.nexthops)
                found = by_value.get(value_key)
                if found is None:
                    found = self._replace_layout(prefix, route.nexthops, links)
                    by_value[value_key] = found
                by_id[key] = found
            if isinstance(found, _Unencodable):
                failures.append(RouteFailure(prefix, "replace", found.errno, str(found)))
                continue
            if found is not last:
                current = []
                runs.append((found, current, False))
                last = found
            current.append(prefix)
        return _cut(runs, size, next_seqs), failures

    def _delete_encoder(self, family: int) -> _Encode:
        delete = self._encoder.delete
        return lambda seq, dst, dst_len: delete(seq, family, dst, dst_len)

    def _replace_layout(
        self, prefix: IPNetwork, nexthops: tuple[NextHop, ...], links: Mapping[str, int]
    ) -> _Layout | _Unencodable:
        family = codec.FAMILY_OF_VERSION[prefix.version]
        length = 4 if prefix.version == 4 else 16
        try:
            hops = tuple(_raw_nexthop(prefix, hop, links) for hop in nexthops)
        except _Unencodable as exc:
            return exc
        encoder = self._encoder
        if len(hops) > 1:
            multipath = codec.multipath_attr(hops)
            scope = codec.RT_SCOPE_UNIVERSE
            if family == socket.AF_INET and all(h.gateway is None for h in hops):
                scope = codec.RT_SCOPE_LINK
            return _Layout(
                lambda seq, dst, dst_len: encoder.replace_multipath(
                    seq, family, dst, dst_len, scope, multipath
                ),
                length,
            )
        (hop,) = hops
        gateway, ifindex = hop.gateway, hop.ifindex
        if gateway is None:
            return _Layout(
                lambda seq, dst, dst_len: encoder.replace_dev(seq, family, dst, dst_len, ifindex),
                length,
            )
        return _Layout(
            lambda seq, dst, dst_len: encoder.replace_gateway(
                seq, family, dst, dst_len, gateway, ifindex
            ),
            length,
        )


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


def _cut(
    runs: list[tuple[_Layout, list[IPNetwork], bool]], size: int, next_seqs: Callable[[int], int]
) -> list[RequestBatch]:
    """The runs cut into batches of `size` requests; within a batch the
    requests of one layout are grouped, deletes first (as the runs are)."""
    batches: list[RequestBatch] = []
    groups: dict[int, tuple[_Layout, list[IPNetwork]]] = {}
    count = deletes = 0
    for layout, prefixes, is_delete in runs:
        start = 0
        while start < len(prefixes):
            chunk = prefixes[start : start + size - count]
            group = groups.get(id(layout))
            if group is None:
                groups[id(layout)] = (layout, chunk)
            else:
                group[1].extend(chunk)
            start += len(chunk)
            count += len(chunk)
            if is_delete:
                deletes += len(chunk)
            if count == size:
                batches.append(_batch(list(groups.values()), count, deletes, next_seqs))
                groups = {}
                count = deletes = 0
    if count:
        batches.append(_batch(list(groups.values()), count, deletes, next_seqs))
    return batches


def _batch(
    groups: list[tuple[_Layout, list[IPNetwork]]],
    count: int,
    deletes: int,
    next_seqs: Callable[[int], int],
) -> RequestBatch:
    """One batch from its groups, the last request acked."""
    base = next_seqs(count)
    payload = bytearray()
    prefixes: list[IPNetwork] = []
    seq = base
    for layout, group in groups:
        if len(group) >= COLUMNS_FROM:
            payload += _by_columns(layout, seq, group)
        else:
            encode = layout.encode
            for offset, prefix in enumerate(group):
                payload += encode(
                    (seq + offset) & _SEQ_MASK, prefix.network_address.packed, prefix.prefixlen
                )
        prefixes += group
        seq += len(group)
    last = len(payload) - len(groups[-1][0].template)
    (flags,) = _FLAGS.unpack_from(payload, last + _FLAGS_AT)
    _FLAGS.pack_into(payload, last + _FLAGS_AT, flags | codec.NLM_F_ACK)
    return RequestBatch(base, bytes(payload), prefixes, deletes)


def _by_columns(layout: _Layout, base: int, prefixes: list[IPNetwork]) -> bytearray:
    """len(prefixes) messages of one layout: the template repeated, then the
    sequence numbers, prefix lengths and destinations written column by
    column (every `stride`-th byte from a field's offset)."""
    count = len(prefixes)
    stride = len(layout.template)
    out = bytearray(layout.template * count)
    if base + count - 1 <= _SEQ_MASK:
        seqs = array("I", range(base, base + count)).tobytes()
    else:  # the numbers wrap inside this group
        seqs = array("I", [(base + i) & _SEQ_MASK for i in range(count)]).tobytes()
    for byte in range(4):
        out[_SEQ_AT + byte :: stride] = seqs[byte::4]
    out[_DST_LEN_AT::stride] = bytes([prefix.prefixlen for prefix in prefixes])
    length = layout.address_length
    dsts = b"".join([prefix.network_address.packed for prefix in prefixes])
    for byte in range(length):
        out[_DST_AT + byte :: stride] = dsts[byte::length]
    return out
