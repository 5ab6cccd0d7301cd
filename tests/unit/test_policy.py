from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l3fabric.bgp.events import PathAttributes, UpdateEvent
from l3fabric.bgp.policy import (
    AS_LOOP,
    BAD_FIRST_AS,
    BAD_NEXT_HOP,
    COVERS_LOCAL_WORKLOAD,
    DEFAULT_ROUTE,
    NEXT_HOP_SELF,
    OUTSIDE_POOLS,
    REJECT_REASONS,
    UNREACHABLE_NEXT_HOP,
    ImportPolicy,
    PeerInfo,
)
from l3fabric.bgp.rib import Rib
from l3fabric.bgp.rib_types import TearDown
from l3fabric.model import IPAddress

ip = ipaddress.ip_address
net = ipaddress.ip_network

POOLS = (net("100.64.0.0/16"), net("fd00:64::/48"))
MESH = PeerInfo(ip("198.18.0.2"), "mesh", 64512, 64512)
MESH6 = PeerInfo(ip("fd00:198:18::2"), "mesh", 64512, 64512)
TOR = PeerInfo(ip("198.18.0.254"), "external", 65001, 64512)


def policy(**overrides: object) -> ImportPolicy:
    settings: dict[str, object] = {
        "pools": POOLS,
        "local_addresses": frozenset({ip("100.64.1.5"), ip("fd00:64::1:5")}),
        "node_addresses": (ip("198.18.0.1"), ip("fd00:198:18::1")),
    }
    settings.update(overrides)
    return ImportPolicy(**settings)  # type: ignore[arg-type]


def judge(
    prefix: str, next_hop: str = "198.18.0.2", peer: PeerInfo = MESH, **kw: object
) -> str | None:
    # An external peer's path starts with its own AS, as every router sends it.
    as_path = kw.pop("as_path", (peer.asn,) if peer.external else ())
    return policy(**kw).evaluate(
        net(prefix),
        PathAttributes(next_hop=ip(next_hop), as_path=as_path),  # type: ignore[arg-type]
        peer,
    )


def test_ordinary_routes_inside_the_pools_are_accepted() -> None:
    assert judge("100.64.2.7/32") is None
    assert judge("100.64.2.0/26") is None
    assert judge("fd00:64::2:7/128", "fd00:198:18::2", MESH6) is None


def test_default_route_is_rejected_unless_allowed() -> None:
    assert judge("0.0.0.0/0") == DEFAULT_ROUTE
    assert judge("::/0", "fd00:198:18::2", MESH6) == DEFAULT_ROUTE
    # Allowed, the default is accepted although it lies outside the pools and
    # covers the local workloads: it cannot win over anything more specific.
    assert judge("0.0.0.0/0", allow_default=True) is None
    assert judge("::/0", "fd00:198:18::2", MESH6, allow_default=True) is None


def test_prefix_equal_to_or_covering_a_local_workload_is_rejected() -> None:
    assert judge("100.64.1.5/32") == COVERS_LOCAL_WORKLOAD
    assert judge("100.64.1.0/24") == COVERS_LOCAL_WORKLOAD
    assert judge("100.64.1.4/31") == COVERS_LOCAL_WORKLOAD
    assert judge("100.64.0.0/16") == COVERS_LOCAL_WORKLOAD
    assert judge("fd00:64::1:5/128", "fd00:198:18::2", MESH6) == COVERS_LOCAL_WORKLOAD
    # Neighbours of the local address are fine.
    assert judge("100.64.1.4/32") is None
    assert judge("100.64.1.6/31") is None
    assert judge("fd00:64::1:6/127", "fd00:198:18::2", MESH6) is None


def test_covering_check_stays_within_one_ip_version() -> None:
    p = policy(local_addresses=frozenset({ip("::6440:105")}))  # same integer as 100.64.1.5
    attrs = PathAttributes(next_hop=ip("198.18.0.2"))
    assert p.evaluate(net("100.64.1.5/32"), attrs, MESH) is None


def test_prefix_outside_the_pools_is_rejected_unless_allowed() -> None:
    assert judge("10.1.0.0/16") == OUTSIDE_POOLS
    # Contains the pool rather than lying inside it.
    assert judge("100.0.0.0/8", local_addresses=frozenset()) == OUTSIDE_POOLS
    assert judge("fd00:65::/64", "fd00:198:18::2", MESH6) == OUTSIDE_POOLS
    assert judge("10.1.0.0/16", allow_outside_pools=True) is None
    allowed = (net("10.0.0.0/8"),)
    assert judge("10.1.0.0/16", allowed_prefixes=allowed) is None
    assert judge("10.0.0.0/8", allowed_prefixes=allowed) is None
    assert judge("11.0.0.0/16", allowed_prefixes=allowed) == OUTSIDE_POOLS
    assert judge("100.64.2.0/24", pools=()) == OUTSIDE_POOLS


