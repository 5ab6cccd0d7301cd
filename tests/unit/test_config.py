from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from l3fabric.config import (
    Config,
    ConfigError,
    PeerConfig,
    load_config,
    parse_config,
    restart_required,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "node.yaml"
DOCS = ROOT / "docs" / "configuration.md"
SOURCE = "node.yaml"

BASE: dict[str, object] = {
    "node": {
        "name": "node1",
        "asn": 64512,
        "addresses": {"ipv4": "198.18.0.1", "ipv6": "fd00:198:18::1"},
    },
    "pools": [{"cidr": "100.64.0.0/16"}, {"cidr": "fd00:64::/48"}],
}

DELETE = object()


def config_with(**changes: object) -> dict[str, object]:
    """BASE with dotted keys replaced (or removed with DELETE); `__` stands
    for `.` because keyword names cannot hold dots."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target: dict[str, object] = data
        for key in parents:
            target = target.setdefault(key, {})  # type: ignore[assignment]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return data


def errors_of(data: object) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, SOURCE)
    return info.value.errors


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def peer(**fields: object) -> dict[str, object]:
    merged = {"address": "198.18.0.9", "asn": 65001, "role": "external", **fields}
    return {key: value for key, value in merged.items() if value is not DELETE}


RR = {"address": "198.18.0.8", "asn": 64512, "role": "route-reflector"}

Row = tuple[str, str, dict[str, object]]


def bad(path: str, message: str, **changes: object) -> Row:
    return path, message, config_with(**changes)


def bad_peers(path: str, message: str, *peers: dict[str, object], **changes: object) -> Row:
    return bad(path, message, bgp__peers=list(peers), **changes)


ETCD = {"type": "etcd"}
# (key path, expected part of the message, config); each error reads "FILE: PATH: MESSAGE".
BAD_CONFIGS = [
    bad("node.name", "is required", node__name=DELETE),
    bad("node.name", "'bad name!' is not a valid name", node__name="bad name!"),
    bad("node.name", "'nnnnnnnn", node__name="n" * 64),
    bad("node.name", "expected a string, got integer 12", node__name=12),
    bad("node.asn", "0 is not allowed: AS 0 is reserved (RFC 7607)", node__asn=0),
    bad("node.asn", "23456 is not allowed: it is AS_TRANS", node__asn=23456),
    bad("node.asn", "4294967295 is not allowed: it is reserved (RFC 7300)", node__asn=4294967295),
    bad("node.asn", "4294967296 is out of range 1..4294967294", node__asn=4294967296),
    bad("node.asn", "65535 is not allowed: it is reserved (RFC 7300)", node__asn=65535),
    bad("node.asn", "expected an integer, got boolean true", node__asn=True),
    bad("node.asn", "expected an integer, got string '64512'", node__asn="64512"),
    bad("node", "expected a mapping, got string 'node1'", node="node1"),
    bad("node", "is required", node=DELETE),
    bad("node.addresses", "at least one of ipv4 and ipv6 is required", node__addresses={}),
    bad("node.addresses.ipv4", "224.0.0.5 is not a unicast address (multicast)",
        node__addresses__ipv4="224.0.0.5"),
    bad("node.addresses.ipv4", "127.0.0.1 is not a unicast address (loopback)",
        node__addresses__ipv4="127.0.0.1"),
    bad("node.addresses.ipv4", "0.0.0.0 is not a unicast address (unspecified)",
        node__addresses__ipv4="0.0.0.0"),
    bad("node.addresses.ipv6", "fe80::1 is not a unicast address (link-local)",
        node__addresses__ipv6="fe80::1"),
    bad("node.addresses.ipv4", "fd00::1 is not an IPv4 address", node__addresses__ipv4="fd00::1"),
    bad("node.addresses.ipv4", "198.18.0.300 is not a valid IP address",
        node__addresses__ipv4="198.18.0.300"),
    bad("node.router_id", "is required when node.addresses.ipv4 is not set",
        node__addresses={"ipv6": "fd00:198:18::1"}),
    bad("node.addresses.ipv4", "100.64.3.1 is inside pools[0] (100.64.0.0/16)",
        node__addresses__ipv4="100.64.3.1"),
    bad("pools", "at least one pool is required", pools=[]),
    bad("pools", "at least one pool is required", pools=DELETE),
    bad("pools[1].cidr", "100.64.0.0/33 is not a valid network",
        pools=[{"cidr": "10.0.0.0/8"}, {"cidr": "100.64.0.0/33"}]),
    bad("pools[0].cidr", "100.64.0.1/16 has host bits set", pools=[{"cidr": "100.64.0.1/16"}]),
    bad("pools[1].cidr", "100.64.1.0/24 overlaps pools[0] (100.64.0.0/16)",
        pools=[{"cidr": "100.64.0.0/16"}, {"cidr": "100.64.1.0/24"}]),
    bad("pools[0].cidr", "169.254.0.0/16 overlaps 169.254.0.0/16 (link-local",
        pools=[{"cidr": "169.254.0.0/16"}]),
    bad("pools[0].block_size", "33 must be between 16 and 32 for 100.64.0.0/16",
        pools=[{"cidr": "100.64.0.0/16", "block_size": 33}]),
    bad("pools[0].block_size", "40 must be between 48 and 128 for fd00:64::/48",
        pools=[{"cidr": "fd00:64::/48", "block_size": 40}]),
    bad("pools[0].cidr", "is required", pools=[{"block_size": 26}]),
    bad("state_dir", "'var/lib' is not an absolute path", state_dir="var/lib"),
    bad("datastore.type", "'consul' is not one of file, etcd", datastore__type="consul"),
    bad("datastore.endpoints", "at least one http://HOST:PORT is required", datastore=ETCD),
    bad("datastore.path", "not used by datastore.type etcd",
        datastore={**ETCD, "path": "/x", "endpoints": ["http://h:2379"]}),
    bad("datastore.endpoints", "not used by datastore.type file",
        datastore__endpoints=["http://h:2379"]),
    bad("datastore.endpoints[0]", "198.18.0.100:2379 is not of the form http://HOST:PORT",
        datastore={**ETCD, "endpoints": ["198.18.0.100:2379"]}),
    bad("datastore.endpoints[0]", "http://h:99999 has an invalid port",
        datastore={**ETCD, "endpoints": ["http://h:99999"]}),
    bad("datastore.endpoints[1]", "http://h:2379 is also datastore.endpoints[0]",
        datastore={**ETCD, "endpoints": ["http://h:2379", "http://h:2379"]}),
    bad("datastore.prefix", "'l3fabric' must start with '/'", datastore__prefix="l3fabric"),
    bad("metrics.listen", "::1:9641: IPv6 hosts go in brackets", metrics__listen="::1:9641"),
    bad("metrics.listen", "127.0.0.1:0: port 0 is out of range 1..65535",
        metrics__listen="127.0.0.1:0"),
    bad("metrics.listen", "localhost is not of the form HOST:PORT", metrics__listen="localhost"),
    bad("metrics.listen", "expected a string, got integer 9641", metrics__listen=9641),
    bad("metrics.listen", "[fd00::x]:1 is not of the form", metrics__listen="[fd00::x]:1"),
    bad("metrics.listen", "999.0.0.1:80 is not of the form", metrics__listen="999.0.0.1:80"),
    bad("metrics.enabled", "expected true or false, got string 'yes'", metrics__enabled="yes"),
    bad("reconcile.interval", "0 must be more than 0", reconcile__interval=0),
    bad("reconcile.interval", "86401 must be more than 0 and at most", reconcile__interval=86401),
    bad("reconcile.interval", "expected a number of seconds", reconcile__interval="30s"),
    bad("bgp.hold_time", "2 is out of range 3..65535 (RFC 4271)", bgp__hold_time=2),
    bad("bgp.hold_time", "0 is not allowed: it turns the hold timer off", bgp__hold_time=0),
    bad("bgp.hold_time", "65536 is out of range 3..65535", bgp__hold_time=65536),
    bad("bgp.keepalive", "not supported: ExaBGP sends keepalives every hold_time/3",
        bgp__keepalive=30),
    bad("bgp.connect_retry", "not supported: ExaBGP retries connections on its own back-off",
        bgp__connect_retry=5),
    bad("bgp.advertise", "'all' is not one of workloads, blocks", bgp__advertise="all"),
    bad("bgp.mesh", "expected true or false, got string 'yes'", bgp__mesh="yes"),
    bad("bgp.port", "0 is out of range 1..65535", bgp__port=0),
    bad("bgp.graceful_restart.restart_time", "5000 is out of range 1..4095",
        bgp__graceful_restart__restart_time=5000),
    bad("bgp.peers", "expected a list, got a mapping", bgp__peers={"a": 1}),
    bad("bgp.peers[0]", "expected a mapping, got string", bgp__peers=["198.18.0.9"]),
    bad_peers("bgp.peers[0].asn", "is required", peer(asn=DELETE)),
    bad_peers("bgp.peers[0].address", "198.18.0.300 is not a valid IP address",
              peer(address="198.18.0.300")),
    bad_peers("bgp.peers[2].address", "198.18.0.9 is also bgp.peers[0]",
              peer(), peer(address="198.18.0.10"), peer(name="again")),
    bad_peers("bgp.peers[1].address", "fd00::9 is also bgp.peers[0]",
              peer(address="fd00::9"), peer(address="fd00:0::0009", name="b")),
    bad_peers("bgp.peers[1].name", "up is also the name of bgp.peers[0]",
              peer(name="up"), peer(address="198.18.0.10", name="up")),
    bad_peers("bgp.peers[0].role", "'client' is not one of", peer(role="client")),
    bad_peers("bgp.peers[0].asn",
              "64512 equals node.asn; use role route-reflector or mesh for iBGP",
              peer(asn=64512)),
    bad_peers("bgp.peers[0].asn", "65001 differs from node.asn 64512",
              {**RR, "asn": 65001}, bgp__mesh=False),
    bad_peers("bgp.mesh", "must be false when route reflectors are configured (bgp.peers[1])",
              peer(), RR),
    bad_peers("bgp.peers[0].address", "198.18.0.1 is this node's own address",
              peer(address="198.18.0.1")),
    bad_peers("bgp.peers[0].address", "an IPv6 peer needs node.addresses.ipv6 or a local_address",
              peer(address="fd00::9"), node__addresses={"ipv4": "198.18.0.1"}),
    bad_peers("bgp.peers[0].local_address",
              "fd00:198:18::1 is not the same IP version as 198.18.0.9",
              peer(local_address="fd00:198:18::1")),
    bad_peers("bgp.peers[0].password", "must not contain a double quote", peer(password='a"b')),
    bad_peers("bgp.peers[0].password", "must not contain a double quote", peer(password="a'b")),
    bad_peers("bgp.peers[0].password", "must not contain a double quote", peer(password="a\\b")),
    bad_peers("bgp.peers[0].password", "must be printable ASCII", peer(password="a\nb")),
    bad_peers("bgp.peers[0].password", "expected a string (quote it)", peer(password=1234)),
    bad_peers("bgp.peers[0].password", "is 81 characters", peer(password="x" * 81)),
    bad_peers("bgp.peers[0].password", "must not start or end with", peer(password=" x")),
    bad_peers("bgp.peers[0].password", "must not be empty", peer(password="")),
    bad_peers("bgp.peers[0].password", "must be printable ASCII", peer(password="pässword")),
    bad_peers("bgp.peers[0].multihop", "0 is out of range 1..255", peer(multihop=0)),
    bad_peers("bgp.peers[0].multihop", "256 is out of range 1..255", peer(multihop=256)),
    bad_peers("bgp.peers[0].keepalive",
              "not supported: ExaBGP sends keepalives every hold_time/3", peer(keepalive=10)),
    bad_peers("bgp.peers[0].hold_time", "1 is out of range 3..65535", peer(hold_time=1)),
    bad_peers("bgp.peers[0].pasword", "unknown key (did you mean 'password'?)",
              peer(pasword="x")),
    bad("bogus", "unknown key (known keys: bgp, control, datastore, discovery, host_protection,",
        bogus=1),
    bad("node.nmae", "unknown key (did you mean 'name'?)", node__nmae="x"),
    bad("log", "key True is not a string", log={True: 1}),
    bad("bgp.import_policy.max_prefixes", "0 is out of range 1..10000000",
        bgp__import_policy__max_prefixes=0),
    bad("bgp.import_policy.allowed_prefixes[0]", "10.0.0.1/8 has host bits set",
        bgp__import_policy__allowed_prefixes=["10.0.0.1/8"]),
    bad("bgp.import_policy.allowed_prefixes[1]", "10.0.0.0/8 is also",
        bgp__import_policy__allowed_prefixes=["10.0.0.0/8", "10.0.0.0/8"]),
    bad("bgp.exabgp.command", "'bin/exabgp' is neither a command name nor an absolute path",
        bgp__exabgp__command="bin/exabgp"),
    bad("log.level", "'verbose' is not one of debug, info, warning, error", log__level="verbose"),
    bad("log.format", "'xml' is not one of json, text", log__format="xml"),
    bad("ipam.strict_affinity", "expected true or false, got integer 1", ipam__strict_affinity=1),
]  # fmt: skip


@pytest.mark.parametrize(("path", "message", "data"), BAD_CONFIGS, ids=[r[0] for r in BAD_CONFIGS])
def test_bad_config_is_rejected_with_key_path(path: str, message: str, data: object) -> None:
    errors = errors_of(data)
    expected = f"{SOURCE}: {path}: "
    assert any(e.startswith(expected) and message in e for e in errors), (expected, message, errors)
    assert all(error.startswith(SOURCE + ": ") for error in errors), errors


def test_table_is_large_and_base_is_valid() -> None:
    assert len(BAD_CONFIGS) >= 25
    parse_config(BASE, SOURCE)


def test_example_file_parses(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert config.node.name == "node1"
    assert config.node.asn == 64512
    assert config.node.ipv4 == ipaddress.IPv4Address("198.18.0.1")
    assert config.node.ipv6 == ipaddress.IPv6Address("fd00:198:18::1")
    assert [str(pool.cidr) for pool in config.pools] == ["100.64.0.0/16", "fd00:64::/48"]
    assert config.bgp.mesh is True
    assert all(isinstance(p, PeerConfig) and p.role == "external" for p in config.bgp.peers)


def test_yaml_examples_in_docs_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    full, reflectors = (yaml.safe_load(block) for block in blocks)
    config = parse_config(full, str(DOCS))
    # The agent starts only with the file datastore, so the example uses it.
    assert config.datastore.type == "file"
    assert config.metrics.listen_host == "::1"
    config = parse_config({**BASE, **reflectors}, str(DOCS))
    assert [peer.role for peer in config.bgp.peers] == ["route-reflector"] * 2


def test_defaults() -> None:
    config = parse_config(BASE, SOURCE)
    assert config.source == SOURCE
    assert config.node.router_id == ipaddress.IPv4Address("198.18.0.1")
    assert [pool.block_size for pool in config.pools] == [26, 122]
    assert config.pools_for(4) == config.pools[:1]
    assert config.pools_for(6) == config.pools[1:]
    assert config.ipam.strict_affinity is False
    assert config.state_dir == Path("/var/lib/l3fabric")
    assert config.socket_path == Path("/var/lib/l3fabric/agent.sock")
    assert config.datastore.type == "file"
    assert config.datastore.path == Path("/var/lib/l3fabric/datastore")
    assert config.datastore.endpoints == ()
    assert config.datastore.prefix == "/l3fabric"
    assert (config.metrics.listen_host, config.metrics.listen_port) == ("127.0.0.1", 9641)
    assert config.metrics.enabled is True
    assert config.reconcile.interval == 30.0
    bgp = config.bgp
    assert (bgp.enabled, bgp.mesh, bgp.advertise, bgp.port) == (True, True, "workloads", 179)
    assert (bgp.hold_time, bgp.keepalive) == (90, 30)
    assert (bgp.graceful_restart.enabled, bgp.graceful_restart.restart_time) == (True, 120)
    assert bgp.peers == ()
    assert bgp.import_policy.allow_default is False
    assert bgp.import_policy.allow_outside_pools is False
    assert bgp.import_policy.allowed_prefixes == ()
    assert bgp.import_policy.max_prefixes == 10000
    assert bgp.exabgp.command == "exabgp"
    assert (config.log.level, config.log.format) == ("info", "json")


def test_datastore_path_follows_state_dir_and_etcd_keeps_endpoints() -> None:
    config = parse_config(config_with(state_dir="/run/l3f"), SOURCE)
    assert config.datastore.path == Path("/run/l3f/datastore")
    assert config.socket_path == Path("/run/l3f/agent.sock")
    etcd = {"type": "etcd", "endpoints": ["http://198.18.0.100:2379", "https://e2:2379/"]}
    config = parse_config(config_with(datastore=etcd), SOURCE)
    assert config.datastore.path is None
    assert config.datastore.endpoints == ("http://198.18.0.100:2379", "https://e2:2379")


def test_ipv6_only_node_with_router_id_and_v6_metrics() -> None:
    data = config_with(
        node__addresses={"ipv6": "fd00:198:18::1"},
        node__router_id="198.18.0.1",
        metrics__listen="[::1]:9100",
        pools=[{"cidr": "fd00:64::/48", "block_size": 120}],
    )
    config = parse_config(data, SOURCE)
    assert config.node.ipv4 is None
    assert config.node.router_id == ipaddress.IPv4Address("198.18.0.1")
    assert (config.metrics.listen_host, config.metrics.listen_port) == ("::1", 9100)
    assert config.pools[0].block_size == 120


def test_small_pool_defaults_to_one_block() -> None:
    config = parse_config(config_with(pools=[{"cidr": "100.64.0.0/28"}]), SOURCE)
    assert config.pools[0].block_size == 28


def test_peers_names_and_route_reflectors() -> None:
    peers = [
        peer(),
        peer(address="fd00::9"),
        peer(address="fd00::", asn=65002),
        {**RR, "password": "Tr0ub4dor&3", "graceful_restart": False},
    ]
    config = parse_config(config_with(bgp__mesh=False, bgp__peers=peers), SOURCE)
    names = [p.name for p in config.bgp.peers]
    assert names[:2] == ["198.18.0.9", "fd00--9"]
    # "fd00::" would make a name ending in '-', so the exploded form is used.
    assert names[2] == "fd00-0000-0000-0000-0000-0000-0000-0000"
    reflector = config.bgp.peers[3]
    assert (reflector.role, reflector.asn, reflector.password) == (
        "route-reflector",
        64512,
        "Tr0ub4dor&3",
    )
    assert reflector.graceful_restart is False
    assert config.bgp.peers[0].graceful_restart is None
    assert config.bgp.peers[0].hold_time is None


def test_keepalive_is_what_exabgp_derives_from_the_hold_time() -> None:
    config = parse_config(config_with(bgp__hold_time=10, bgp__peers=[peer(hold_time=3)]), SOURCE)
    assert (config.bgp.hold_time, config.bgp.keepalive) == (10, 3)
    assert config.bgp.peers[0].hold_time == 3


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node:\n  name: node1\n  asn: 0\n  addresses: {ipv4: 198.18.0.1}\n"
        "pools:\n  - cidr: 100.64.0.0/33\n"
        "bgp:\n  hold_time: 2\n  peers:\n    - {address: 198.18.0.9, asn: 65001, role: x}\n"
        "log:\n  levle: debug\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    errors = info.value.errors
    expected = [
        f"{path}: node.asn: 0 is not allowed",
        f"{path}: pools[0].cidr: 100.64.0.0/33 is not a valid network",
        f"{path}: bgp.hold_time: 2 is out of range",
        f"{path}: bgp.peers[0].role: 'x' is not one of route-reflector, external",
        f"{path}: log.levle: unknown key (did you mean 'level'?)",
    ]
    for fragment in expected:
        assert any(error.startswith(fragment) for error in errors), (fragment, errors)
    assert len(errors) == len(expected)
    assert str(info.value) == "\n".join(errors)


def test_broken_section_does_not_cascade() -> None:
    # A bad node.asn must not also make every peer's AS comparison fail.
    errors = errors_of(config_with(node__asn="x", bgp__peers=[peer(), RR], bgp__mesh=False))
    assert len(errors) == 1 and "node.asn" in errors[0]


def test_bad_list_items_are_not_also_reported_as_missing() -> None:
    bad_endpoint = {"type": "etcd", "endpoints": ["198.18.0.100:2379"]}
    assert len(errors_of(config_with(datastore=bad_endpoint))) == 1
    assert len(errors_of(config_with(pools=[{"cidr": "100.64.0.0/33"}]))) == 1


@pytest.mark.parametrize(
    "secret", ['Sup3r"Secret', "Sup3r Secret\n", " Sup3rSecret", "Sup3r\\Secret", "Sup3r" * 17]
)
def test_password_is_never_echoed(secret: str) -> None:
    (error,) = errors_of(config_with(bgp__peers=[peer(password=secret)]))
    assert "bgp.peers[0].password: " in error
    assert "Sup3r" not in error and "Secret" not in error


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  name: node1\n  asn: 64512\n addresses: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (error,) = info.value.errors
    assert error.startswith(f"{path}:4:"), error
    assert "invalid YAML" in error


def test_duplicate_yaml_key_is_an_error_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node:\n  name: a\n  asn: 64512\n  name: b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors[0].startswith(f"{path}:4:")
    assert "duplicate key 'name'" in info.value.errors[0]


def test_unquoted_sexagesimal_ipv6_asks_for_quotes(tmp_path: Path) -> None:
    text = yaml.safe_dump(BASE).replace("fd00:198:18::1", "1:2:3:4:5:6:7:8")
    text = text.replace("'1:2:3:4:5:6:7:8'", "1:2:3:4:5:6:7:8")
    with pytest.raises(ConfigError, match=r"node.addresses.ipv6: expected an IP address string, "):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "top level must be a mapping, got null"),
        ("- node\n", "top level must be a mapping, got a list"),
        ("just a string\n", "top level must be a mapping, got string"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_config(path)
    assert info.value.errors[0].startswith(f"{path}: ")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"node: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.yaml")


def test_config_is_immutable() -> None:
    config = parse_config(config_with(bgp__peers=[peer()]), SOURCE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.node.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bgp.peers[0].asn = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pools = ()  # type: ignore[misc]
    assert isinstance(config.bgp.peers, tuple) and isinstance(config.pools, tuple)
    assert hash(config.bgp) == hash(parse_config(config_with(bgp__peers=[peer()]), SOURCE).bgp)


def test_restart_required_lists_identity_changes() -> None:
    old = parse_config(BASE, SOURCE)
    same = parse_config(config_with(bgp__hold_time=30, log__level="debug"))
    assert restart_required(old, same) == ()
    moved = parse_config(config_with(node__asn=64513, node__addresses__ipv4="198.18.0.2"))
    assert restart_required(old, moved) == ("node.asn", "node.addresses.ipv4", "node.router_id")
    relocated = parse_config(config_with(state_dir="/srv/l3f", metrics__listen="0.0.0.0:9641"))
    assert restart_required(old, relocated) == ("state_dir", "datastore", "metrics")


@given(st.text(max_size=100))
def test_password_is_accepted_only_when_safe_to_template(password: str) -> None:
    try:
        config: Config = parse_config(config_with(bgp__peers=[peer(password=password)]), SOURCE)
    except ConfigError as exc:
        assert all("bgp.peers[0].password: " in error for error in exc.errors), exc.errors
        return
    stored = config.bgp.peers[0].password
    assert stored == password
    assert 0 < len(stored) <= 80 and stored.isascii() and stored.isprintable()
    assert stored == stored.strip()
    assert not set(stored) & set("\"'\\\n")


# ----- bgp.graceful_restart.long_lived_stale_time ----------------------------------


@pytest.mark.parametrize("seconds", [0, 1, 3600, 16_777_215])
def test_long_lived_stale_time_takes_zero_to_the_24_bit_limit(seconds: int) -> None:
    config = parse_config(config_with(bgp__graceful_restart__long_lived_stale_time=seconds), SOURCE)
    assert config.bgp.graceful_restart.long_lived_stale_time == seconds


def test_long_lived_stale_time_is_off_by_default() -> None:
    assert parse_config(BASE, SOURCE).bgp.graceful_restart.long_lived_stale_time == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "-1 is out of range 0..16777215"),
        (16_777_216, "16777216 is out of range 0..16777215"),
        ("60s", "expected an integer, got string '60s'"),
        (True, "expected an integer, got boolean true"),
        (1.5, "expected an integer, got number 1.5"),
    ],
)
def test_bad_long_lived_stale_time_names_key_and_file(
    tmp_path: Path, value: object, message: str
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config_with(bgp__graceful_restart__long_lived_stale_time=value)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = f"{path}: bgp.graceful_restart.long_lived_stale_time: {message}"
    assert expected in info.value.errors, info.value.errors


def test_long_lived_stale_time_can_change_on_reload() -> None:
    old = parse_config(BASE, SOURCE)
    new = parse_config(config_with(bgp__graceful_restart__long_lived_stale_time=600), SOURCE)
    assert restart_required(old, new) == ()
