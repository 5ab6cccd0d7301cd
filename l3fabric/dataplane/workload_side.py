"""What a workload's namespace holds of its wiring: the container interface's
MAC, addresses and neighbour entries, and the namespace's default routes.

Reconcile passes look inside workloads in turn, so this is on the idle
path: one raw netlink socket opened in the namespace and six small
kernel-filtered dumps, instead of a pyroute2 IPRoute (an event loop and a
dozen requests) per workload.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

from l3fabric.dataplane import codec
from l3fabric.dataplane.netns import netlink_socket_in
from l3fabric.dataplane.nlsocket import NetlinkSocket
from l3fabric.dataplane.workload_codec import (
    RTM_NEWNEIGH,
    decode_link,
    decode_neighbour,
    neigh_dump_request,
)
from l3fabric.model import IPAddress, IPNetwork

_RCVBUF = 1 << 18  # a workload namespace holds a handful of links and routes
_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True)
class WorkloadSide:
    mac: str | None
    addresses: tuple[IPNetwork, ...]  # link-local IPv6 ones left out
    neighbours: tuple[tuple[IPAddress, str], ...]
    default_routes: tuple[tuple[IPAddress | None, str | None], ...]


def read_workload_side(path: str, ifname: str) -> WorkloadSide | None:
    """The wiring inside the namespace at `path` of its interface `ifname`,
    or None when the namespace has no such interface."""
    netlink = NetlinkSocket(rcvbuf=_RCVBUF, opener=lambda: netlink_socket_in(path))
    try:
        return _read(netlink, ifname)
    finally:
        netlink.close()


def _addresses(family: int, ifindex: int, seq: int) -> bytes:
    return codec.addr_dump_request(seq, family, ifindex)


def _neighbours(family: int, ifindex: int, seq: int) -> bytes:
    return neigh_dump_request(seq, family, ifindex)


def _main_routes(family: int, seq: int) -> bytes:
    return codec.route_dump_request(seq, family, 0)  # protocol 0: any


def _read(netlink: NetlinkSocket, ifname: str) -> WorkloadSide | None:
    links = [
        decode_link(m.payload)
        for m in netlink.dump(codec.link_dump_request)
        if m.msg_type == codec.RTM_NEWLINK
    ]
    names = {link.index: link.name for link in links}
    found = [link for link in links if link.name == ifname]
    if not found:
        return None
    (link,) = found
    addresses: list[IPNetwork] = []
    neighbours: list[tuple[IPAddress, str]] = []
    defaults: list[tuple[IPAddress | None, str | None]] = []
    for family in _FAMILIES:
        for msg in netlink.dump(functools.partial(_addresses, family, link.index)):
            if msg.msg_type != codec.RTM_NEWADDR:
                continue
            address = codec.decode_address(msg.payload)
            if address.index != link.index:
                continue  # a kernel without strict dump filtering sends them all
            prefix = ipaddress.ip_network((address.address, address.prefixlen), strict=False)
            if not (prefix.version == 6 and prefix.network_address.is_link_local):
                addresses.append(prefix)
        for msg in netlink.dump(functools.partial(_neighbours, family, link.index)):
            if msg.msg_type != RTM_NEWNEIGH:
                continue
            entry = decode_neighbour(msg.payload)
            if entry.index == link.index and entry.destination:
                neighbours.append((ipaddress.ip_address(entry.destination), entry.lladdr))
        for msg in netlink.dump(functools.partial(_main_routes, family)):
            if msg.msg_type != codec.RTM_NEWROUTE:
                continue
            route = codec.decode_route(msg.payload)
            if route.table != codec.RT_TABLE_MAIN or route.dst_len != 0:
                continue
            for hop in route.nexthops:
                gateway = ipaddress.ip_address(hop.gateway) if hop.gateway else None
                defaults.append((gateway, names.get(hop.ifindex) if hop.ifindex else None))
    return WorkloadSide(
        link.mac,
        tuple(sorted(addresses, key=str)),
        tuple(sorted(neighbours, key=str)),
        tuple(sorted(defaults, key=str)),
    )