@pytest.mark.parametrize(
    ("prefix", "next_hop"),
    [
        ("100.64.2.7/32", "0.0.0.0"),
        ("100.64.2.7/32", "224.0.0.5"),
        ("100.64.2.7/32", "127.0.0.1"),
        ("100.64.2.7/32", "169.254.1.1"),
        ("100.64.2.7/32", "255.255.255.255"),
        ("100.64.2.7/32", "fd00:198:18::2"),  # IPv6 next hop for an IPv4 prefix
        ("fd00:64::2:7/128", "198.18.0.2"),  # IPv4 next hop for an IPv6 prefix
        ("fd00:64::2:7/128", "::"),
        ("fd00:64::2:7/128", "::1"),
        ("fd00:64::2:7/128", "ff02::2"),
        ("fd00:64::2:7/128", "fe80::1"),
        ("fd00:64::2:7/128", "::ffff:198.18.0.2"),
    ],
)
def test_unusable_next_hops_are_rejected(prefix: str, next_hop: str) -> None:
    assert judge(prefix, next_hop) == BAD_NEXT_HOP


def test_next_hop_that_is_this_node_is_rejected() -> None:
    assert judge("100.64.2.7/32", "198.18.0.1") == NEXT_HOP_SELF
    assert judge("fd00:64::2:7/128", "fd00:198:18::1", MESH6) == NEXT_HOP_SELF


ON_LINK = (net("198.18.0.0/24"), net("fd00:198:18::/64"))


def test_next_hop_on_no_connected_network_is_rejected() -> None:
    # A hostile or misconfigured peer forging a third-party next hop the
    # kernel could never use (it refuses a gateway outside every on-link
    # network).
    assert judge("100.64.2.0/26", "203.0.113.9", TOR, on_link=ON_LINK) == UNREACHABLE_NEXT_HOP
    assert judge("100.64.2.0/26", "198.18.1.2", on_link=ON_LINK) == UNREACHABLE_NEXT_HOP
    v6 = judge("fd00:64::/122", "2001:db8::9", MESH6, on_link=ON_LINK)
    assert v6 == UNREACHABLE_NEXT_HOP
    # Same-family on-link networks only: an IPv4 LAN does not make an IPv6
    # next hop reachable.
    only_v4 = (net("198.18.0.0/24"),)
    assert judge("fd00:64::/122", "fd00:198:18::2", MESH6, on_link=only_v4) == (
        UNREACHABLE_NEXT_HOP
    )
    # On a shared subnet (the peer itself or a third party there): fine.
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, on_link=ON_LINK) is None
    assert judge("100.64.2.0/26", "198.18.0.7", TOR, on_link=ON_LINK) is None
    assert judge("fd00:64::/122", "fd00:198:18::2", MESH6, on_link=ON_LINK) is None
    # Unknown on-link networks: not checked. Known to be none: nothing reachable.
    assert judge("100.64.2.0/26", "203.0.113.9", TOR) is None
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, on_link=()) == UNREACHABLE_NEXT_HOP


def test_on_link_must_be_networks() -> None:
    with pytest.raises(ValueError, match="on_link"):
        policy(on_link=(ip("198.18.0.1"),))
    with pytest.raises(ValueError, match="on_link"):
        policy(on_link="198.18.0.0/24")


def test_rib_rejudges_next_hops_when_on_link_networks_change() -> None:
    rib = Rib(policy())
    rib.set_peers([TOR])
    far = PathAttributes(next_hop=ip("203.0.113.9"), as_path=(65001,))
    rib.apply(UpdateEvent(TOR.address, announced=((net("100.64.2.0/26"), far),)), 0.0)
    assert net("100.64.2.0/26") in rib.best_routes()
    rib.set_policy(policy(on_link=ON_LINK))
    assert net("100.64.2.0/26") not in rib.best_routes()
    [route] = rib.received(TOR.address)
    assert route.reason == UNREACHABLE_NEXT_HOP


def test_own_asn_in_path_is_a_loop_only_for_ebgp() -> None:
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, as_path=(65001, 64512)) == AS_LOOP
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, as_path=(65001, 65002)) is None
    # iBGP paths never carry our own AS prepended by us; reflected routes with
    # our AS further along are loops detected by originator/cluster ids.
    assert judge("100.64.2.0/26", "198.18.0.3", MESH, as_path=(64512,)) is None


