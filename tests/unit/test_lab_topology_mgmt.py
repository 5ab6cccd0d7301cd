"""containerlab's `mgmt:` section and a node's `mgmt-ipv4`/`mgmt-ipv6`, read
strictly; the management address plan; agents' metrics listeners held to
the management side; the shipped topologies against containerlab's schema."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3fabric.lab import mgmt, mgmtspec
from l3fabric.lab.topology import TopologyError, load_topology
from tests.clab_schema import load_schema, schema_errors

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "lab"
SHIPPED = sorted((REPO / "containerlab").glob("*.clab.yml"))
HOST = {"kind": "linux", "image": "alpine:3"}


def write(tmp_path: Path, data: Any, config: str | None = None) -> Path:
    if config is not None:
        (tmp_path / "n1.yaml").write_text(config)
    path = tmp_path / "lab.clab.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def lab(nodes: dict[str, Any], mgmt_section: Any = None, **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "t", "topology": {"nodes": nodes, **top}}
    if mgmt_section is not None:
        data["mgmt"] = mgmt_section
    return data


def errors_of(tmp_path: Path, data: Any) -> tuple[Path, tuple[str, ...]]:
    path = write(tmp_path, data)
    with pytest.raises(TopologyError) as err:
        load_topology(path, lab_root=tmp_path / "labs")
    assert not (tmp_path / "labs").exists()
    return path, err.value.errors


# -- accepted ----------------------------------------------------------------------


def test_the_mgmt_section_and_node_addresses_are_read(tmp_path: Path) -> None:
    topo = load_topology(DATA / "mgmt-lab.clab.yml", lab_root=tmp_path)
    assert topo.mgmt == mgmtspec.MgmtSpec(
        "l3fabric-test-mgmt",
        ipaddress.IPv4Network("198.19.200.0/24"),
        ipaddress.IPv6Network("fd00:198:18:c8::/64"),
    )
    node1 = topo.node("node1")
    assert str(node1.mgmt_ipv4) == "198.19.200.11" and str(node1.mgmt_ipv6) == "fd00:198:18:c8::11"
    assert topo.node("node2").mgmt_ipv4 is None


def test_without_a_mgmt_section_the_defaults_apply(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, lab({"a": HOST})), lab_root=tmp_path)
    assert topo.mgmt == mgmtspec.MgmtSpec()
    assert str(topo.mgmt.ipv4_subnet) == "198.19.255.0/24"
    assert str(topo.mgmt.ipv6_subnet) == "fd00:198:18:ffff::/64"
    network = mgmt.plan_network(topo)
    assert str(network.address("a")) == "198.19.255.2/24"
    assert str(network.address6("a")) == "fd00:198:18:ffff::2/64"
    assert str(network.gateway) == "198.19.255.1/24"


def test_auto_subnets_are_the_defaults(tmp_path: Path) -> None:
    data = lab({"a": HOST}, {"ipv4-subnet": "auto", "ipv6-subnet": "auto"})
    topo = load_topology(write(tmp_path, data), lab_root=tmp_path)
    assert topo.mgmt == mgmtspec.MgmtSpec()


def test_plan_keeps_own_addresses_fills_the_lowest_free_and_puts_prometheus_last(
    tmp_path: Path,
) -> None:
    topo = mgmt.with_prometheus(load_topology(DATA / "mgmt-lab.clab.yml", lab_root=tmp_path))
    network = mgmt.plan_network(topo)
    assert [(n, str(a)) for n, a in network.addresses] == [
        ("node1", "198.19.200.11/24"),
        ("node2", "198.19.200.2/24"),
        ("r1", "198.19.200.21/24"),
        ("r2", "198.19.200.3/24"),
        ("prometheus", "198.19.200.254/24"),
    ]
    assert [str(a) for _, a in network.addresses6][:4] == [
        "fd00:198:18:c8::11/64",
        "fd00:198:18:c8::2/64",
        "fd00:198:18:c8::3/64",
        "fd00:198:18:c8::4/64",
    ]
    state = network.to_state("t--mgmt")
    assert state["network"] == "l3fabric-test-mgmt" and state["gateway"] == "198.19.200.1"
    assert network.prometheus_url == "http://198.19.200.254:9090"


def test_nodes_that_do_not_fit_the_subnet(tmp_path: Path) -> None:
    data = lab({f"n{i}": HOST for i in range(3)}, {"ipv4-subnet": "198.19.7.0/30"})
    topo = load_topology(write(tmp_path, data), lab_root=tmp_path)
    with pytest.raises(TopologyError, match=r"mgmt: 3 nodes do not fit .* 198.19.7.0/30"):
        mgmt.plan_network(topo)


# -- refused, each naming the file and the key -------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (lab({"a": HOST}, "m"), "mgmt", "must be a mapping"),
        (
            lab({"a": HOST}, {"ipv4-subnet": "10.0.0.0/24"}),
            "mgmt.ipv4-subnet",
            "10.0.0.0/24 is outside 198.18.0.0/15",
        ),
        (
            lab({"a": HOST}, {"ipv6-subnet": "fd00:64::/64"}),
            "mgmt.ipv6-subnet",
            "fd00:64::/64 is outside fd00:198:18::/48",
        ),
        (
            lab({"a": HOST}, {"ipv4-subnet": "fd00:198:18:1::/64"}),
            "mgmt.ipv4-subnet",
            "is not an IPv4 subnet",
        ),
        (
            lab({"a": HOST}, {"ipv4-subnet": "198.19.1.1/24"}),
            "mgmt.ipv4-subnet",
            "has host bits set",
        ),
        (lab({"a": HOST}, {"ipv4-subnet": "198.19.1.0/31"}), "mgmt.ipv4-subnet", "too small"),
        (lab({"a": HOST}, {"ipv4-subnet": 24}), "mgmt.ipv4-subnet", "must be an IPv4 subnet"),
        (
            lab({"a": HOST}, {"bridge": "br-mgmt"}),
            "mgmt.bridge",
            "containerlab's 'bridge' is not supported",
        ),
        (
            lab({"a": HOST}, {"ipv4_subnet": "198.19.1.0/24"}),
            "mgmt.ipv4_subnet",
            "unknown key (did you mean 'ipv4-subnet'?)",
        ),
        (lab({"a": HOST}, {"network": "no spaces"}), "mgmt.network", "must be 1-64 letters"),
        (
            lab({"a": {**HOST, "mgmt-ipv4": "198.18.0.5"}}),
            "topology.nodes.a.mgmt-ipv4",
            "198.18.0.5 is not in the management subnet 198.19.255.0/24",
        ),
        (
            lab({"a": {**HOST, "mgmt-ipv4": "198.19.255.1"}}),
            "topology.nodes.a.mgmt-ipv4",
            "the management network's gateway",
        ),
        (
            lab({"a": {**HOST, "mgmt-ipv4": "198.19.255.255"}}),
            "topology.nodes.a.mgmt-ipv4",
            "network or broadcast address",
        ),
        (
            lab({"a": {**HOST, "mgmt-ipv4": "198.19.255.9/24"}}),
            "topology.nodes.a.mgmt-ipv4",
            "is not an IPv4 address (without a prefix length)",
        ),
        (
            lab({"a": {**HOST, "mgmt-ipv6": "198.19.255.9"}}),
            "topology.nodes.a.mgmt-ipv6",
            "is not an IPv6 address",
        ),
        (
            lab(
                {
                    "a": {**HOST, "mgmt-ipv4": "198.19.255.9"},
                    "b": {**HOST, "mgmt-ipv4": "198.19.255.9"},
                }
            ),
            "topology.nodes.b.mgmt-ipv4",
            "198.19.255.9 is node a's management address too",
        ),
        (
            lab({"a": {**HOST, "group": "g"}}, groups={"g": {"mgmt-ipv4": "198.19.255.9"}}),
            "topology.groups.g.mgmt-ipv4",
            "a node's own management address: set it on the node",
        ),
        (
            lab({"a": {**HOST, "mgmt-ip4": "198.19.255.9"}}),
            "topology.nodes.a.mgmt-ip4",
            "did you mean 'mgmt-ipv4'?",
        ),
    ],
)
def test_refused_mgmt_settings_name_file_and_key(
    tmp_path: Path, data: Any, key: str, message: str
) -> None:
    path, errors = errors_of(tmp_path, data)
    assert any(line.startswith(f"{path}: {key}: ") and message in line for line in errors), errors
    assert all(line.startswith(str(path)) for line in errors)


def test_every_mgmt_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = lab(
        {"a": {**HOST, "mgmt-ipv4": "10.1.1.1"}},
        {"ipv4-subnet": "10.0.0.0/8", "ipv6-subnet": "2001:db8::/64", "mtu": 9000},
    )
    _, errors = errors_of(tmp_path, data)
    keys = [line.split(": ")[1] for line in errors]
    assert keys == [
        "mgmt.mtu",
        "mgmt.ipv4-subnet",
        "mgmt.ipv6-subnet",
        "topology.nodes.a.mgmt-ipv4",
    ]


# -- the agents' metrics listen on the management side -----------------------------


def agent_lab(tmp_path: Path, listen: str | None, enabled: bool = True) -> Path:
    metrics: dict[str, Any] = {"enabled": enabled}
    if listen is not None:
        metrics["listen"] = listen
    config = yaml.safe_dump({"node": {"name": "a"}, "metrics": metrics})
    node = {"kind": "linux", "image": "l3fabric/node", "mgmt-ipv4": "198.19.255.9"}
    node["binds"] = ["n1.yaml:/etc/l3fabric/node.yaml"]
    return write(tmp_path, lab({"a": node}), config)


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("198.19.255.9:9641", "198.19.255.9:9641"),
        ("[fd00:198:18:ffff::2]:9641", "[fd00:198:18:ffff::2]:9641"),
        ("127.0.0.1:9641", None),
        ("[::1]:9641", None),
        (None, None),  # the agent's default, loopback
    ],
)
def test_a_metrics_listener_on_the_management_address_or_loopback_is_accepted(
    tmp_path: Path, listen: str | None, target: str | None
) -> None:
    topo = load_topology(agent_lab(tmp_path, listen), lab_root=tmp_path)
    targets = mgmt.check_listeners(topo, mgmt.plan_network(topo))
    assert [t.address for t in targets] == ([target] if target else [])


@pytest.mark.parametrize(
    ("listen", "where"),
    [
        ("0.0.0.0:9641", "every address"),
        ("[::]:9641", "every address"),
        ("198.18.0.1:9641", "198.18.0.1"),
    ],
)
def test_a_metrics_listener_workloads_reach_is_refused(
    tmp_path: Path, listen: str, where: str
) -> None:
    path = agent_lab(tmp_path, listen)
    topo = load_topology(path, lab_root=tmp_path)
    with pytest.raises(TopologyError) as err:
        mgmt.check_listeners(topo, mgmt.plan_network(topo))
    (line,) = err.value.errors
    assert line.startswith(f"node a: metrics.listen {listen.replace('[', '').replace(']', '')}")
    assert f"in {tmp_path / 'n1.yaml'} listens on {where}" in line
    assert "set it to 198.19.255.9:9641" in line


def test_disabled_metrics_are_not_checked_but_cannot_be_scraped(tmp_path: Path) -> None:
    topo = load_topology(agent_lab(tmp_path, "0.0.0.0:9641", enabled=False), lab_root=tmp_path)
    network = mgmt.plan_network(topo)
    assert mgmt.check_listeners(topo, network) == []
    with pytest.raises(TopologyError, match=r"metrics\.enabled is false"):
        mgmt.scrape_targets(topo, network)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_agents_listen_on_their_management_address(path: Path, tmp_path: Path) -> None:
    topo = load_topology(path, lab_root=tmp_path)
    network = mgmt.plan_network(topo)
    targets = mgmt.check_listeners(topo, network)
    agents = [n for n in topo.nodes if n.image_kind.value == "l3fabric"]
    assert [t.node for t in targets] == [n.name for n in agents]
    for node in agents:  # the file says the address, so containerlab gives the same one
        assert node.mgmt_ipv4 is not None
        assert dict((t.node, t.address) for t in targets)[node.name] == f"{node.mgmt_ipv4}:9641"


# -- containerlab's schema ---------------------------------------------------------


@pytest.mark.parametrize("path", [*SHIPPED, DATA / "mgmt-lab.clab.yml"], ids=lambda p: p.name)
def test_topologies_with_mgmt_match_containerlab_schema(path: Path) -> None:
    errors = schema_errors(path)
    assert not errors, errors


def test_the_schema_knows_every_mgmt_key_the_runner_reads() -> None:
    schema = load_schema()
    assert set(mgmtspec.MGMT_KEYS) | set(mgmtspec.MGMT_UNSUPPORTED) == set(
        schema["properties"]["mgmt"]["properties"]
    )
    node = schema["definitions"]["node-config"]["properties"]
    assert {"mgmt-ipv4", "mgmt-ipv6", "startup-config"} <= set(node)
    assert re.search(r"\\p", json.dumps(schema)) is None
