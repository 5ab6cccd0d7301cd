"""Route batches: every request encoded by columns is byte for byte what the
general encoder makes for it, batches keep deletes before replaces, number
their requests consecutively (across the 32-bit wrap too) and ack the last."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.dataplane import codec
from l3fabric.dataplane.route_batches import COLUMNS_FROM, BatchEncoder, RequestBatch
from l3fabric.model import IPNetwork, NextHop, Route

PROTO = 76
LINKS = {"eth0": 2, "eth1": 3, "l3f0123456789ab": 40}
V4_GATEWAYS = [ipaddress.IPv4Address(f"198.18.0.{i}") for i in (1, 2)]
V6_GATEWAYS = [ipaddress.IPv6Address(f"fd00:198:18::{i}") for i in (1, 2)]

# Next-hop sets, by IP version: device, gateway, gateway and device,
# multipath (gateways, devices), and two that cannot be encoded.
HOPS: dict[int, list[tuple[NextHop, ...]]] = {
    version: [
        (NextHop(ifname="eth0"),),
        (NextHop(ifname="l3f0123456789ab"),),
        (NextHop(gateway=gateways[0]),),
        (NextHop(gateway=gateways[1], ifname="eth1"),),
        (NextHop(gateway=gateways[0]), NextHop(gateway=gateways[1])),
        (NextHop(ifname="eth0"), NextHop(ifname="eth1")),
        (NextHop(ifname="missing0"),),
        (NextHop(gateway=other[0]),),
    ]
    for version, gateways, other in ((4, V4_GATEWAYS, V6_GATEWAYS), (6, V6_GATEWAYS, V4_GATEWAYS))
}


def network(version: int, index: int, length: int) -> IPNetwork:
    if version == 4:
        base = int(ipaddress.IPv4Address("100.64.0.0")) + (index << 8)
        return ipaddress.IPv4Network((base, length), strict=False)
    base = int(ipaddress.IPv6Address("fd00:64::")) + (index << 16)
    return ipaddress.IPv6Network((base, length), strict=False)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Route], list[IPNetwork]]:
    """Distinct prefixes; routes drawn from few next-hop sets, so that groups
    both above and below COLUMNS_FROM occur."""
    count = draw(st.integers(0, 120))
    routes, deletes = [], []
    for index in range(count):
        version = draw(st.sampled_from([4, 6]))
        length = draw(st.sampled_from([32, 26]) if version == 4 else st.sampled_from([128, 122]))
        prefix = network(version, index, length)
        if draw(st.integers(0, 3)) == 0:
            deletes.append(prefix)
        else:
            hops = draw(st.sampled_from(HOPS[version]))
            # Equal next-hop tuples need not be the same object.
            routes.append(Route(prefix, tuple(hops) if draw(st.booleans()) else hops))
    return routes, deletes


def counter(start: int) -> Callable[[int], int]:
    state = {"next": start}

    def next_seqs(count: int) -> int:
        base = state["next"]
        state["next"] = (base + count) & 0xFFFFFFFF or 1
        return base

    return next_seqs


def reference(prefix: IPNetwork, op: str, seq: int, route: Route | None) -> bytes:
    """What codec.encode_route, the general encoder, makes for one request."""
    family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
    dst = prefix.network_address.packed
    if op == "delete":
        spec = codec.RouteSpec(family, dst, prefix.prefixlen, PROTO, codec.RT_SCOPE_NOWHERE)
        return codec.encode_route(codec.RTM_DELROUTE, codec.NLM_F_REQUEST, seq, spec)
    assert route is not None
    hops = tuple(
        codec.RawNextHop(
            hop.gateway.packed if hop.gateway else None, LINKS[hop.ifname] if hop.ifname else 0
        )
        for hop in route.nexthops
    )
    scope = codec.RT_SCOPE_UNIVERSE
    if family == socket.AF_INET and all(hop.gateway is None for hop in route.nexthops):
        scope = codec.RT_SCOPE_LINK
    spec = codec.RouteSpec(family, dst, prefix.prefixlen, PROTO, scope, hops)
    flags = codec.NLM_F_REQUEST | codec.NLM_F_CREATE | codec.NLM_F_REPLACE
    return codec.encode_route(codec.RTM_NEWROUTE, flags, seq, spec)


def check_batch(batch: RequestBatch, routes: dict[IPNetwork, Route], size: int) -> None:
    assert 1 <= len(batch.ops) <= size
    expected = [
        reference(prefix, op, (batch.base + i) & 0xFFFFFFFF, routes.get(prefix))
        for i, (prefix, op) in enumerate(batch.ops)
    ]
    last = bytearray(expected[-1])
    last[6] |= codec.NLM_F_ACK  # the flags' low byte (native order, little-endian here)
    expected[-1] = bytes(last)
    assert batch.payload == b"".join(expected)
    messages = list(codec.iter_messages(batch.payload))
    assert [m.seq for m in messages] == [
        (batch.base + i) & 0xFFFFFFFF for i in range(len(messages))
    ]
    assert messages[-1].seq == batch.last_seq
    assert [bool(m.flags & codec.NLM_F_ACK) for m in messages] == [False] * (len(messages) - 1) + [
        True
    ]


@settings(deadline=None, max_examples=150)
@given(
    workloads(),
    st.integers(1, 70),
    st.sampled_from([1, 1000, 0xFFFFFFFF - 40, 0xFFFFFFFF - 3]),
)
def test_batches_equal_the_general_encoder(
    work: tuple[list[Route], list[IPNetwork]], size: int, first_seq: int
) -> None:
    routes, deletes = work
    batches, failures = BatchEncoder(codec.RouteEncoder(PROTO)).encode(
        routes, deletes, LINKS, size=size, next_seqs=counter(first_seq)
    )
    by_prefix = {route.prefix: route for route in routes}
    for batch in batches:
        check_batch(batch, by_prefix, size)

    ops = [op for batch in batches for op in batch.ops]
    # Every delete and every encodable replace exactly once, deletes first.
    kinds = [op for _, op in ops]
    assert kinds == sorted(kinds)  # "delete" < "replace"
    assert sorted(str(p) for p, op in ops if op == "delete") == sorted(map(str, deletes))
    unencodable = {
        route.prefix
        for route in routes
        if any(
            (hop.ifname is not None and hop.ifname not in LINKS)
            or (hop.gateway is not None and hop.gateway.version != route.prefix.version)
            for hop in route.nexthops
        )
    }
    replaced = [p for p, op in ops if op == "replace"]
    encodable = [r.prefix for r in routes if r.prefix not in unencodable]
    assert sorted(map(str, replaced)) == sorted(map(str, encodable))
    assert {f.route_prefix for f in failures} == unencodable
    assert {f.errno for f in failures} <= {errno.ENODEV, errno.EAFNOSUPPORT}
    # Only full batches but the last.
    assert [len(b.ops) for b in batches[:-1]] == [size] * (len(batches) - 1)


def test_a_large_group_is_encoded_by_columns_and_matches() -> None:
    # 2,000 learned /32s through one gateway and 2,000 deletes, batches of
    # 512: the path the benchmark and a full table take.
    count = 2000
    assert count > COLUMNS_FROM
    hops = (NextHop(gateway=V4_GATEWAYS[0]),)
    base = int(ipaddress.IPv4Address("100.64.0.0"))
    routes = [Route(ipaddress.IPv4Network((base + i, 32)), hops) for i in range(count)]
    deletes = [ipaddress.IPv4Network((base + count + i, 32)) for i in range(count)]
    batches, failures = BatchEncoder(codec.RouteEncoder(PROTO)).encode(
        routes, deletes, {}, size=512, next_seqs=counter(7)
    )
    assert failures == []
    assert [len(b.ops) for b in batches] == [512] * 7 + [4000 - 7 * 512]
    by_prefix = {route.prefix: route for route in routes}
    for batch in batches:
        check_batch(batch, by_prefix, 512)
    assert batches[0].base == 7 and batches[1].base == 7 + 512


def test_nothing_to_do_makes_no_batch() -> None:
    batches, failures = BatchEncoder(codec.RouteEncoder(PROTO)).encode(
        [], [], {}, size=512, next_seqs=counter(1)
    )
    assert batches == [] and failures == []


def test_op_of_maps_sequence_numbers_across_the_wrap() -> None:
    prefix = ipaddress.IPv4Network("100.64.0.1/32")
    batch = RequestBatch(0xFFFFFFFF, b"", [prefix, prefix], 1)
    assert batch.op_of(0xFFFFFFFF) == (prefix, "delete")
    assert batch.op_of(0) == (prefix, "replace")
    assert batch.last_seq == 0
    assert batch.op_of(1) is None and batch.op_of(0xFFFFFFFE) is None
