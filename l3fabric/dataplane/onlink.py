"""The networks a node reaches without a gateway: where a BGP next hop can be.

The kernel takes `ip route ... via G` only when G itself is reached by a
route without a gateway (IPv4: a link-scope route; IPv6: one without
RTF_GATEWAY), so a learned route whose next hop lies outside all of them
fails on every write. The import policy refuses such a route instead
(unreachable-next-hop), so that a usable path for the same prefix wins.

Read from the main table: the direct (gateway-less) unicast routes of the
protocols that describe the node's own links, i.e. the kernel's connected
routes, routes an operator or a boot script added, router advertisements and
DHCP. Never l3fabric's own (protocol 76: the workloads' host routes, and
learned routes) nor another routing daemon's. The kernel filters each dump by
protocol (NETLINK_GET_STRICT_CHK), so the learned routes are not read.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

from l3fabric.dataplane import codec
from l3fabric.dataplane.nlsocket import NetlinkSocket
from l3fabric.model import IPNetwork

# rtnetlink protocols (linux/rtnetlink.h): RTPROT_KERNEL, RTPROT_BOOT,
# RTPROT_STATIC, RTPROT_RA, RTPROT_DHCP.
LINK_PROTOCOLS = (2, 3, 4, 9, 16)
_RCVBUF = 8 * 1024 * 1024  # a veth's fe80::/64 each: 10k workloads' worth and more


def on_link_network(route: codec.DecodedRoute) -> IPNetwork | None:
    """The network a dumped route makes directly reachable, or None."""
    if route.table != codec.RT_TABLE_MAIN or route.route_type != codec.RTN_UNICAST:
        return None
    if route.protocol not in LINK_PROTOCOLS:
        return None
    if any(hop.gateway or hop.ifindex == codec.LOOPBACK_IFINDEX for hop in route.nexthops):
        # Via a gateway, or an IPv6 address of the node itself (on lo).
        return None
    network = ipaddress.ip_network((route.dst, route.dst_len), strict=False)
    # Every veth's fe80::/64: a BGP next hop is never link-local here.
    if network.version == 6 and network.prefixlen >= 10 and network.network_address.is_link_local:
        return None
    return network


def _request(family: int, protocol: int, seq: int) -> bytes:
    return codec.route_dump_request(seq, family, protocol)


class OnLinkReader:
    """Reads through its own netlink socket, opened on first use in the
    namespace of the calling thread. Not thread-safe (the dataplane's lock
    serialises its callers)."""

    def __init__(self, netlink: NetlinkSocket | None = None) -> None:
        self._netlink = netlink or NetlinkSocket(rcvbuf=_RCVBUF)

    def networks(self) -> frozenset[IPNetwork]:
        found: set[IPNetwork] = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            for protocol in LINK_PROTOCOLS:
                for msg in self._netlink.dump(functools.partial(_request, family, protocol)):
                    if msg.msg_type != codec.RTM_NEWROUTE:
                        continue
                    network = on_link_network(codec.decode_route(msg.payload))
                    if network is not None:
                        found.add(network)
        return frozenset(found)

    def close(self) -> None:
        self._netlink.close()
