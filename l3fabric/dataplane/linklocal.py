"""The usable IPv6 link-local address of one interface of the node.

A host veth's link-local address is its workloads' IPv6 gateway; attach
waits for it (DAD) and reconcile compares it. pyroute2 filters address dumps
in Python, so each read would carry every address of the node: with N
workloads a pass over them all cost O(N²). Here the kernel filters by
interface (NETLINK_GET_STRICT_CHK), so one read costs the same at any N.
"""

from __future__ import annotations

import ipaddress
import socket

from l3fabric.dataplane import codec
from l3fabric.dataplane.nlsocket import NetlinkSocket

IFA_F_TENTATIVE = 0x40  # still in duplicate address detection: not usable yet
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
_RCVBUF = 1 << 20  # one interface's addresses; a dump never comes near it


class LinkLocalReader:
    """Reads through its own netlink socket, opened on first use in the
    namespace of the calling thread. Not thread-safe (the dataplane's lock
    serialises its callers)."""

    def __init__(self, netlink: NetlinkSocket | None = None) -> None:
        self._netlink = netlink or NetlinkSocket(rcvbuf=_RCVBUF)

    def of(self, ifindex: int) -> ipaddress.IPv6Address | None:
        """The interface's first non-tentative fe80::/10 address, or None."""
        for msg in self._netlink.dump(
            lambda seq: codec.addr_dump_request(seq, socket.AF_INET6, ifindex)
        ):
            if msg.msg_type != codec.RTM_NEWADDR:
                continue
            found = codec.decode_address(msg.payload)
            if found.index != ifindex or found.family != socket.AF_INET6:
                continue  # a kernel without strict dump filtering sends them all
            address = ipaddress.IPv6Address(found.address)
            if address in _LINK_LOCAL_V6 and not found.flags & IFA_F_TENTATIVE:
                return address
        return None

    def close(self) -> None:
        self._netlink.close()
