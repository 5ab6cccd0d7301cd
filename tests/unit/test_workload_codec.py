"""The workload-side netlink messages against pyroute2's encoder: links with
their MAC, neighbour entries, and the dump requests the kernel's strict
checking accepts (no stray header fields)."""

from __future__ import annotations

import socket

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
