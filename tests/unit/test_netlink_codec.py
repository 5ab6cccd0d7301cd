"""The raw route codec against pyroute2's encoder and decoder.

pyroute2 is the reference: whatever bytes it produces for a route are what
the kernel is known to accept, so the hand-packed messages must be identical,
and what pyroute2 encodes must decode back to the same route here.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from l3fabric.dataplane import codec
from l3fabric.dataplane.onlink import on_link_network
from l3fabric.dataplane.route_messages import RouteConverter
from l3fabric.model import NextHop, RouteKind

PROTO = 76
REPLACE = codec.RouteEncoder.REPLACE_FLAGS
DELETE = codec.RouteEncoder.DELETE_FLAGS


def pyroute2_route(
    msg_type: int,
    flags: int,
    seq: int,
    family: int,
    dst: str,
    dst_len: int,
    scope: int,
    attrs: list[tuple[str, object]],
    proto: int = PROTO,
) -> bytes:
    msg = rtmsg()
    msg["family"] = family
    msg["dst_len"] = dst_len
    msg["table"] = codec.RT_TABLE_MAIN
    msg["proto"] = proto
    msg["scope"] = scope
    msg["type"] = codec.RTN_UNICAST
    msg["attrs"] = [("RTA_DST", dst), *attrs]
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


# -- encoding ---------------------------------------------------------------


def test_replace_dev_v4_matches_pyroute2() -> None:
    ours = codec.RouteEncoder(PROTO).replace_dev(
        41, socket.AF_INET, packed("100.64.3.7"), 32, ifindex=9
    )
    theirs = pyroute2_route(
        codec.RTM_NEWROUTE,
        REPLACE,
        41,
        socket.AF_INET,
        "100.64.3.7",
        32,
        codec.RT_SCOPE_LINK,
        [("RTA_OIF", 9)],
    )
    assert ours == theirs
    assert len(ours) == 44


def test_replace_dev_v6_is_scope_universe_like_ip() -> None:
    ours = codec.RouteEncoder(PROTO).replace_dev(
        2, socket.AF_INET6, packed("fd00:64::5"), 128, ifindex=3
    )
    theirs = pyroute2_route(
        codec.RTM_NEWROUTE,
        REPLACE,
        2,
        socket.AF_INET6,
        "fd00:64::5",
        128,
        codec.RT_SCOPE_UNIVERSE,
        [("RTA_OIF", 3)],
    )
    assert ours == theirs


@pytest.mark.parametrize("ifindex", [0, 12])
def test_replace_gateway_matches_pyroute2(ifindex: int) -> None:
    attrs: list[tuple[str, object]] = [("RTA_GATEWAY", "198.18.0.2")]
    if ifindex:
        attrs.append(("RTA_OIF", ifindex))
    ours = codec.RouteEncoder(PROTO).replace_gateway(
        7, socket.AF_INET, packed("100.64.4.0"), 26, packed("198.18.0.2"), ifindex
    )
    theirs = pyroute2_route(
        codec.RTM_NEWROUTE,
        REPLACE,
        7,
        socket.AF_INET,
        "100.64.4.0",
        26,
        codec.RT_SCOPE_UNIVERSE,
        attrs,
    )
    assert ours == theirs


def test_delete_matches_pyroute2_and_pins_protocol() -> None:
    ours = codec.RouteEncoder(PROTO).delete(99, socket.AF_INET6, packed("fd00:64:1::"), 64)
    theirs = pyroute2_route(
        codec.RTM_DELROUTE,
        DELETE,
        99,
        socket.AF_INET6,
        "fd00:64:1::",
        64,
        codec.RT_SCOPE_NOWHERE,
        [],
    )
    assert ours == theirs
    # rtm_protocol (byte 16 + 5) is what keeps a delete off foreign routes
    assert ours[16 + 5] == PROTO


def test_multipath_matches_pyroute2() -> None:
    spec = codec.RouteSpec(
        socket.AF_INET,
        packed("100.64.1.0"),
        24,
        PROTO,
        codec.RT_SCOPE_UNIVERSE,
        (
            codec.RawNextHop(packed("198.18.0.2")),
            codec.RawNextHop(packed("198.18.0.3"), ifindex=3),
        ),
    )
    ours = codec.encode_route(codec.RTM_NEWROUTE, REPLACE, 5, spec)
    theirs = pyroute2_route(
        codec.RTM_NEWROUTE,
        REPLACE,
        5,
        socket.AF_INET,
        "100.64.1.0",
        24,
        codec.RT_SCOPE_UNIVERSE,
        [
            (
                "RTA_MULTIPATH",
                [
                    {"oif": 0, "hops": 0, "flags": 0, "attrs": [("RTA_GATEWAY", "198.18.0.2")]},
                    {"oif": 3, "hops": 0, "flags": 0, "attrs": [("RTA_GATEWAY", "198.18.0.3")]},
                ],
            )
        ],
    )
    assert ours == theirs


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def networks(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address = draw(st.one_of(ipv4, ipv6))
    length = draw(st.integers(0, address.max_prefixlen))
    return ipaddress.ip_network((address, length), strict=False)


@given(
    prefix=networks(),
    seq=st.integers(0, 2**32 - 1),
    ifindex=st.integers(1, 2**31 - 1),
    gateway_bits=st.integers(0, 2**128 - 1),
)
def test_fast_layouts_equal_general_encoder_and_pyroute2(
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
    seq: int,
    ifindex: int,
    gateway_bits: int,
) -> None:
    family = codec.FAMILY_OF_VERSION[prefix.version]
    dst = prefix.network_address.packed
    address_type = ipaddress.IPv4Address if prefix.version == 4 else ipaddress.IPv6Address
    gateway = address_type(gateway_bits % (2**prefix.max_prefixlen))
    encoder = codec.RouteEncoder(PROTO)
    dev_scope = codec.RT_SCOPE_LINK if prefix.version == 4 else codec.RT_SCOPE_UNIVERSE

    dev = encoder.replace_dev(seq, family, dst, prefix.prefixlen, ifindex)
    spec = codec.RouteSpec(
        family, dst, prefix.prefixlen, PROTO, dev_scope, (codec.RawNextHop(None, ifindex),)
    )
    assert dev == codec.encode_route(codec.RTM_NEWROUTE, REPLACE, seq, spec)
    assert dev == pyroute2_route(
        codec.RTM_NEWROUTE,
        REPLACE,
        seq,
        family,
        str(prefix.network_address),
        prefix.prefixlen,
        dev_scope,
        [("RTA_OIF", ifindex)],
    )

    via = encoder.replace_gateway(seq, family, dst, prefix.prefixlen, gateway.packed, ifindex)
    spec = codec.RouteSpec(
        family,
        dst,
        prefix.prefixlen,
        PROTO,
        codec.RT_SCOPE_UNIVERSE,
        (codec.RawNextHop(gateway.packed, ifindex),),
    )
    assert via == codec.encode_route(codec.RTM_NEWROUTE, REPLACE, seq, spec)
    decoded = codec.decode_route(via[codec.NLMSGHDR.size :])
    assert decoded.dst == dst
    assert decoded.dst_len == prefix.prefixlen
    assert decoded.nexthops == (codec.RawNextHop(gateway.packed, ifindex),)

    hops = (codec.RawNextHop(gateway.packed, ifindex), codec.RawNextHop(gateway.packed))
    spec = codec.RouteSpec(family, dst, prefix.prefixlen, PROTO, codec.RT_SCOPE_UNIVERSE, hops)
    multipath = encoder.replace_multipath(
        seq, family, dst, prefix.prefixlen, codec.RT_SCOPE_UNIVERSE, codec.multipath_attr(hops)
    )
    assert multipath == codec.encode_route(codec.RTM_NEWROUTE, REPLACE, seq, spec)
    assert codec.decode_route(multipath[codec.NLMSGHDR.size :]).nexthops == hops


# -- decoding ---------------------------------------------------------------


def test_decode_what_pyroute2_encodes_with_table_attribute() -> None:
    data = pyroute2_route(
        codec.RTM_NEWROUTE,
        0,
        1,
        socket.AF_INET6,
        "fd00:64:2::",
        48,
        codec.RT_SCOPE_UNIVERSE,
        [
            ("RTA_TABLE", 254),
            ("RTA_PRIORITY", 1024),
            (
                "RTA_MULTIPATH",
                [
                    {"oif": 4, "attrs": [("RTA_GATEWAY", "fe80::1")]},
                    {"oif": 5, "attrs": [("RTA_GATEWAY", "fe80::2")]},
                ],
            ),
        ],
    )
    (message,) = codec.iter_messages(data)
    route = codec.decode_route(message.payload)
    assert route.family == socket.AF_INET6
    assert route.dst == packed("fd00:64:2::")
    assert route.dst_len == 48
    assert route.table == codec.RT_TABLE_MAIN
    assert route.protocol == PROTO
    assert route.nexthops == (
        codec.RawNextHop(packed("fe80::1"), 4),
        codec.RawNextHop(packed("fe80::2"), 5),
    )


def test_default_route_without_rta_dst_decodes_to_zero_address() -> None:
    body = codec.RTMSG.pack(socket.AF_INET, 0, 0, 0, 254, PROTO, 0, 1, 0)
    body += codec.rtattr(codec.RTA_GATEWAY, packed("198.18.0.1"))
    body += codec.rtattr(codec.RTA_OIF, struct.pack("=I", 2))
    route = codec.decode_route(body)
    assert route.dst == bytes(4)
    assert route.nexthops == (codec.RawNextHop(packed("198.18.0.1"), 2),)


def test_iter_messages_splits_a_batch_and_rejects_truncation() -> None:
    encoder = codec.RouteEncoder(PROTO)
    batch = b"".join(
        encoder.replace_dev(seq, socket.AF_INET, packed(f"100.64.0.{seq}"), 32, 2)
        for seq in range(1, 4)
    )
    assert [m.seq for m in codec.iter_messages(batch)] == [1, 2, 3]
    with pytest.raises(ValueError, match="malformed netlink message"):
        list(codec.iter_messages(batch[:-4]))


def test_iter_attrs_rejects_an_overlong_attribute() -> None:
    data = codec.RTATTR.pack(64, codec.RTA_DST) + bytes(4)
    with pytest.raises(ValueError, match="malformed rtattr"):
        list(codec.iter_attrs(data))


def error_reply(seq: int, err: int, text: str = "") -> codec.Message:
    """An NLMSG_ERROR the way the kernel sends it on a CAP_ACK socket."""
    flags = codec.NLM_F_CAPPED
    body = codec.NLMSGERR_CODE.pack(-err) + codec.NLMSGHDR.pack(44, 24, 0x501, seq, 0)
    if text:
        flags |= codec.NLM_F_ACK_TLVS
        body += codec.rtattr(codec.NLMSGERR_ATTR_MSG, text.encode() + b"\0")
    data = codec.nlmsg(codec.NLMSG_ERROR, flags, seq, body)
    (message,) = codec.iter_messages(data)
    return message


def test_decode_ack_with_extended_message() -> None:
    ack = codec.decode_ack(error_reply(17, errno.ENETUNREACH, "Nexthop has invalid gateway"))
    assert ack == codec.Ack(17, errno.ENETUNREACH, "Nexthop has invalid gateway")


def test_decode_positive_ack() -> None:
    assert codec.decode_ack(error_reply(3, 0)) == codec.Ack(3, 0, "")


def test_decode_uncapped_ack_skips_the_echoed_request() -> None:
    request = codec.RouteEncoder(PROTO).replace_dev(8, socket.AF_INET, packed("100.64.0.1"), 32, 2)
    body = codec.NLMSGERR_CODE.pack(-errno.ENODEV) + request
    body += codec.rtattr(codec.NLMSGERR_ATTR_MSG, b"no such device\0")
    data = codec.nlmsg(codec.NLMSG_ERROR, codec.NLM_F_ACK_TLVS, 8, body)
    (message,) = codec.iter_messages(data)
    assert codec.decode_ack(message) == codec.Ack(8, errno.ENODEV, "no such device")


def test_link_name_from_pyroute2_ifinfmsg() -> None:
    msg = ifinfmsg()
    msg["index"] = 42
    msg["attrs"] = [("IFLA_IFNAME", "l3f0123456789ab"), ("IFLA_MTU", 1500)]
    msg["header"]["type"] = codec.RTM_NEWLINK
    msg.encode()
    (message,) = codec.iter_messages(bytes(msg.data))
    assert codec.decode_link_name(message.payload) == (42, "l3f0123456789ab")


def test_link_dump_request_is_a_dump() -> None:
    (message,) = codec.iter_messages(codec.link_dump_request(5))
    assert message.msg_type == codec.RTM_GETLINK
    assert message.flags & codec.NLM_F_DUMP == codec.NLM_F_DUMP


def test_addr_dump_request_names_the_family_and_interface() -> None:
    (message,) = codec.iter_messages(codec.addr_dump_request(9, socket.AF_INET6, 42))
    assert message.msg_type == codec.RTM_GETADDR
    assert message.flags & codec.NLM_F_DUMP == codec.NLM_F_DUMP
    # Strict dump checking refuses a request with prefixlen, flags or scope set.
    assert codec.IFADDRMSG.unpack(message.payload) == (socket.AF_INET6, 0, 0, 0, 42)


def pyroute2_address(family: int, prefixlen: int, attrs: list[tuple[str, object]]) -> bytes:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["flags"], msg["scope"], msg["index"] = (
        family, prefixlen, 0x80, 253, 42,
    )  # fmt: skip
    msg["attrs"] = attrs
    msg["header"]["type"] = codec.RTM_NEWADDR
    msg.encode()
    (message,) = codec.iter_messages(bytes(msg.data))
    return message.payload


def test_address_from_pyroute2_ifaddrmsg_takes_flags_from_ifa_flags() -> None:
    payload = pyroute2_address(
        socket.AF_INET6, 64, [("IFA_ADDRESS", "fe80::1"), ("IFA_FLAGS", 0x240)]
    )
    assert codec.decode_address(payload) == codec.DecodedAddress(
        socket.AF_INET6, 64, 0x240, 253, 42, ipaddress.IPv6Address("fe80::1").packed
    )


def test_address_of_a_point_to_point_link_is_the_local_one() -> None:
    payload = pyroute2_address(
        socket.AF_INET, 32, [("IFA_LOCAL", "100.64.0.1"), ("IFA_ADDRESS", "100.64.0.2")]
    )
    found = codec.decode_address(payload)
    assert (found.flags, ipaddress.IPv4Address(found.address)) == (
        0x80,
        ipaddress.IPv4Address("100.64.0.1"),
    )


def test_route_dump_request_filters_table_protocol_and_oif() -> None:
    (message,) = codec.iter_messages(codec.route_dump_request(5, socket.AF_INET6, PROTO, oif=7))
    header = codec.RTMSG.unpack_from(message.payload)
    assert header[0] == socket.AF_INET6
    assert header[4:6] == (codec.RT_TABLE_MAIN, PROTO)
    assert dict(codec.iter_attrs(message.payload, codec.RTMSG.size)) == {
        codec.RTA_OIF: struct.pack("=I", 7)
    }


# -- conversion to model values ----------------------------------------------


def test_converter_reports_gateways_without_device_and_devices_by_name() -> None:
    converter = RouteConverter({2: "eth1", 9: "l3f0123456789ab"})
    learned = converter.convert(
        codec.DecodedRoute(
            socket.AF_INET,
            packed("100.64.8.0"),
            26,
            codec.RT_TABLE_MAIN,
            PROTO,
            0,
            1,
            (codec.RawNextHop(packed("198.18.0.3"), 2), codec.RawNextHop(packed("198.18.0.2"), 2)),
        )
    )
    assert learned.prefix == ipaddress.ip_network("100.64.8.0/26")
    assert learned.nexthops == (
        NextHop(gateway=ipaddress.ip_address("198.18.0.2")),
        NextHop(gateway=ipaddress.ip_address("198.18.0.3")),
    )
    assert learned.kind is RouteKind.LEARNED
    local = converter.convert(
        codec.DecodedRoute(
            socket.AF_INET6,
            packed("fd00:64::9"),
            128,
            codec.RT_TABLE_MAIN,
            PROTO,
            0,
            1,
            (codec.RawNextHop(None, 9),),
        )
    )
    assert local.nexthops == (NextHop(ifname="l3f0123456789ab"),)
    assert local.kind is RouteKind.LOCAL_WORKLOAD


def _dumped(
    dst: str, protocol: int, *, gateway: str | None = None, table: int = 254, oif: int = 2
) -> bytes:
    """A route as a kernel dump sends it, encoded by pyroute2."""
    network = ipaddress.ip_network(dst)
    msg = rtmsg()
    msg["family"] = socket.AF_INET if network.version == 4 else socket.AF_INET6
    msg["dst_len"] = network.prefixlen
    msg["table"] = table
    msg["proto"] = protocol
    msg["type"] = 1
    msg["attrs"] = [
        ("RTA_DST", str(network.network_address)),
        ("RTA_TABLE", table),
        ("RTA_OIF", oif),
    ]
    if gateway:
        msg["attrs"].append(("RTA_GATEWAY", gateway))
    msg.encode()
    return bytes(msg.data)[16:]


@pytest.mark.parametrize(
    ("dst", "protocol", "gateway", "table", "oif", "expected"),
    [
        ("198.18.1.0/24", 2, None, 254, 2, "198.18.1.0/24"),  # connected
        ("fd00:198:18:1::/64", 2, None, 254, 2, "fd00:198:18:1::/64"),
        ("198.18.5.0/24", 3, None, 254, 2, "198.18.5.0/24"),  # ip route add ... dev
        ("0.0.0.0/0", 4, None, 254, 2, "0.0.0.0/0"),  # a default route out of a device
        ("198.18.6.0/24", 3, "198.18.1.2", 254, 2, None),  # via a gateway
        ("100.64.0.7/32", 76, None, 254, 2, None),  # a workload's host route: ours
        ("100.64.9.0/24", 186, None, 254, 2, None),  # another routing daemon's
        ("fe80::/64", 2, None, 254, 2, None),  # every veth has one
        ("198.18.1.0/24", 2, None, 255, 2, None),  # the local table
        ("fd00:198:18::1/128", 2, None, 254, 1, None),  # the node's own address, on lo
    ],
)
def test_on_link_networks_are_direct_routes_of_the_links_protocols(
    dst: str, protocol: int, gateway: str | None, table: int, oif: int, expected: str | None
) -> None:
    route = codec.decode_route(_dumped(dst, protocol, gateway=gateway, table=table, oif=oif))
    found = on_link_network(route)
    assert found == (ipaddress.ip_network(expected) if expected else None)
