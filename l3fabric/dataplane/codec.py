"""Pure rtnetlink encoding and decoding for the bulk route path.

No sockets here: bytes in, bytes out, so every layout is unit-tested against
pyroute2's encoder. The hot path (one route per message, thousands per second)
uses one precompiled struct per message shape with the constant fields baked
in, so encoding a route is a single struct.pack call.

All integers are in host byte order (netlink is host-endian); addresses are
network order, as the kernel expects them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# netlink message types and flags (linux/netlink.h)
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# flags on an NLMSG_ERROR reply
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

# socket options (SOL_NETLINK = 270)
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_CAP_ACK = 10
NETLINK_GET_STRICT_CHK = 12

# rtnetlink (linux/rtnetlink.h)
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
LOOPBACK_IFINDEX = 1  # lo's in every namespace (the kernel's LOOPBACK_IFINDEX)
IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table proto scope type flags
RTATTR = struct.Struct("=HH")  # len, type
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
NLMSGERR_CODE = struct.Struct("=i")
U32 = struct.Struct("=I")

_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}
# The struct code and kernel family for each IP version.
FAMILY_OF_VERSION = {4: socket.AF_INET, 6: socket.AF_INET6}


def align4(length: int) -> int:
    return (length + 3) & ~3


def rtattr(attr_type: int, payload: bytes) -> bytes:
    """One attribute, padded to a 4-byte boundary."""
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, attr_type) + payload + b"\0" * (align4(length) - length)


def nlmsg(msg_type: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


@dataclass(frozen=True)
class RawNextHop:
    """A next hop as the kernel sees it: gateway bytes and/or an ifindex (0 = none)."""

    gateway: bytes | None = None
    ifindex: int = 0


@dataclass(frozen=True)
class RouteSpec:
    """Everything that identifies one route message, in kernel terms."""

    family: int
    dst: bytes
    dst_len: int
    protocol: int
    scope: int
    nexthops: tuple[RawNextHop, ...] = ()
    table: int = RT_TABLE_MAIN
    route_type: int = RTN_UNICAST


def encode_route(msg_type: int, flags: int, seq: int, spec: RouteSpec) -> bytes:
    """General route encoder: any number of next hops (RTA_MULTIPATH for >1).

    Attribute order: RTA_DST, then RTA_GATEWAY and RTA_OIF for one next hop,
    or RTA_MULTIPATH with one rtnexthop (+RTA_GATEWAY) per next hop.
    """
    header = RTMSG.pack(
        spec.family,
        spec.dst_len,
        0,
        0,
        spec.table,
        spec.protocol,
        spec.scope,
        spec.route_type,
        0,
    )
    attrs = [rtattr(RTA_DST, spec.dst)]
    if len(spec.nexthops) == 1:
        hop = spec.nexthops[0]
        if hop.gateway is not None:
            attrs.append(rtattr(RTA_GATEWAY, hop.gateway))
        if hop.ifindex:
            attrs.append(rtattr(RTA_OIF, U32.pack(hop.ifindex)))
    elif spec.nexthops:
        attrs.append(multipath_attr(spec.nexthops))
    return nlmsg(msg_type, flags, seq, header + b"".join(attrs))


def multipath_attr(nexthops: tuple[RawNextHop, ...]) -> bytes:
    """RTA_MULTIPATH: one rtnexthop (with its RTA_GATEWAY, if any) per path."""
    hops = []
    for hop in nexthops:
        inner = rtattr(RTA_GATEWAY, hop.gateway) if hop.gateway is not None else b""
        hops.append(RTNEXTHOP.pack(RTNEXTHOP.size + len(inner), 0, 0, hop.ifindex) + inner)
    return rtattr(RTA_MULTIPATH, b"".join(hops))


class RouteEncoder:
    """Precompiled layouts for the shapes the hot path sends.

    Each method returns exactly what encode_route() would for the same route
    (the unit tests hold both to pyroute2's bytes), only faster: the struct is
    compiled once and every constant field is baked into its arguments.
    """

    # No NLM_F_ACK: the kernel reports failures anyway, and the sender asks
    # for an ack on the last request of each batch only (see routes.py).
    REPLACE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    DELETE_FLAGS = NLM_F_REQUEST

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self._dev: dict[int, struct.Struct] = {}
        self._gw: dict[int, struct.Struct] = {}
        self._gw_dev: dict[int, struct.Struct] = {}
        self._head: dict[int, struct.Struct] = {}
        for family, alen in _ADDR_LEN.items():
            dst = f"HH{alen}s"
            self._dev[family] = struct.Struct(f"=IHHII BBBBBBBBI {dst} HHI")
            self._gw[family] = struct.Struct(f"=IHHII BBBBBBBBI {dst} HH{alen}s")
            self._gw_dev[family] = struct.Struct(f"=IHHII BBBBBBBBI {dst} HH{alen}s HHI")
            self._head[family] = struct.Struct(f"=IHHII BBBBBBBBI {dst}")

    def replace_dev(self, seq: int, family: int, dst: bytes, dst_len: int, ifindex: int) -> bytes:
        """`dst dev IF`: scope link for IPv4, universe for IPv6 (as `ip` does)."""
        layout = self._dev[family]
        alen = len(dst)
        scope = RT_SCOPE_LINK if family == socket.AF_INET else RT_SCOPE_UNIVERSE
        return layout.pack(
            layout.size, RTM_NEWROUTE, self.REPLACE_FLAGS, seq, 0,
            family, dst_len, 0, 0, RT_TABLE_MAIN, self.protocol, scope, RTN_UNICAST, 0,
            4 + alen, RTA_DST, dst,
            8, RTA_OIF, ifindex,
        )  # fmt: skip

    def replace_gateway(
        self, seq: int, family: int, dst: bytes, dst_len: int, gateway: bytes, ifindex: int = 0
    ) -> bytes:
        """`dst via GW [dev IF]`, scope universe."""
        if ifindex:
            layout = self._gw_dev[family]
            oif: tuple[int, ...] = (8, RTA_OIF, ifindex)
        else:
            layout = self._gw[family]
            oif = ()
        return layout.pack(
            layout.size, RTM_NEWROUTE, self.REPLACE_FLAGS, seq, 0,
            family, dst_len, 0, 0, RT_TABLE_MAIN, self.protocol, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0,
            4 + len(dst), RTA_DST, dst,
            4 + len(gateway), RTA_GATEWAY, gateway,
            *oif,
        )  # fmt: skip

    def replace_multipath(
        self, seq: int, family: int, dst: bytes, dst_len: int, scope: int, multipath: bytes
    ) -> bytes:
        """A route with several next hops; multipath is a multipath_attr(),
        which many routes share, so it is encoded once and reused."""
        layout = self._head[family]
        return layout.pack(
            layout.size + len(multipath), RTM_NEWROUTE, self.REPLACE_FLAGS, seq, 0,
            family, dst_len, 0, 0, RT_TABLE_MAIN, self.protocol, scope, RTN_UNICAST, 0,
            4 + len(dst), RTA_DST, dst,
        ) + multipath  # fmt: skip

    def delete(self, seq: int, family: int, dst: bytes, dst_len: int) -> bytes:
        """Delete our route for dst whatever its next hops and scope.

        The protocol is set so the kernel only matches routes carrying it:
        a foreign route with the same prefix is never removed.
        """
        layout = self._head[family]
        alen = len(dst)
        return layout.pack(
            layout.size, RTM_DELROUTE, self.DELETE_FLAGS, seq, 0,
            family, dst_len, 0, 0, RT_TABLE_MAIN, self.protocol, RT_SCOPE_NOWHERE, RTN_UNICAST, 0,
            4 + alen, RTA_DST, dst,
        )  # fmt: skip


def route_dump_request(seq: int, family: int, protocol: int, oif: int = 0) -> bytes:
    """RTM_GETROUTE dump of the main table filtered by protocol (and oif).

    The kernel honours the filter only on sockets with NETLINK_GET_STRICT_CHK;
    decode_route() callers filter again, so a lax kernel only costs time.
    """
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, protocol, 0, 0, 0)
    if oif:
        body += rtattr(RTA_OIF, U32.pack(oif))
    return nlmsg(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def link_dump_request(seq: int) -> bytes:
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    body += rtattr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    return nlmsg(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def addr_dump_request(seq: int, family: int, ifindex: int) -> bytes:
    """RTM_GETADDR dump of one interface's addresses of one family.

    The kernel filters by interface only on sockets with
    NETLINK_GET_STRICT_CHK (else it sends every address of the namespace);
    decode_address() callers filter again, so a lax kernel only costs time.
    """
    body = IFADDRMSG.pack(family, 0, 0, 0, ifindex)
    return nlmsg(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


@dataclass(frozen=True)
class DecodedAddress:
    family: int
    prefixlen: int
    flags: int  # IFA_FLAGS when present (it carries the flags above 8 bits)
    scope: int
    index: int
    address: bytes


def decode_address(payload: bytes) -> DecodedAddress:
    """A RTM_NEWADDR body (ifaddrmsg + attributes) as sent by a dump."""
    family, prefixlen, flags, scope, index = IFADDRMSG.unpack_from(payload, 0)
    address = local = b""
    for attr_type, value in iter_attrs(payload, IFADDRMSG.size):
        if attr_type == IFA_ADDRESS:
            address = value
        elif attr_type == IFA_LOCAL:
            local = value
        elif attr_type == IFA_FLAGS:
            (flags,) = U32.unpack_from(value)
    # On point-to-point links IFA_ADDRESS is the peer's; IFA_LOCAL is ours.
    return DecodedAddress(family, prefixlen, flags, scope, index, local or address)


@dataclass(frozen=True)
class Message:
    msg_type: int
    flags: int
    seq: int
    payload: bytes


def iter_messages(data: bytes) -> Iterator[Message]:
    """Split a datagram into netlink messages; a truncated tail is an error."""
    offset = 0
    end = len(data)
    while offset + NLMSGHDR.size <= end:
        length, msg_type, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > end:
            raise ValueError(f"malformed netlink message at offset {offset}: length {length}")
        yield Message(msg_type, flags, seq, data[offset + NLMSGHDR.size : offset + length])
        offset += align4(length)


def iter_attrs(data: bytes, offset: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, payload) for each rtattr in data[offset:end]; nested flag bits stripped."""
    end = len(data) if end is None else end
    while offset + RTATTR.size <= end:
        length, attr_type = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > end:
            raise ValueError(f"malformed rtattr at offset {offset}: length {length}")
        yield attr_type & 0x3FFF, data[offset + RTATTR.size : offset + length]
        offset += align4(length)


@dataclass(frozen=True)
class Ack:
    """An NLMSG_ERROR reply: error 0 is a positive ack; otherwise -errno."""

    seq: int
    errno: int  # positive, 0 for success
    message: str  # the kernel's extended ack text, if it sent one


def decode_ack(msg: Message) -> Ack:
    (error,) = NLMSGERR_CODE.unpack_from(msg.payload, 0)
    _len, _type, _flags, orig_seq, _pid = NLMSGHDR.unpack_from(msg.payload, 4)
    text = ""
    if msg.flags & NLM_F_ACK_TLVS:
        # The original request follows the error code: its header only when
        # capped, otherwise the whole message. Then come the TLVs.
        orig_len = NLMSGHDR.size if msg.flags & NLM_F_CAPPED else _len
        for attr_type, value in iter_attrs(msg.payload, 4 + align4(orig_len)):
            if attr_type == NLMSGERR_ATTR_MSG:
                text = value.rstrip(b"\0").decode(errors="replace")
    return Ack(orig_seq, -error, text)


@dataclass(frozen=True)
class DecodedRoute:
    family: int
    dst: bytes
    dst_len: int
    table: int
    protocol: int
    scope: int
    route_type: int
    nexthops: tuple[RawNextHop, ...]


def decode_route(payload: bytes) -> DecodedRoute:
    """A RTM_NEWROUTE body (rtmsg + attributes) as sent by a dump."""
    family, dst_len, _src, _tos, table, protocol, scope, route_type, _flags = RTMSG.unpack_from(
        payload, 0
    )
    dst = b"\0" * _ADDR_LEN.get(family, 0)
    gateway: bytes | None = None
    oif = 0
    multipath: list[RawNextHop] = []
    for attr_type, value in iter_attrs(payload, RTMSG.size):
        if attr_type == RTA_DST:
            dst = value
        elif attr_type == RTA_TABLE:
            (table,) = U32.unpack_from(value)
        elif attr_type == RTA_GATEWAY:
            gateway = value
        elif attr_type == RTA_VIA:
            gateway = value[2:]  # a u16 family, then the address
        elif attr_type == RTA_OIF:
            (oif,) = U32.unpack_from(value)
        elif attr_type == RTA_MULTIPATH:
            multipath = list(_decode_multipath(value))
    nexthops = tuple(multipath) if multipath else (RawNextHop(gateway, oif),)
    return DecodedRoute(family, dst, dst_len, table, protocol, scope, route_type, nexthops)


def _decode_multipath(data: bytes) -> Iterator[RawNextHop]:
    offset = 0
    while offset + RTNEXTHOP.size <= len(data):
        length, _flags, _hops, ifindex = RTNEXTHOP.unpack_from(data, offset)
        if length < RTNEXTHOP.size or offset + length > len(data):
            raise ValueError(f"malformed rtnexthop at offset {offset}: length {length}")
        gateway = None
        for attr_type, value in iter_attrs(data, offset + RTNEXTHOP.size, offset + length):
            if attr_type == RTA_GATEWAY:
                gateway = value
            elif attr_type == RTA_VIA:
                gateway = value[2:]
        yield RawNextHop(gateway, ifindex)
        offset += align4(length)


def decode_link_name(payload: bytes) -> tuple[int, str]:
    """(ifindex, ifname) from a RTM_NEWLINK body."""
    _family, _type, index, _flags, _change = IFINFOMSG.unpack_from(payload, 0)
    for attr_type, value in iter_attrs(payload, IFINFOMSG.size):
        if attr_type == IFLA_IFNAME:
            return index, value.rstrip(b"\0").decode()
    raise ValueError(f"link {index} has no IFLA_IFNAME")
