"""rtnetlink messages for looking at a workload's wiring: links with their MAC
address and veth peer (a dump, or a get of one link by name or index), and
neighbour entries (dump requests and decoders).

Pure like codec: bytes in, bytes out, unit-tested against pyroute2's encoder.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from l3fabric.dataplane.codec import (
    IFINFOMSG,
    IFLA_EXT_MASK,
    IFLA_IFNAME,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    RTEXT_FILTER_SKIP_STATS,
    RTM_GETLINK,
    U32,
    iter_attrs,
    nlmsg,
    rtattr,
)

RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
IFLA_ADDRESS = 1
IFLA_LINK = 5  # a veth's peer's ifindex (in the peer's namespace)
IFLA_LINK_NETNSID = 37  # present when the peer is in another namespace
NDA_DST = 1
NDA_LLADDR = 2
NDA_IFINDEX = 8
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type


@dataclass(frozen=True)
class DecodedLink:
    index: int
    name: str
    mac: str | None  # "aa:bb:cc:dd:ee:ff", None for a link without one
    peer_index: int = 0  # IFLA_LINK; 0 when the link names none
    peer_elsewhere: bool = False  # the peer is in another namespace


@dataclass(frozen=True)
class DecodedNeighbour:
    family: int
    index: int
    destination: bytes
    lladdr: str  # "" when the entry has none (incomplete, failed)


def format_mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def decode_link(payload: bytes) -> DecodedLink:
    """A RTM_NEWLINK body: ifindex, name and hardware address."""
    _family, _type, index, _flags, _change = IFINFOMSG.unpack_from(payload, 0)
    name, mac, peer, elsewhere = None, None, 0, False
    for attr_type, value in iter_attrs(payload, IFINFOMSG.size):
        if attr_type == IFLA_IFNAME:
            name = value.rstrip(b"\0").decode()
        elif attr_type == IFLA_ADDRESS:
            mac = format_mac(value)
        elif attr_type == IFLA_LINK and len(value) >= 4:
            (peer,) = U32.unpack_from(value)
        elif attr_type == IFLA_LINK_NETNSID:
            elsewhere = True
    if name is None:
        raise ValueError(f"link {index} has no IFLA_IFNAME")
    return DecodedLink(index, name, mac, peer, elsewhere)


def link_get_request(seq: int, *, name: str = "", index: int = 0) -> bytes:
    """RTM_GETLINK of one link, by name or by index (the kernel looks either
    up in its hash table: no dump of every link)."""
    if bool(name) == bool(index):
        raise ValueError("a link get takes a name or an index")
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if name:
        body += rtattr(IFLA_IFNAME, name.encode() + b"\0")
    body += rtattr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    return nlmsg(RTM_GETLINK, NLM_F_REQUEST, seq, body)


def neigh_dump_request(seq: int, family: int, ifindex: int) -> bytes:
    """RTM_GETNEIGH dump of one interface's entries of one family.

    The interface goes in NDA_IFINDEX: a strict-checking kernel refuses a
    dump request with ndm_ifindex set, and filters only on sockets with
    NETLINK_GET_STRICT_CHK; decode_neighbour() callers filter again.
    """
    body = NDMSG.pack(family, 0, 0, 0, 0) + rtattr(NDA_IFINDEX, U32.pack(ifindex))
    return nlmsg(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def decode_neighbour(payload: bytes) -> DecodedNeighbour:
    family, index, _state, _flags, _type = NDMSG.unpack_from(payload, 0)
    destination, lladdr = b"", ""
    for attr_type, value in iter_attrs(payload, NDMSG.size):
        if attr_type == NDA_DST:
            destination = value
        elif attr_type == NDA_LLADDR:
            lladdr = format_mac(value)
    return DecodedNeighbour(family, index, destination, lladdr)
