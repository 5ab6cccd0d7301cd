"""Dumped netlink routes as model routes, in bulk (route_batches.py is the
other direction). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import socket

from l3fabric.dataplane import codec
from l3fabric.model import IPNetwork, NextHop, Route, RouteKind, is_owned_iface


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
