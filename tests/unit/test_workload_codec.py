"""The workload-side netlink messages against pyroute2's encoder: links with
their MAC, neighbour entries, and the dump requests the kernel's strict
checking accepts (no stray header fields)."""

from __future__ import annotations

import socket

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from l3fabric.dataplane import codec
from l3fabric.dataplane.workload_codec import (
    NDMSG,
    RTM_GETNEIGH,
    RTM_NEWNEIGH,
    DecodedLink,
    DecodedNeighbour,
    decode_link,
    decode_neighbour,
    link_get_request,
    neigh_dump_request,
)


def _payload(msg: ifinfmsg | ndmsg, msg_type: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg.encode()
    (message,) = codec.iter_messages(bytes(msg.data))
    return message.payload


def test_link_with_its_mac() -> None:
    msg = ifinfmsg()
    msg["index"] = 7
    msg["attrs"] = [("IFLA_IFNAME", "eth0"), ("IFLA_ADDRESS", "0a:1b:2c:3d:4e:5f")]
    assert decode_link(_payload(msg, codec.RTM_NEWLINK)) == DecodedLink(
        7, "eth0", "0a:1b:2c:3d:4e:5f"
    )


def test_link_without_a_hardware_address() -> None:
    msg = ifinfmsg()
    msg["index"] = 1
    msg["attrs"] = [("IFLA_IFNAME", "lo")]
    assert decode_link(_payload(msg, codec.RTM_NEWLINK)) == DecodedLink(1, "lo", None)


def test_neighbour_entry() -> None:
    msg = ndmsg()
    msg["family"] = socket.AF_INET
    msg["ifindex"] = 7
    msg["state"] = 0x80  # NUD_PERMANENT
    msg["attrs"] = [("NDA_DST", "169.254.1.1"), ("NDA_LLADDR", "ee:ee:ee:ee:ee:01")]
    assert decode_neighbour(_payload(msg, RTM_NEWNEIGH)) == DecodedNeighbour(
        socket.AF_INET, 7, socket.inet_aton("169.254.1.1"), "ee:ee:ee:ee:ee:01"
    )


def test_incomplete_neighbour_has_no_lladdr() -> None:
    msg = ndmsg()
    msg["family"] = socket.AF_INET6
    msg["ifindex"] = 3
    msg["attrs"] = [("NDA_DST", "fe80::1")]
    entry = decode_neighbour(_payload(msg, RTM_NEWNEIGH))
    assert (entry.index, entry.lladdr) == (3, "")


def test_neigh_dump_request_names_only_family_and_interface() -> None:
    (message,) = codec.iter_messages(neigh_dump_request(9, socket.AF_INET6, 12))
    assert (message.msg_type, message.seq) == (RTM_GETNEIGH, 9)
    assert message.flags & codec.NLM_F_DUMP == codec.NLM_F_DUMP
    # The header is all zero but the family (a strict kernel refuses any
    # other field in a dump request); the interface is NDA_IFINDEX.
    assert NDMSG.unpack_from(message.payload) == (socket.AF_INET6, 0, 0, 0, 0)
    parsed = ndmsg(neigh_dump_request(9, socket.AF_INET6, 12))  # with its header
    parsed.decode()
    assert (parsed["family"], parsed["ifindex"], parsed["state"]) == (socket.AF_INET6, 0, 0)
    assert parsed.get_attr("NDA_IFINDEX") == 12


def test_veth_with_its_peer_here_and_elsewhere() -> None:
    msg = ifinfmsg()
    msg["index"] = 9
    msg["attrs"] = [("IFLA_IFNAME", "l3f1234"), ("IFLA_LINK", 10)]
    assert decode_link(_payload(msg, codec.RTM_NEWLINK)) == DecodedLink(9, "l3f1234", None, 10)
    msg = ifinfmsg()
    msg["index"] = 9
    msg["attrs"] = [("IFLA_IFNAME", "l3f1234"), ("IFLA_LINK", 2), ("IFLA_LINK_NETNSID", 0)]
    assert decode_link(_payload(msg, codec.RTM_NEWLINK)) == DecodedLink(
        9, "l3f1234", None, 2, peer_elsewhere=True
    )


def test_link_get_request_by_name_or_index() -> None:
    by_name = codec.iter_messages(link_get_request(5, name="l3f1234"))
    (message,) = by_name
    assert (message.msg_type, message.flags, message.seq) == (
        codec.RTM_GETLINK,
        codec.NLM_F_REQUEST,
        5,
    )
    family, _type, index, flags, change = codec.IFINFOMSG.unpack_from(message.payload)
    assert (family, index, flags, change) == (socket.AF_UNSPEC, 0, 0, 0)
    attrs = dict(codec.iter_attrs(message.payload, codec.IFINFOMSG.size))
    assert attrs[codec.IFLA_IFNAME] == b"l3f1234\0"
    assert attrs[codec.IFLA_EXT_MASK] == codec.U32.pack(codec.RTEXT_FILTER_SKIP_STATS)
    (message,) = codec.iter_messages(link_get_request(6, index=42))
    assert codec.IFINFOMSG.unpack_from(message.payload)[2] == 42
    assert codec.IFLA_IFNAME not in dict(codec.iter_attrs(message.payload, codec.IFINFOMSG.size))
    with pytest.raises(ValueError):
        link_get_request(7)
    with pytest.raises(ValueError):
        link_get_request(7, name="x", index=1)
