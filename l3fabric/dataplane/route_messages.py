"""Model routes to and from netlink route messages, in bulk.

RouteRequests encodes a set of deletes and replaces as rtnetlink requests
with consecutive sequence numbers, resolving interface names and encoding
each distinct next-hop set once; a route that cannot be encoded (unknown
interface, gateway of the wrong family) becomes a RouteFailure instead.
RouteConverter turns dumped routes back into model.Route. Pure: no I/O.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import RouteFailure
from l3fabric.model import IPNetwork, NextHop, Route, RouteKind, is_owned_iface


@dataclass(frozen=True)
class RouteRequests:
    """Requests numbered from `base`: messages[i] has sequence base + i and
    is about ops[i] (prefix, "delete" or "replace")."""

    base: int
    messages: list[bytes]
    ops: list[tuple[IPNetwork, str]]
    failures: list[RouteFailure]  # routes that could not be encoded


def needs_links(routes: Sequence[Route]) -> bool:
    """Whether encoding `routes` needs interface indexes."""
    return any(hop.ifname is not None for route in routes for hop in route.nexthops)


def encode_requests(
    encoder: codec.RouteEncoder,
    base: int,
    replace: Sequence[Route],
    delete: Sequence[IPNetwork],
    links: Mapping[str, int],
) -> RouteRequests:
    """Deletes first, then replaces, so a prefix in both ends up installed."""
    failures: list[RouteFailure] = []
    ops: list[tuple[IPNetwork, str]] = []
    messages: list[bytes] = []
    for prefix in delete:
        family = codec.FAMILY_OF_VERSION[prefix.version]
        seq = (base + len(ops)) & 0xFFFFFFFF
        dst = prefix.network_address.packed
        messages.append(encoder.delete(seq, family, dst, prefix.prefixlen))
        ops.append((prefix, "delete"))
    # Routes share a few next-hop sets; each is resolved and encoded once.
    shapes: dict[_ShapeKey, _Shape] = {}
    for route in replace:
        seq = (base + len(ops)) & 0xFFFFFFFF
        encoded = _encode_replace(encoder, seq, route, links, shapes)
        if isinstance(encoded, _Unencodable):
            failures.append(RouteFailure(route.prefix, "replace", encoded.errno, str(encoded)))
            continue
        messages.append(encoded)
        ops.append((route.prefix, "replace"))
    return RouteRequests(base, messages, ops, failures)


class _Unencodable(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


# A next-hop set, resolved: one RawNextHop, an encoded RTA_MULTIPATH, or why
# it cannot be sent. Keyed by IP version too: a gateway's family must match.
_ShapeKey = tuple[int, tuple[NextHop, ...]]
_Shape = codec.RawNextHop | bytes | _Unencodable


def _encode_replace(
    encoder: codec.RouteEncoder,
    seq: int,
    route: Route,
    links: Mapping[str, int],
    shapes: dict[_ShapeKey, _Shape],
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
        return encoder.replace_multipath(seq, family, dst, prefix.prefixlen, scope, shape)
    if shape.gateway is None:
        return encoder.replace_dev(seq, family, dst, prefix.prefixlen, shape.ifindex)
    return encoder.replace_gateway(seq, family, dst, prefix.prefixlen, shape.gateway, shape.ifindex)


def _shape(prefix: IPNetwork, nexthops: tuple[NextHop, ...], links: Mapping[str, int]) -> _Shape:
    try:
        hops = tuple(_raw_nexthop(prefix, hop, links) for hop in nexthops)
    except _Unencodable as exc:
        return exc
    return hops[0] if len(hops) == 1 else codec.multipath_attr(hops)


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
