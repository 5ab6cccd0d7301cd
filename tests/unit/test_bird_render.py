"""BIRD configuration rendering: goldens, `bird -p` on every rendered file,
validation of bad input, and the `l3fabric bird render` command.

Regenerate the goldens after an intended template change with
    UPDATE_GOLDENS=1 .venv/bin/pytest tests/unit/test_bird_render.py
and review the diff of tests/unit/fixtures/bird/ before committing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import string
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from l3fabric.bgp.bird import (
    BirdConfig,
    BirdNextHop,
    BirdPeer,
    BirdRange,
    BirdRole,
    render,
    templates_dir,
)
from l3fabric.cli.bird import config_from_data, main, parse_peer, parse_range, plain_config

GOLDENS = Path(__file__).parent / "fixtures" / "bird"
BIRD = shutil.which("bird")
needs_bird = pytest.mark.skipif(BIRD is None, reason="the bird binary (Debian bird2) is missing")

v4 = ipaddress.IPv4Address
ip = ipaddress.ip_address
net = ipaddress.ip_network
POOLS = (net("100.64.0.0/16"), net("fd00:64::/48"))


def bird_parse(text: str, tmp_path: Path) -> None:
    """`bird -p` parses the file and exits; it fails on anything it would
    refuse at startup."""
    assert BIRD is not None
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    proc = subprocess.run([BIRD, "-p", "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, f"bird -p failed:\n{proc.stderr}\n--- config ---\n{text}"


# --- representative configurations ------------------------------------------

CONFIGS: dict[str, BirdConfig] = {
    "route_reflector": BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=v4("198.18.0.250"),
        asn=64512,
        cluster_id=v4("198.18.0.254"),
        peers=(
            BirdPeer("rr2", ip("198.18.0.251"), 64512, password="between reflectors"),
            BirdPeer("rr3_v6", ip("fd00:18::252"), 64512, multihop=4),
        ),
        ranges=(
            BirdRange(net("198.18.0.0/24"), 64512, rr_client=True, password="n0des!", name="rack1"),
            BirdRange(net("198.18.8.0/22"), 64512, rr_client=True, multihop=3),
            BirdRange(net("fd00:18::/64"), 64512, rr_client=True, name="rack1_v6"),
        ),
        hold_time=9,
        keepalive=3,
        log_file=PurePosixPath("/var/log/l3fabric/rr.log"),
    ),
    "route_reflector_on_path": BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=v4("198.18.0.250"),
        asn=64512,
        ranges=(BirdRange(net("198.18.0.0/24"), 64512, rr_client=True),),
        kernel_export=True,
        graceful_restart=False,
    ),
    "tor_leaf": BirdConfig(
        role=BirdRole.TOR,
        router_id=v4("198.18.1.254"),
        asn=65001,
        peers=(
            BirdPeer("spine1", ip("198.18.2.1"), 65000, password="leaf-spine", accept_all=True),
            BirdPeer("spine2", ip("198.18.2.3"), 65000, password="leaf-spine", accept_all=True),
            BirdPeer("leaf1b", ip("198.18.1.253"), 65001, hold_time=30, keepalive=10),
        ),
        ranges=(
            BirdRange(
                net("198.18.1.0/24"),
                65101,
                name="rack1",
                ipv6_next_hop=ipaddress.IPv6Address("fd00:18:1::254"),
            ),
        ),
        accept_prefixes=(*POOLS, net("198.18.0.0/15")),
    ),
    # A leaf that is also its rack's route reflector (containerlab leaf-spine).
    "tor_leaf_rr": BirdConfig(
        role=BirdRole.TOR,
        router_id=v4("198.18.1.254"),
        asn=65101,
        cluster_id=v4("198.18.1.1"),
        peers=(
            BirdPeer("spine1", ip("198.18.100.1"), 65000),
            BirdPeer("spine1v6", ip("fd00:198:18:f001::2"), 65000),
            BirdPeer("node9", ip("198.18.9.9"), 65101, rr_client=True, next_hop=BirdNextHop.SELF),
            BirdPeer("leaf1b", ip("198.18.1.253"), 65101, next_hop=BirdNextHop.KEEP),
        ),
        ranges=(
            BirdRange(net("198.18.1.0/25"), 65101, rr_client=True, name="rack"),
            BirdRange(
                net("fd00:198:18:1::/64"),
                65101,
                rr_client=True,
                name="rack6",
                next_hop=BirdNextHop.SELF_EBGP,
            ),
        ),
        accept_prefixes=(*POOLS, net("198.18.0.0/15"), net("fd00:198:18::/48")),
        pool_prefixes=(net("100.64.0.0/16"),),
        direct_exclude=("eth0", "mgmt*"),
    ),
    "tor_spine": BirdConfig(
        role=BirdRole.TOR,
        router_id=v4("198.18.2.1"),
        asn=65000,
        peers=(
            BirdPeer("leaf1", ip("198.18.2.0"), 65001, password="leaf-spine"),
            BirdPeer("leaf2", ip("198.18.2.2"), 65002, password="leaf-spine"),
            BirdPeer("upstream", ip("198.18.3.1"), 64999, multihop=2, accept_all=True),
        ),
        accept_prefixes=(*POOLS, net("198.18.0.0/15")),
        hold_time=9,
        keepalive=3,
        kernel_metric=100,
    ),
    "node_baseline": BirdConfig(
        role=BirdRole.NODE,
        router_id=v4("198.18.0.1"),
        asn=64512,
        peers=(
            BirdPeer("node2", ip("198.18.0.2"), 64512),
            BirdPeer("node3", ip("198.18.0.3"), 64512),
        ),
        accept_prefixes=POOLS,
        scan_time=2,
    ),
    "node_plain": BirdConfig(
        role=BirdRole.NODE,
        router_id=v4("198.18.0.1"),
        asn=64512,
        peers=(BirdPeer("rr", ip("198.18.0.250"), 64512, password="x", passive=True),),
        graceful_restart=False,
        ecmp=False,
        kernel_learn_protocol=80,
        kernel_export=False,
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_render_matches_golden(name: str) -> None:
    text = render(CONFIGS[name])
    golden = GOLDENS / f"{name}.conf"
    if os.environ.get("UPDATE_GOLDENS") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}; run with UPDATE_GOLDENS=1"
    assert text == golden.read_text()


@needs_bird
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rendered_config_parses(name: str, tmp_path: Path) -> None:
    bird_parse(render(CONFIGS[name]), tmp_path)


def test_every_golden_has_a_config() -> None:
    # A golden left behind by a renamed case would never be checked again.
    assert sorted(p.stem for p in GOLDENS.glob("*.conf")) == sorted(CONFIGS)


# --- what the roles must contain ---------------------------------------------


def _protocol_block(text: str, name: str) -> str:
    start = text.index(f"protocol bgp {name} ")
    return text[start : text.index("\n}\n", start)]


def test_route_reflector_keeps_next_hop_reflects_only_bgp_and_stays_off_path() -> None:
    text = render(CONFIGS["route_reflector"])
    rack = _protocol_block(text, "range_rack1")
    assert "neighbor range 198.18.0.0/24 as 64512;" in rack
    assert 'dynamic name "dyn_rack1_";' in rack
    assert "rr client;" in rack
    assert 'password "n0des!";' in rack
    assert rack.count("next hop keep;") == 2
    assert rack.count("export where source = RTS_BGP;") == 2
    non_client = _protocol_block(text, "peer_rr2")
    assert "rr client" not in non_client
    assert "rr cluster id 198.18.0.254;" in text
    assert "export none;" in text and "export where source = RTS_BGP;\n  };\n  learn" not in text
    # An IPv6 session carries IPv6 only.
    assert "ipv4 {" not in _protocol_block(text, "peer_rr3_v6")
    on_path = render(CONFIGS["route_reflector_on_path"])
    assert "rr cluster id 198.18.0.250;" in on_path  # defaults to the router id
    assert on_path.count("export where source = RTS_BGP;\n  };\n  learn;") == 2


def test_tor_filters_nodes_merges_paths_and_sets_next_hop_self_only_for_ibgp() -> None:
    text = render(CONFIGS["tor_leaf"])
    assert "define FABRIC_IPV4 = [ 100.64.0.0/16+, 198.18.0.0/15+ ];" in text
    assert "define FABRIC_IPV6 = [ fd00:64::/48+ ];" in text
    assert text.count("merge paths on;") == 2
    rack = _protocol_block(text, "range_rack1")
    assert "import filter fabric_ipv4;" in rack and "import filter fabric_ipv6;" in rack
    assert "next hop self" not in rack
    spine = _protocol_block(text, "peer_spine1")
    assert "import all;" in spine
    ibgp = _protocol_block(text, "peer_leaf1b")
    assert ibgp.count("next hop self;") == 2
    assert "hold time 30;" in ibgp and "keepalive time 10;" in ibgp
    assert "next hop address fd00:18:1::254;" in rack


def test_tor_as_rack_reflector_keeps_rack_next_hops_and_imports_only_pools() -> None:
    text = render(CONFIGS["tor_leaf_rr"])
    assert 'interface "-eth0", "-mgmt*", "*";' in text
    assert "define POOLS_IPV4 = [ 100.64.0.0/16+ ];" in text and "POOLS_IPV6" not in text
    rack = _protocol_block(text, "range_rack")
    assert "rr client;\n  rr cluster id 198.18.1.1;" in rack
    assert rack.count("next hop self ebgp;") == 2  # the default for rr clients
    assert "import filter pools_ipv4;" in rack and "import filter pools_ipv6;" in rack
    assert rack.count("export where source = RTS_BGP;") == 2  # no connected subnets
    rack6 = _protocol_block(text, "range_rack6")
    assert "next hop self ebgp;" in rack6 and "ipv4 {" not in rack6
    node9 = _protocol_block(text, "peer_node9")
    assert node9.count("next hop self;") == 2 and "rr cluster id" in node9
    leaf1b = _protocol_block(text, "peer_leaf1b")
    assert leaf1b.count("next hop keep;") == 2 and "rr c" not in leaf1b
    assert "import filter fabric_ipv4;" in leaf1b
    spine = _protocol_block(text, "peer_spine1")
    assert "next hop" not in spine and "rr c" not in spine
    assert "import filter fabric_ipv4;" in spine and "export filter announce_ipv4;" in spine
    # A v6 pool is missing: the rack's IPv6 routes are all refused.
    assert "filter pools_ipv6 {\n  reject;\n}" in text


def test_committed_leaf_configs_reproduce_the_hand_written_ones() -> None:
    """The leaf-spine lab's leaves were hand-written until the tor role could
    express them; these are the statements that made them work."""
    lab = Path(__file__).resolve().parents[2] / "containerlab" / "leaf-spine"
    for n, spines in ((1, ("198.18.100.1", "198.18.100.3")), (2, ("198.18.100.5", "198.18.100.7"))):
        text = (lab / f"leaf{n}" / "bird.conf").read_text()
        assert 'interface "-eth0", "*";' in text
        rack = _protocol_block(text, "range_rack")
        assert f"neighbor range 198.18.{n}.0/24 as 6510{n};" in rack
        assert f"rr client;\n  rr cluster id 198.18.{n}.254;" in rack
        assert "import filter pools_ipv4;" in rack and "next hop self ebgp;" in rack
        assert "define POOLS_IPV4 = [ 100.64.0.0/16+ ];" in text
        assert "define FABRIC_IPV6 = [ fd00:64::/48+, fd00:198:18::/48+ ];" in text
        for spine in spines:
            assert f"neighbor {spine} as 65000;" in text
        assert text.count("merge paths on;") == 2


def test_node_announces_only_its_kernel_protocol_routes() -> None:
    text = render(CONFIGS["node_baseline"])
    assert text.count("krt_source != 76") == 2
    assert text.count("learn;") == 2
    assert 'interface -"l3f*", "*";' in text
    assert _protocol_block(text, "peer_node2").count("next hop self;") == 2
    plain = render(CONFIGS["node_plain"])
    assert plain.count("krt_source != 80") == 2
    assert "merge paths" not in plain and "graceful restart off;" in plain
    assert "passive on;" in plain


# --- validation ----------------------------------------------------------------


def _cfg(**changes: Any) -> BirdConfig:
    base = dict(
        role=BirdRole.TOR,
        router_id=v4("198.18.1.254"),
        asn=65001,
        accept_prefixes=POOLS,
    )
    base.update(changes)
    return BirdConfig(**base)  # type: ignore[arg-type]


def _peer(**changes: Any) -> BirdPeer:
    base: dict[str, Any] = dict(name="spine1", address=ip("198.18.2.1"), asn=65000)
    base.update(changes)
    return BirdPeer(**base)


BAD: list[tuple[str, Callable[[], object], str]] = [
    ("name with dash", lambda: _peer(name="spine-1"), "peer name: 'spine-1' must start with"),
    ("name with quote", lambda: _peer(name='a"b'), "peer name"),
    ("name starting digit", lambda: _peer(name="1spine"), "peer name"),
    ("name too long", lambda: _peer(name="a" * 33), "at most 32"),
    ("name trailing newline", lambda: _peer(name="spine\n"), "peer name"),
    ("address string", lambda: _peer(address="198.18.2.1"), "address: '198.18.2.1' is not an IP"),
    ("address unspecified", lambda: _peer(address=ip("0.0.0.0")), "cannot be a BGP neighbour"),
    ("asn zero", lambda: _peer(asn=0), "peer 'spine1': asn: 0 is not allowed: AS 0 is reserved"),
    ("asn too big", lambda: _peer(asn=2**32), "4294967296 is out of range 1..4294967294"),
    ("asn bool", lambda: _peer(asn=True), "asn: expected an AS number (integer), got boolean"),
    ("asn AS_TRANS", lambda: _peer(asn=23456), "23456 is not allowed: it is AS_TRANS"),
    ("password quote", lambda: _peer(password='a"b'), "password: must not contain a double quote"),
    ("password single quote", lambda: _peer(password="a'b"), "password: must not contain"),
    ("password backslash", lambda: _peer(password="a\\b"), "password"),
    ("password newline", lambda: _peer(password="ab\n"), "password"),
    ("password empty", lambda: _peer(password=""), "password"),
    ("password too long", lambda: _peer(password="x" * 81), "password"),
    ("multihop zero", lambda: _peer(multihop=0), "multihop: 0 is out of range 1..255"),
    ("peer hold 2", lambda: _peer(hold_time=2), "hold_time: 2 is out of range 3..65535"),
    ("peer keepalive", lambda: _peer(hold_time=9, keepalive=4), "at most a third of hold_time"),
    ("flag not bool", lambda: _peer(passive="yes"), "passive: 'yes' must be true or false"),
    ("range not net", lambda: BirdRange("10.0.0.0/8", 1), "cidr: '10.0.0.0/8' is not a network"),  # type: ignore[arg-type]
    ("range name", lambda: BirdRange(net("10.0.0.0/8"), 1, name="a b"), "range name"),
    ("role string", lambda: _cfg(role="tor"), "role: 'tor' is not a BirdRole"),
    ("router id v6", lambda: _cfg(router_id=ip("fd00::1")), "router_id: IPv6Address"),
    ("router id zero", lambda: _cfg(router_id=v4("0.0.0.0")), "router_id: 0.0.0.0"),
    (
        "cluster on tor",
        lambda: _cfg(cluster_id=v4("1.1.1.1")),
        "cluster_id: only a route-reflector or a tor with rr clients has a cluster id, "
        "not a tor without rr clients",
    ),
    (
        "cluster on node",
        lambda: _cfg(role=BirdRole.NODE, accept_prefixes=(), cluster_id=v4("1.1.1.1")),
        "not a node",
    ),
    (
        "rr filters",
        lambda: _cfg(role=BirdRole.ROUTE_REFLECTOR),
        "accept_prefixes: a route-reflector reflects everything",
    ),
    ("tor without prefixes", lambda: _cfg(accept_prefixes=()), "accept_prefixes: a tor accepts"),
    (
        "node ranges",
        lambda: _cfg(role=BirdRole.NODE, ranges=(BirdRange(net("198.18.0.0/24"), 65001),)),
        "ranges: a node dials its peers",
    ),
    (
        "learn protocol on tor",
        lambda: _cfg(kernel_learn_protocol=76),
        "kernel_learn_protocol: only a node",
    ),
    (
        "learn bird's own",
        lambda: _cfg(role=BirdRole.NODE, kernel_learn_protocol=12),
        "kernel_learn_protocol: 12 (bird)",
    ),
    (
        "learn out of range",
        lambda: _cfg(role=BirdRole.NODE, kernel_learn_protocol=256),
        "kernel_learn_protocol: 256 is out of range 1..255",
    ),
    (
        "duplicate peer name",
        lambda: _cfg(peers=(_peer(), _peer(address=ip("198.18.2.3")))),
        "duplicate peer name 'spine1'",
    ),
    (
        "duplicate peer address",
        lambda: _cfg(peers=(_peer(), _peer(name="spine2"))),
        "duplicate peer address 198.18.2.1",
    ),
    ("peers as list", lambda: _cfg(peers=[_peer()]), "peers: must be a tuple"),
    (
        "overlapping ranges",
        lambda: _cfg(
            ranges=(BirdRange(net("198.18.0.0/16"), 1), BirdRange(net("198.18.1.0/24"), 2))
        ),
        "ranges[1]: 198.18.1.0/24 overlaps range range1",
    ),
    (
        "duplicate range name",
        lambda: _cfg(
            ranges=(
                BirdRange(net("198.18.0.0/24"), 1, name="r"),
                BirdRange(net("198.18.1.0/24"), 2, name="r"),
            )
        ),
        "duplicate range name 'r'",
    ),
    (
        "rr client on node",
        lambda: _cfg(role=BirdRole.NODE, peers=(_peer(rr_client=True),)),
        "peer 'spine1': rr_client: only a route-reflector or a tor has clients, not a node",
    ),
    (
        "ebgp rr client on tor",
        lambda: _cfg(peers=(_peer(rr_client=True),)),
        "peer 'spine1': rr_client: route reflection is iBGP: the client's asn 65000",
    ),
    (
        "tor rr clients without pools",
        lambda: _cfg(ranges=(BirdRange(net("198.18.1.0/24"), 65001, rr_client=True),)),
        "pool_prefixes: a tor accepts only workload routes from its rr clients",
    ),
    (
        "tor rr client accept all",
        lambda: _cfg(
            pool_prefixes=POOLS[:1],
            peers=(_peer(asn=65001, rr_client=True, accept_all=True),),
        ),
        "peer 'spine1': accept_all: a tor accepts only pool_prefixes from its rr clients",
    ),
    (
        "pool outside fabric",
        lambda: _cfg(pool_prefixes=(net("10.0.0.0/8"),)),
        "pool_prefixes[0]: 10.0.0.0/8 is not inside accept_prefixes",
    ),
    (
        "pool v4 inside v6 fabric",
        lambda: _cfg(accept_prefixes=POOLS[1:], pool_prefixes=POOLS[:1]),
        "pool_prefixes[0]: 100.64.0.0/16 is not inside",
    ),
    (
        "pools on reflector",
        lambda: _cfg(role=BirdRole.ROUTE_REFLECTOR, accept_prefixes=(), pool_prefixes=POOLS),
        "pool_prefixes: only a tor filters its rr clients by pool, not a route-reflector",
    ),
    ("pools not net", lambda: _cfg(pool_prefixes=("100.64.0.0/16",)), "pool_prefixes[0]"),
    (
        "next hop string",
        lambda: _peer(next_hop="self"),
        "peer 'spine1': next_hop: 'self' is not one of self, keep, self ebgp",
    ),
    (
        "next hop on reflector",
        lambda: _cfg(
            role=BirdRole.ROUTE_REFLECTOR,
            accept_prefixes=(),
            ranges=(BirdRange(net("198.18.0.0/24"), 65001, next_hop=BirdNextHop.SELF),),
        ),
        "range range1: next_hop: only a tor chooses the next hop per session; "
        "a route-reflector always keeps it",
    ),
    (
        "next hop on node",
        lambda: _cfg(role=BirdRole.NODE, peers=(_peer(next_hop=BirdNextHop.KEEP),)),
        "a node always sets itself",
    ),
    ("exclude quote", lambda: _cfg(direct_exclude=('eth0"',)), "direct_exclude[0]: 'eth0\"'"),
    ("exclude too long", lambda: _cfg(direct_exclude=("e" * 16,)), "direct_exclude[0]"),
    ("exclude empty", lambda: _cfg(direct_exclude=("",)), "direct_exclude[0]"),
    ("exclude list", lambda: _cfg(direct_exclude=["eth0"]), "direct_exclude: must be a tuple"),
    (
        "ebgp rr client",
        lambda: _cfg(
            role=BirdRole.ROUTE_REFLECTOR,
            accept_prefixes=(),
            ranges=(BirdRange(net("198.18.0.0/24"), 65002, rr_client=True),),
        ),
        "range range1: rr_client: route reflection is iBGP",
    ),
    ("keepalive vs hold", lambda: _cfg(hold_time=9, keepalive=5), "keepalive: 5 must be at most"),
    ("restart time", lambda: _cfg(restart_time=4096), "restart_time: 4096"),
    ("scan time", lambda: _cfg(scan_time=0), "scan_time: 0"),
    ("metric", lambda: _cfg(kernel_metric=-1), "kernel_metric: -1"),
    (
        "v6 next hop link local",
        lambda: _peer(ipv6_next_hop=ip("fe80::1")),
        "peer 'spine1': ipv6_next_hop: IPv6Address('fe80::1') must be a global",
    ),
    (
        "v6 next hop on v6 session",
        lambda: _peer(address=ip("fd00::2"), ipv6_next_hop=ip("fd00::1")),
        "ipv6_next_hop: only IPv4 sessions need",
    ),
    ("log relative", lambda: _cfg(log_file=PurePosixPath("bird.log")), "log_file: 'bird.log'"),
    ("log quote", lambda: _cfg(log_file=PurePosixPath('/tmp/a"b')), "log_file"),
    ("accept not net", lambda: _cfg(accept_prefixes=("100.64.0.0/16",)), "accept_prefixes[0]"),
]


@pytest.mark.parametrize(("build", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_the_field_named(
    build: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


# Whatever a name or password is, either it is refused or BIRD accepts the
# rendered file: nothing smuggles syntax into the configuration.
@needs_bird
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.text(alphabet=string.ascii_letters + string.digits + "_-;{}\"' ", max_size=12),
    password=st.text(alphabet=string.printable + "\x00\x7f\u00e9", max_size=12),
)
def test_any_accepted_name_and_password_render_valid_bird(
    name: str, password: str, tmp_path: Path
) -> None:
    try:
        cfg = _cfg(peers=(_peer(name=name, password=password),))
    except ValueError:
        event("refused")
        return
    event("rendered")
    text = render(cfg)
    bird_parse(text, tmp_path)
    assert f'password "{password}";' in text


# --- plain data (YAML) -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_from_data_round_trips_every_golden_config(name: str) -> None:
    assert config_from_data(plain_config(CONFIGS[name])) == CONFIGS[name]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"role": "tor", "router_id": "1.1.1.1"}, "asn: is required"),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "colour": "red"},
            "unknown key 'colour'",
        ),
        ({"role": "spine", "router_id": "1.1.1.1", "asn": 1}, "role: 'spine' is not one of"),
        ({"role": "tor", "router_id": "fd00::1", "asn": 1}, "router_id: 'fd00::1' is not an IPv4"),
        ({"role": "tor", "router_id": "1.1.1.1", "asn": "1"}, "asn: expected an AS number"),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "accept_prefixes": ["10.0.0.1/8"]},
            "accept_prefixes[0]: 10.0.0.1/8 has host bits set",
        ),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "peers": [{"name": "a", "asn": 2}]},
            "peers[0].address: is required",
        ),
        (
            {
                "role": "tor",
                "router_id": "1.1.1.1",
                "asn": 1,
                "peers": [{"name": "a", "address": "1.2.3.4", "asn": 2, "md5": "x"}],
            },
            "peers[0]: unknown key 'md5'",
        ),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "peers": {"a": 1}},
            "peers: must be a list",
        ),
        (["role", "tor"], "config: must be a mapping"),
        (
            {
                "role": "tor",
                "router_id": "1.1.1.1",
                "asn": 1,
                "ranges": [{"cidr": "10.0.0.0/8", "asn": 1, "next_hop": "self-ebgp"}],
            },
            "ranges[0].next_hop: 'self-ebgp' is not one of 'self', 'keep', 'self ebgp'",
        ),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "direct_exclude": "eth0"},
            "direct_exclude: must be a list",
        ),
        (
            {"role": "tor", "router_id": "1.1.1.1", "asn": 1, "direct_exclude": [0]},
            "direct_exclude[0]: 0 must be a string",
        ),
    ],
)
def test_config_from_data_rejects(data: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        config_from_data(data)
    assert message in str(info.value)


# --- the command ------------------------------------------------------------------

LEAF_FLAGS = [
    "bird",
    "render",
    "--role",
    "tor",
    "--router-id",
    "198.18.1.254",
    "--asn",
    "65001",
    "--peer",
    "spine1=198.18.2.1:65000,accept-all,password=leaf-spine",
    "--peer",
    "spine2=198.18.2.3:65000,password=leaf-spine,accept-all",
    "--peer",
    "leaf1b=198.18.1.253:65001,hold-time=30,keepalive=10",
    "--range",
    "rack1=198.18.1.0/24:65101,ipv6-next-hop=fd00:18:1::254",
    "--accept",
    "100.64.0.0/16",
    "--accept",
    "fd00:64::/48",
    "--accept",
    "198.18.0.0/15",
]


def test_cli_flags_render_the_same_as_the_dataclasses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(LEAF_FLAGS) == 0
    assert capsys.readouterr().out == render(CONFIGS["tor_leaf"])


LEAF_RR_FLAGS = [
    "bird",
    "render",
    "--role",
    "tor",
    "--router-id",
    "198.18.1.254",
    "--asn",
    "65101",
    "--cluster-id",
    "198.18.1.1",
    "--peer",
    "spine1=198.18.100.1:65000",
    "--peer",
    "spine1v6=[fd00:198:18:f001::2]:65000",
    "--peer",
    "node9=198.18.9.9:65101,rr-client,next-hop=self",
    "--peer",
    "leaf1b=198.18.1.253:65101,next-hop=keep",
    "--range",
    "rack=198.18.1.0/25:65101,rr-client",
    "--range",
    "rack6=fd00:198:18:1::/64:65101,rr-client,next-hop=self ebgp",
    "--accept",
    "100.64.0.0/16",
    "--accept",
    "fd00:64::/48",
    "--accept",
    "198.18.0.0/15",
    "--accept",
    "fd00:198:18::/48",
    "--pool",
    "100.64.0.0/16",
    "--direct-exclude",
    "eth0",
    "--direct-exclude",
    "mgmt*",
]


def test_cli_flags_render_a_rack_reflecting_leaf(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(LEAF_RR_FLAGS) == 0
    assert capsys.readouterr().out == render(CONFIGS["tor_leaf_rr"])


def test_cli_yaml_and_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "rr.yaml"
    source.write_text(yaml.safe_dump(plain_config(CONFIGS["route_reflector"])))
    out = tmp_path / "bird.conf"
    out.write_text("old contents")
    assert main(["bird", "render", "--from-yaml", str(source), "-o", str(out)]) == 0
    assert out.read_text() == render(CONFIGS["route_reflector"])
    assert out.stat().st_mode & 0o077 == 0  # it may hold MD5 passwords
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.conf", "rr.yaml"]
    assert capsys.readouterr() == ("", "")


def test_cli_output_format_is_o_and_the_file_is_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = render(CONFIGS["tor_leaf_rr"])
    assert main([*LEAF_RR_FLAGS, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["config"] == expected
    assert config_from_data(document["inputs"]) == CONFIGS["tor_leaf_rr"]
    assert list(tmp_path.iterdir()) == []  # no file named json
    assert main([*LEAF_RR_FLAGS, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["config"] == expected
    assert main([*LEAF_RR_FLAGS, "-o", "table"]) == 0
    assert capsys.readouterr().out == expected
    assert main([*LEAF_RR_FLAGS, "--out", "json"]) == 0  # a file called json
    assert (tmp_path / "json").read_text() == expected
    assert main([*LEAF_RR_FLAGS, "-o", "json", "--out", "leaf.json"]) == 0
    assert json.loads((tmp_path / "leaf.json").read_text())["config"] == expected
    assert main([*LEAF_RR_FLAGS, "-o", "old.conf"]) == 0  # -o FILE is still a file
    assert (tmp_path / "old.conf").read_text() == expected
    assert capsys.readouterr() == ("", "")
    assert main([*LEAF_RR_FLAGS, "-o", "a.conf", "--out", "b.conf"]) == 2
    assert "give --out FILE once" in capsys.readouterr().err


TOR_ARGS = ["--role", "tor", "--router-id", "1.1.1.1", "--asn", "1", "--accept", "1.0.0.0/8"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role", "tor"], "--router-id is required"),
        (["--role", "tor", "--router-id", "x", "--asn", "1"], "--router-id: 'x' is not an IPv4"),
        (
            ["--role", "tor", "--router-id", "1.1.1.1", "--asn", "six"],
            "--asn: 'six' is not an integer",
        ),
        (
            [*TOR_ARGS, "--peer", "a=1.2.3.4"],
            "--peer 'a=1.2.3.4': expected ADDRESS:ASN",
        ),
        (
            [*TOR_ARGS, "--peer", "a=1.2.3.4:2,colour=red"],
            "unknown option 'colour=red'",
        ),
        (
            [*TOR_ARGS, "--range", "10.0.0.0/8:1,next-hop=selfish"],
            "--range '10.0.0.0/8:1,next-hop=selfish': next-hop: 'selfish' is not one of",
        ),
        (
            [*TOR_ARGS, "--pool", "10.0.0.0/8"],
            "pool_prefixes[0]: 10.0.0.0/8 is not inside accept_prefixes",
        ),
        (
            [*TOR_ARGS, "--peer", "a=1.2.3.4:2,multihop=2,multihop=3"],
            "option 'multihop' given twice",
        ),
        (
            [*TOR_ARGS, "--peer", 'a=1.2.3.4:2,password=a"b'],
            "--peer 'a=1.2.3.4:2,password=a\"b': peer 'a': password",
        ),
        (
            ["--from-yaml", "/nonexistent/x.yaml"],
            "--from-yaml /nonexistent/x.yaml: cannot read: No such file",
        ),
        (["--from-yaml", "x.yaml", "--asn", "1"], "--from-yaml cannot be combined with --asn"),
        (
            ["--role", "node", "--router-id", "1.1.1.1", "--asn", "1", "-o", "/nonexistent/d/f"],
            "-o /nonexistent/d/f: No such file",
        ),
        (
            ["--role", "node", "--router-id", "1.1.1.1", "--asn", "1", "--out", "/nonexistent/f"],
            "--out /nonexistent/f: No such file",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bird", "render", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("l3fabric bird render: error: "), err
    assert message in err


def test_cli_invalid_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text("role: [tor\nasn: 1\n")
    assert main(["bird", "render", "--from-yaml", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid YAML" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("role: tor\nasn: 1\nasn: 2\n", "bad.yaml:3:1: invalid YAML: found duplicate key 'asn'"),
        (
            "peers: " + "[" * 100 + "]" * 100 + "\n",
            "bad.yaml:1:71: invalid YAML: nested deeper than 64 levels",
        ),
        ("role: tor\x00\n", "bad.yaml: not a text file"),
    ],
)
def test_cli_yaml_is_read_strictly(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(text)
    assert main(["bird", "render", "--from-yaml", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--from-yaml {tmp_path}/{message}" in err, err


def test_spec_grammar() -> None:
    peer = parse_peer("up6=[fd00::1]:64999,multihop=2,passive,password=a=b c")
    assert peer == BirdPeer("up6", ip("fd00::1"), 64999, password="a=b c", multihop=2, passive=True)
    assert parse_peer("up6=fd00::1:64999").address == ip("fd00::1")
    rng = parse_range("fd00:18::/64:64512,rr-client")
    assert rng == BirdRange(net("fd00:18::/64"), 64512, rr_client=True)


def test_templates_are_found_from_the_checkout() -> None:
    assert templates_dir() == Path(__file__).resolve().parents[2] / "bird-templates"