def test_an_external_path_must_start_with_the_peers_as() -> None:
    """RFC 4271 6.3's first-AS check: an external peer that leaves its own AS
    out (a route server's client, a forged UPDATE) would tie with a node's
    iBGP path on AS-path length and then win as eBGP."""
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, as_path=()) == BAD_FIRST_AS
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, as_path=(65002, 65001)) == BAD_FIRST_AS
    assert judge("100.64.2.0/26", "198.18.0.254", TOR, as_path=(65001, 65001, 65002)) is None
    # iBGP paths start empty: the check is for external peers only.
    assert judge("100.64.2.0/26", "198.18.0.3", MESH, as_path=()) is None


def test_first_applicable_reason_wins_in_documented_order() -> None:
    # A default route with a bad next hop from a looping eBGP peer: default first.
    assert judge("0.0.0.0/0", "127.0.0.1", TOR, as_path=(64512,)) == DEFAULT_ROUTE
    assert judge("100.64.1.5/32", "127.0.0.1") == COVERS_LOCAL_WORKLOAD
    assert judge("10.0.0.0/8", "127.0.0.1") == OUTSIDE_POOLS
    assert judge("100.64.2.0/26", "127.0.0.1", TOR, as_path=(64512,)) == BAD_NEXT_HOP
    assert judge("100.64.2.0/26", "198.18.0.1", TOR, as_path=(64512,)) == NEXT_HOP_SELF
    lan = (net("198.18.0.0/24"),)
    assert judge("100.64.2.0/26", "203.0.113.9", TOR, as_path=(64512,), on_link=lan) == (
        UNREACHABLE_NEXT_HOP
    )
    assert REJECT_REASONS == (
        DEFAULT_ROUTE,
        COVERS_LOCAL_WORKLOAD,
        OUTSIDE_POOLS,
        BAD_NEXT_HOP,
        NEXT_HOP_SELF,
        UNREACHABLE_NEXT_HOP,
        AS_LOOP,
        BAD_FIRST_AS,
    )


def test_with_local_addresses_replaces_the_set() -> None:
    p = policy().with_local_addresses([ip("100.64.9.9")])
    assert p.local_addresses == frozenset({ip("100.64.9.9")})
    assert p.covers_local_workload(net("100.64.9.0/24"))
    assert not p.covers_local_workload(net("100.64.1.0/24"))


