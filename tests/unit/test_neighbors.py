"""Desired BGP neighbours from config and node records: pure."""

from __future__ import annotations

import ipaddress
from typing import Any

from l3fabric.agent.neighbors import decode_node_records, desired_neighbors
from l3fabric.config import Config, parse_config
from l3fabric.datastore.base import KeyValue
from l3fabric.model import NodeRecord

ip = ipaddress.ip_address


def config(**bgp: Any) -> Config:
    return parse_config(
        {
            "node": {
                "name": "node1",
                "asn": 64512,
                "addresses": {"ipv4": "198.18.0.1", "ipv6": "fd00:198:18::1"},
            },
            "pools": [{"cidr": "100.64.0.0/16"}],
            "state_dir": "/tmp/l3f-unit-state",
            "datastore": {"type": "file", "path": "/tmp/l3f-unit-store"},
            "bgp": bgp,
        }
    )


def record(name: str, v4: str | None, v6: str | None = None, asn: int = 64512) -> NodeRecord:
    return NodeRecord(
        name,
        asn,
        ipaddress.IPv4Address(v4) if v4 else None,
        ipaddress.IPv6Address(v6) if v6 else None,
    )


def test_the_mesh_peers_with_every_other_node_per_family_both_have() -> None:
    records = [
        record("node1", "198.18.0.1", "fd00:198:18::1"),
        record("node2", "198.18.0.2", "fd00:198:18::2"),
        record("node3", "198.18.0.3"),
    ]
    plan = desired_neighbors(config(), records)
    assert sorted(map(str, plan.neighbors)) == ["198.18.0.2", "198.18.0.3", "fd00:198:18::2"]
    v6 = plan.neighbors[ip("fd00:198:18::2")]
    assert v6.kind == "mesh" and v6.spec.families == ("ipv6",)
    assert v6.spec.local_address == ip("fd00:198:18::1")
    assert v6.spec.name == "mesh-node2-v6"
    assert plan.problems == ()


def test_no_mesh_means_only_configured_peers() -> None:
    cfg = config(
        mesh=False,
        peers=[{"address": "198.18.0.66", "asn": 65066, "role": "external", "hold_time": 30}],
    )
    plan = desired_neighbors(cfg, [record("node2", "198.18.0.2")])
    (peer,) = plan.neighbors.values()
    assert peer.kind == "external" and peer.spec.peer_as == 65066 and peer.spec.hold_time == 30
    assert peer.info.local_asn == 64512


def test_graceful_restart_per_peer_overrides_the_default() -> None:
    cfg = config(
        mesh=False,
        graceful_restart={"enabled": True, "restart_time": 90},
        peers=[
            {"address": "198.18.0.66", "asn": 65066, "role": "external", "graceful_restart": False},
            {"address": "198.18.0.67", "asn": 65066, "role": "external"},
        ],
    )
    plan = desired_neighbors(cfg, [])
    assert plan.neighbors[ip("198.18.0.66")].spec.graceful_restart is None
    assert plan.neighbors[ip("198.18.0.67")].spec.graceful_restart == 90
    assert plan.neighbors[ip("198.18.0.67")].info.graceful_restart_time == 90.0


def test_bad_records_are_reported_and_skipped() -> None:
    values = [
        KeyValue(
            "/l3fabric/nodes/node2", b'{"name": "node2", "asn": 64512, "ipv4": "198.18.0.2"}', 1
        ),
        KeyValue("/l3fabric/nodes/node4", b'["not", "a", "record"]', 2),
        KeyValue("/l3fabric/nodes/node5", b"{not json", 3),
    ]
    records, problems = decode_node_records(values)
    assert [r.name for r in records] == ["node2"]
    assert len(problems) == 2 and "node4" in problems[0] and "node5" in problems[1]


def test_a_record_exabgp_cannot_take_is_left_out_with_a_reason() -> None:
    # A peer in another AS in the iBGP mesh is refused by the neighbour spec.
    plan = desired_neighbors(
        config(), [record("node2", "198.18.0.2"), record("odd", "198.18.0.3", asn=0)]
    )
    assert list(map(str, plan.neighbors)) == ["198.18.0.2"]
    assert len(plan.problems) == 1 and "odd" in plan.problems[0]