@given(
    addresses=st.sets(st.integers(0, 255), max_size=8),
    base=st.integers(0, 255),
    length=st.integers(24, 32),
)
def test_covers_local_workload_agrees_with_brute_force(
    addresses: set[int], base: int, length: int
) -> None:
    local = frozenset(ipaddress.IPv4Address(0x64400100 + a) for a in addresses)
    prefix = ipaddress.IPv4Network((0x64400100 + base, length), strict=False)
    expected = any(a in prefix for a in local)
    assert (
        ImportPolicy(pools=POOLS, local_addresses=local).covers_local_workload(prefix) is expected
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ebgp"}, "kind must be one of mesh, route-reflector, external"),
        ({"kind": "external", "asn": 64512}, "is our own asn"),
        ({"kind": "mesh", "asn": 65001}, "is iBGP but asn 65001"),
        ({"asn": 0, "local_asn": 0}, "asn: 0 is not allowed: AS 0 is reserved"),
        ({"asn": 23456, "local_asn": 23456}, "asn: 23456 is not allowed: it is AS_TRANS"),
        ({"asn": 2**32 - 1, "local_asn": 2**32 - 1}, "asn: 4294967295 is not allowed"),
        ({"max_prefixes": 0}, "max_prefixes must be an integer"),
        ({"graceful_restart_time": -1}, "graceful_restart_time must be a positive"),
        ({"address": "198.18.0.2"}, "peer address must be an IP address"),
    ],
)
def test_bad_peer_info_is_refused_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    settings: dict[str, object] = {
        "address": ip("198.18.0.2"),
        "kind": "mesh",
        "asn": 64512,
        "local_asn": 64512,
    }
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        PeerInfo(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_prefixes": 0}, "max_prefixes must be an integer in 1..10000000"),
        ({"pools": "100.64.0.0/16"}, "pools must be a list of networks"),
        ({"pools": ["100.64.0.0/16"]}, "pools: '100.64.0.0/16' is not an IP network"),
        ({"allowed_prefixes": [ip("10.0.0.1")]}, "allowed_prefixes: .* is not an IP network"),
        ({"node_addresses": ["198.18.0.1"]}, "node_addresses: '198.18.0.1' is not an IP"),
        ({"allow_default": "yes"}, "allow_default must be true or false"),
    ],
)
def test_bad_policy_is_refused_with_a_clear_message(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ImportPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_normalises_collections() -> None:
    p = ImportPolicy(pools=[net("100.64.0.0/16")], local_addresses={ip("100.64.0.1")})  # type: ignore[arg-type]
    assert p.pools == (net("100.64.0.0/16"),)
    assert p.local_addresses == frozenset({ip("100.64.0.1")})
    assert hash(p) == hash(
        ImportPolicy(pools=(net("100.64.0.0/16"),), local_addresses=frozenset({ip("100.64.0.1")}))
    )


# ----- the policy as the RIB applies it ---------------------------------------

B = MESH.address


def rib_with(*peers: PeerInfo, **overrides: object) -> Rib:
    rib = Rib(policy(**overrides))
    rib.set_peers(peers)
    return rib


def send(
    rib: Rib, peer: IPAddress, prefixes: list[str], next_hop: str = "198.18.0.2", **kw: object
) -> None:
    a = PathAttributes(next_hop=ip(next_hop), **kw)  # type: ignore[arg-type]
    rib.apply(UpdateEvent(peer, announced=tuple((net(p), a) for p in prefixes)), 0.0)


def test_rib_keeps_rejected_routes_with_their_reason_and_never_selects_them() -> None:
    rib = rib_with(MESH, TOR, on_link=ON_LINK)
    send(rib, B, ["100.64.1.5/32", "0.0.0.0/0", "10.0.0.0/8", "100.64.2.9/32"])
    send(rib, B, ["100.64.2.7/32"], "127.0.0.1")
    send(rib, B, ["100.64.2.8/32"], "198.18.0.1")
    send(rib, B, ["100.64.2.6/32"], "203.0.113.9")
    send(rib, TOR.address, ["100.64.8.0/24"], "198.18.0.254", as_path=(65001, 64512))
    assert list(rib.best_routes()) == [net("100.64.2.9/32")]
    assert {str(r.prefix): r.reason for r in rib.received()} == {
        "0.0.0.0/0": DEFAULT_ROUTE,
        "10.0.0.0/8": OUTSIDE_POOLS,
        "100.64.1.5/32": COVERS_LOCAL_WORKLOAD,
        "100.64.2.7/32": BAD_NEXT_HOP,
        "100.64.2.6/32": UNREACHABLE_NEXT_HOP,
        "100.64.2.8/32": NEXT_HOP_SELF,
        "100.64.2.9/32": None,
        "100.64.8.0/24": AS_LOOP,
    }
    stats = rib.stats()[B]
    assert (stats.received, stats.accepted) == (7, 1)
    assert stats.rejected == {r: 1 for r in REJECT_REASONS if r not in (AS_LOOP, BAD_FIRST_AS)}
    assert rib.stats()[TOR.address].rejected == {AS_LOOP: 1}


def test_local_workload_changes_rejudge_stored_routes() -> None:
    rib = rib_with(MESH)
    send(rib, B, ["100.64.3.3/32", "100.64.3.0/26", "100.64.4.0/26"])
    assert len(rib.take_changes().replace) == 3
    # A workload with 100.64.3.3 starts here: B's /32 and the covering /26 go.
    rib.set_local_addresses([ip("100.64.1.5"), ip("100.64.3.3")])
    changes = rib.take_changes()
    assert changes.delete == [net("100.64.3.0/26"), net("100.64.3.3/32")]
    assert changes.replace == []
    assert {str(r.prefix) for r in rib.received() if not r.accepted} == {
        "100.64.3.0/26",
        "100.64.3.3/32",
    }
    # It leaves again: both come back.
    rib.set_local_addresses([ip("100.64.1.5")])
    assert [r.prefix for r in rib.take_changes().replace] == [
        net("100.64.3.0/26"),
        net("100.64.3.3/32"),
    ]


def test_set_policy_rejudges_everything() -> None:
    rib = rib_with(MESH)
    send(rib, B, ["0.0.0.0/0", "100.64.2.7/32"])
    assert list(rib.best_routes()) == [net("100.64.2.7/32")]
    assert rib.set_policy(policy(allow_default=True)) == []
    assert set(rib.best_routes()) == {net("0.0.0.0/0"), net("100.64.2.7/32")}
    # A lower limit than what the peer already sent tears it down.
    assert rib.set_policy(policy(max_prefixes=1)) == [TearDown(B, "max-prefix 1 exceeded")]
    assert rib.best_routes() == {}
