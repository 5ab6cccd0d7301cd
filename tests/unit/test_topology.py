"""containerlab topology files: schema, the runner's own checks, and the
pure helpers of the lab (mount plan, daemon parsing, sessions, graph)."""

from __future__ import annotations

import json
import os
import xml.dom.minidom
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from l3fabric.bgp.bird import render
from l3fabric.cli import lab as cli_lab
from l3fabric.cli.bird import config_from_data
from l3fabric.lab import daemons, graph
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import LabError, plan_mounts
from l3fabric.lab.topology import (
    ImageKind,
    Node,
    TopologyError,
    image_kind,
    load_topology,
)
from l3fabric.yamlfile import load_file
from tests.clab_schema import schema_errors

REPO = Path(__file__).resolve().parents[2]
CLAB = REPO / "containerlab"
TOPOLOGIES = sorted(CLAB.glob("*.clab.yml"))


def test_the_topologies_are_there() -> None:
    names = {p.name for p in TOPOLOGIES}
    assert {"two-nodes.clab.yml", "route-reflectors.clab.yml", "leaf-spine.clab.yml"} <= names


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topology_matches_containerlab_schema(path: Path) -> None:
    errors = schema_errors(path)
    assert not errors, errors


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_topology_passes_runner_checks(path: Path, tmp_path: Path) -> None:
    topo = load_topology(path, lab_root=tmp_path)
    assert topo.name == path.name.removesuffix(".clab.yml")
    assert topo.links
    kinds = {n.image_kind for n in topo.nodes}
    assert ImageKind.L3FABRIC in kinds
    for node in topo.nodes:
        if node.image_kind is ImageKind.L3FABRIC:
            config = node.bound_source("/etc/l3fabric/node.yaml")
            assert config is not None and config.is_file()
            from l3fabric.config import load_config

            assert load_config(str(config)).node.name == node.name
    assert not (tmp_path / topo.name).exists(), "loading a topology must create nothing"


def test_leaf_spine_uses_both_router_kinds(tmp_path: Path) -> None:
    topo = load_topology(CLAB / "leaf-spine.clab.yml", lab_root=tmp_path)
    kinds = {n.name: n.image_kind for n in topo.nodes}
    assert kinds["spine1"] is ImageKind.FRR and kinds["leaf1"] is ImageKind.BIRD
    leaf = (CLAB / "leaf-spine" / "leaf1" / "bird.conf").read_text()
    assert "next hop self ebgp;" in leaf and "merge paths on;" in leaf and "rr client;" in leaf
    spine = (CLAB / "leaf-spine" / "spine1" / "frr.conf").read_text()
    assert "maximum-paths" in spine


@pytest.mark.parametrize(
    "conf", sorted(CLAB.glob("*/*/bird.yaml")), ids=lambda p: str(p.relative_to(CLAB))
)
def test_committed_bird_configs_equal_a_fresh_render(conf: Path) -> None:
    rendered = render(config_from_data(load_file(conf)))
    assert (conf.parent / "bird.conf").read_text() == rendered, (
        f"re-render: l3fabric bird render --from-yaml {conf} -o {conf.parent / 'bird.conf'}"
    )


def test_leaf_bird_configs_are_rendered_not_hand_written() -> None:
    # The leaves are covered by the fresh-render check above only while
    # their YAML inputs exist; a hand-written bird.conf would escape it.
    for leaf in ("leaf1", "leaf2"):
        conf = CLAB / "leaf-spine" / leaf / "bird.yaml"
        assert conf.is_file(), f"{conf} is missing: the leaf's bird.conf must be rendered"
        rendered = render(config_from_data(load_file(conf)))
        assert (conf.parent / "bird.conf").read_text() == rendered


# -- malformed topologies ---------------------------------------------------------


def write(tmp_path: Path, data: Any, files: tuple[str, ...] = ("n1.yaml",)) -> Path:
    for name in files:
        (tmp_path / name).write_text("node: {}\n")
    path = tmp_path / "lab.clab.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def lab(nodes: dict[str, Any], links: list[Any] | None = None) -> dict[str, Any]:
    return {"name": "t", "topology": {"nodes": nodes, "links": links or []}}


HOST = {"kind": "linux", "image": "alpine:3"}
AGENT = {"kind": "linux", "image": "l3fabric/node", "binds": ["n1.yaml:/etc/l3fabric/node.yaml"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (lab({"a": HOST}, [{"endpoints": ["a:eth1", "b:eth1"]}]), "unknown node 'b'"),
        (
            lab({"a": HOST, "b": HOST}, [{"endpoints": ["a:eth1", "b:eth1"]}] * 2),
            "a:eth1 is already used by topology.links[0]",
        ),
        (lab({"a": {"kind": "nokia_srlinux", "image": "srl"}}), "unsupported kind 'nokia_srlinux'"),
        ("name: t\ntopology: {nodes: {a: [}\n", "invalid YAML"),
        (
            "name: t\nname: u\ntopology: {nodes: {}}\n",
            ":2:1: invalid YAML: found duplicate key 'name'",
        ),
        (
            lab({"a": {**HOST, "binds": ["nowhere.conf:/etc/x.conf"]}}),
            "does not exist",
        ),
        (
            lab({"a": HOST, "b": HOST}, [{"endpoints": ["a:averyveryverylongname", "b:eth1"]}]),
            "longer than 15 characters",
        ),
        (lab({"a": HOST, "b": HOST}, [{"endpoints": ["a-eth1", "b:eth1"]}]), "not NODE:INTERFACE"),
        (lab({"a": {"kind": "linux", "image": "l3fabric/node"}}), "needs /etc/l3fabric/node.yaml"),
        (lab({"a": {"kind": "linux"}}), "image: missing"),
        (lab({"a": HOST}, [{"type": "vxlan", "endpoints": []}]), "link type 'vxlan'"),
        (lab({"a": {**HOST, "binds": ["n1.yaml:etc/x"]}}), "must be an absolute path"),
        ({"name": "bad name", "topology": {"nodes": {"a": HOST}}}, "name: 'bad name'"),
        ({"name": "t"}, "topology: missing"),
    ],
)
def test_malformed_topology_is_a_clear_error(tmp_path: Path, data: Any, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(TopologyError) as err:
        load_topology(path, lab_root=tmp_path / "labs")
    assert message in str(err.value)
    assert all(line.startswith(str(path)) for line in err.value.errors)
    assert not (tmp_path / "labs").exists()


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (
            {"name": "t", "topology": {"nodes": {"a": HOST}, "linkz": []}},
            "topology.linkz",
            "unknown key (did you mean 'links'?)",
        ),
        (
            {"name": "t", "topolgy": {"nodes": {"a": HOST}}},
            "topolgy",
            "did you mean 'topology'?",
        ),
        (
            lab({"a": {**HOST, "cmd": "sleep 1"}}),
            "topology.nodes.a.cmd",
            "containerlab's 'cmd' is not supported",
        ),
        (
            lab({"a": {**HOST, "imgae": "x"}}),
            "topology.nodes.a.imgae",
            "did you mean 'image'?",
        ),
        (
            {"name": "t", "prefix": "x", "topology": {"nodes": {"a": HOST}}},
            "prefix",
            "not supported",
        ),
        (
            {"name": "t", "topology": {"nodes": {"a": HOST}, "groups": {"g": {"ports": []}}}},
            "topology.groups.g.ports",
            "not supported",
        ),
        (
            lab({"a": HOST, "b": HOST}, [{"endpoints": ["a:eth1", "b:eth1"], "mtu": 9000}]),
            "topology.links[0].mtu",
            "not supported",
        ),
        (
            lab({"a": {**HOST, "restart-policy": "sometimes"}}),
            "topology.nodes.a.restart-policy",
            "'sometimes' is not one of",
        ),
        (
            lab({"a": {**HOST, "labels": {"x": [1]}}}),
            "topology.nodes.a.labels.x",
            "must be a string, number or boolean",
        ),
    ],
)
def test_unknown_and_unsupported_keys_are_errors(
    tmp_path: Path, data: Any, key: str, message: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(TopologyError) as err:
        load_topology(path, lab_root=tmp_path / "labs")
    assert any(
        line.startswith(f"{path}: {key}: ") and message in line for line in err.value.errors
    ), err.value.errors


def test_cli_exits_2_on_an_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, {"name": "t", "topology": {"nodes": {"a": HOST}, "linkz": []}})
    code = cli_lab.main(["lab", "inspect", str(path), "--lab-root", str(tmp_path / "labs")])
    assert code == 2
    assert f"{path}: topology.linkz: unknown key (did you mean 'links'?)" in capsys.readouterr().err


CONTAINERLAB_STYLE = """\
name: groups
topology:
  defaults:
    kind: linux
    env:
      LEVEL: defaults
      FROM_DEFAULTS: "1"
    labels:
      lab: groups
  kinds:
    linux:
      image: alpine:3
      env:
        LEVEL: kind
  groups:
    spines:
      image: quay.io/frrouting/frr:9.1.0
      binds:
        - frr.conf:/etc/frr/frr.conf
      env:
        LEVEL: group
      labels:
        role: spine
    clients:
      restart-policy: always
      exec:
        - ip addr add 192.168.1.1/24 dev eth1
        - ip route add default via 192.168.1.254
  nodes:
    spine1:
      group: spines
      labels:
        rack: "1"
    client1:
      group: clients
      env:
        LEVEL: node
    client2:
      group: clients
      exec:
        - ip addr add 192.168.2.1/24 dev eth1
    plain: {}
  links:
    - endpoints: ["spine1:eth1", "client1:eth1"]
    - endpoints: ["spine1:eth2", "client2:eth1"]
"""


def test_inheritance_defaults_kinds_groups_node(tmp_path: Path) -> None:
    """Written the way containerlab's examples are: per-group images, binds
    and exec lists; defaults < kinds < groups < node."""
    (tmp_path / "frr.conf").write_text("frr defaults traditional\n")
    path = write(tmp_path, CONTAINERLAB_STYLE, files=())
    topo = load_topology(path, lab_root=tmp_path / "labs")
    spine, c1, c2, plain = (topo.node(n) for n in ("spine1", "client1", "client2", "plain"))
    assert spine.image_kind is ImageKind.FRR and spine.group == "spines"
    assert spine.bound_source("/etc/frr/frr.conf") == tmp_path / "frr.conf"
    assert dict(spine.env) == {"LEVEL": "group", "FROM_DEFAULTS": "1"}
    assert dict(spine.labels) == {"lab": "groups", "role": "spine", "rack": "1"}
    assert spine.restart == "on-failure"  # FRR's default
    assert c1.image == "alpine:3" and dict(c1.env)["LEVEL"] == "node"
    assert c1.exec == (
        "ip addr add 192.168.1.1/24 dev eth1",
        "ip route add default via 192.168.1.254",
    )
    assert c2.exec == ("ip addr add 192.168.2.1/24 dev eth1",)  # the node's list replaces
    assert c1.restart == c2.restart == "always"
    assert (
        plain.image == "alpine:3" and plain.restart == "no" and dict(plain.env)["LEVEL"] == "kind"
    )


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ("No", "no"),
        ("On-failure", "on-failure"),
        ("always", "always"),
        ("unless-stopped", "always"),
    ],
)
def test_restart_policy_values(tmp_path: Path, value: str, policy: str) -> None:
    topo = load_topology(
        write(tmp_path, lab({"a": {**HOST, "restart-policy": value}})), lab_root=tmp_path
    )
    assert topo.node("a").restart == policy


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = lab(
        {"a": {"kind": "bogus", "image": "x"}, "b": HOST},
        [{"endpoints": ["b:eth1", "c:eth1"]}, {"endpoints": ["b:eth1", "b:eth2"]}],
    )
    with pytest.raises(TopologyError) as err:
        load_topology(write(tmp_path, data), lab_root=tmp_path)
    assert len(err.value.errors) == 3, err.value.errors


def test_agent_node_with_its_config_is_accepted(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, lab({"n1": AGENT})), lab_root=tmp_path / "labs")
    assert topo.node("n1").bound_source("/etc/l3fabric/node.yaml") == tmp_path / "n1.yaml"


def test_defaults_kinds_and_magic_variables(tmp_path: Path) -> None:
    data = {
        "name": "t",
        "topology": {
            "defaults": {"kind": "linux", "env": {"A": "1"}},
            "kinds": {"linux": {"image": "alpine", "binds": ["__clabDir__/shared:/shared"]}},
            "nodes": {"a": {"exec": ["echo __clabNodeName__ __clabNodeDir__"]}},
        },
    }
    topo = load_topology(write(tmp_path, data), lab_root=tmp_path / "labs")
    node = topo.node("a")
    labdir = tmp_path / "labs" / "t" / "clab"
    assert node.image == "alpine" and node.env == (("A", "1"),)
    assert node.exec == (f"echo a {labdir / 'a'}",)
    assert node.binds[0].source == labdir / "shared" and node.binds[0].lab_owned


def test_name_override(tmp_path: Path) -> None:
    topo = load_topology(CLAB / "two-nodes.clab.yml", name="mine", lab_root=tmp_path)
    assert topo.name == "mine"
    assert LabPaths(tmp_path, "mine").netns("node1") == "mine-node1"


def test_cli_reports_topology_errors_before_creating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, lab({"a": HOST}, [{"endpoints": ["a:eth1", "zz:eth1"]}]))
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    code = cli_lab.main(["lab", "deploy", str(path), "--lab-root", str(tmp_path / "labs")])
    assert code == 2
    assert "unknown node 'zz'" in capsys.readouterr().err
    assert not (tmp_path / "labs").exists()
    after = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    assert before == after


# -- image kinds -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("l3fabric/node:latest", ImageKind.L3FABRIC),
        ("ghcr.io/example/l3fabric-node:1.0", ImageKind.L3FABRIC),
        ("l3fabric/bird:2", ImageKind.BIRD),
        ("pierky/bird:2.0.12", ImageKind.BIRD),
        ("quay.io/frrouting/frr:8.4.1", ImageKind.FRR),
        ("frrouting/frr", ImageKind.FRR),
        ("alpine:3", ImageKind.HOST),
        ("registry:5000/busybox", ImageKind.HOST),
        ("ghcr.io/hellt/network-multitool", ImageKind.HOST),
        ("quay.io/coreos/etcd:v3.5.17", ImageKind.ETCD),
        ("gcr.io/etcd-development/etcd:v3.5.0", ImageKind.ETCD),
    ],
)
def test_image_kind(image: str, kind: ImageKind) -> None:
    assert image_kind(image) is kind


# -- mount plan ------------------------------------------------------------------


def fake_fs(existing: set[str], dirs: set[str]) -> tuple[Any, Any]:
    return (lambda p: str(p) in existing), (lambda p: str(p) in dirs)


def test_mount_plan_overlays_the_nearest_existing_directory(tmp_path: Path) -> None:
    conf = tmp_path / "node.yaml"
    conf.write_text("x")
    from l3fabric.lab.topology import Bind

    node = Node(
        "n1",
        "linux",
        "l3fabric/node",
        (
            Bind(conf, PurePosixPath("/etc/l3fabric/node.yaml")),
            Bind(conf, PurePosixPath("/etc/bird/bird.conf")),
            Bind(tmp_path / "labs" / "x", PurePosixPath("/run/thing"), lab_owned=True),
        ),
    )
    exists, is_dir = fake_fs(
        {"/", "/etc", "/etc/bird", "/etc/bird/bird.conf", "/var", "/var/lib", str(conf)},
        {"/", "/etc", "/etc/bird", "/var", "/var/lib"},
    )
    paths = LabPaths(tmp_path / "labs", "t")
    plan = plan_mounts(node, paths, (PurePosixPath("/var/lib/l3fabric"),), exists, is_dir)
    assert plan.overlays == (PurePosixPath("/etc"), PurePosixPath("/var/lib"))
    targets = [str(b.target) for b in plan.binds]
    assert "/var/lib/l3fabric" in targets
    assert paths.node_run("n1") / "thing" in plan.host_dirs
    script = [" ".join(c) for c in plan.script(paths, "n1")]
    assert script[-1] == "hostname n1"
    assert script[-2] == f"mount --rbind {paths.node_run('n1')} /run"
    assert any(s.startswith("mount -t overlay overlay -o lowerdir=/etc,") for s in script)
    assert f"mount --bind {conf} /etc/bird/bird.conf" in script


def test_mount_plan_refuses_new_top_level_directories(tmp_path: Path) -> None:
    from l3fabric.lab.topology import Bind

    node = Node("n1", "linux", "alpine", (Bind(tmp_path, PurePosixPath("/data/x")),))
    exists, is_dir = fake_fs({"/", str(tmp_path)}, {"/", str(tmp_path)})
    with pytest.raises(LabError, match="new top-level directory"):
        plan_mounts(node, LabPaths(tmp_path, "t"), (), exists, is_dir)


# -- daemons -----------------------------------------------------------------------


def test_frr_daemons_file(tmp_path: Path) -> None:
    daemons_file = tmp_path / "daemons"
    daemons_file.write_text('bgpd=yes\nospfd=no\nbgpd_options="  -A 127.0.0.1 -M bmp"\n')
    started = dict(daemons.frr_daemons(daemons_file))
    if not (daemons.FRR_DIR / "bgpd").exists():
        pytest.skip("FRR is not installed")
    assert list(started) == ["zebra", "bgpd", "staticd"]
    assert started["bgpd"] == ["-A", "127.0.0.1", "-M", "bmp"]
    assert started["zebra"] == ["-A", "127.0.0.1", "-s", "90000000"]


BIRD_PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     07:35:50.142
peer_rr2   BGP        ---        up     07:35:51.873  Established
  BGP state:          Established
    Neighbor address: 198.18.0.251
    Neighbor AS:      64512
range_nodes BGP        ---        start  07:35:50.142  Passive
  BGP state:          Passive
dyn_nodes_1 BGP        ---        start  07:35:53.141  Connect
  BGP state:          Connect
    Neighbor address: 198.18.0.1
"""


def test_bird_sessions() -> None:
    found = daemons.parse_bird_protocols("rr1", BIRD_PROTOCOLS)
    assert [(s.peer_address, s.state, s.established) for s in found] == [
        ("198.18.0.251", "Established", True),
        ("198.18.0.1", "Connect", False),
    ]


def test_frr_sessions() -> None:
    summary = {
        "ipv4Unicast": {"peers": {"198.18.100.0": {"state": "Established"}}},
        "ipv6Unicast": {"peers": {"fd00:198:18:f001::1": {"state": "Active"}}},
    }
    found = daemons.parse_frr_summary("spine1", json.dumps(summary))
    assert {(s.peer_address, s.established) for s in found} == {
        ("198.18.100.0", True),
        ("fd00:198:18:f001::1", False),
    }


# -- graph -------------------------------------------------------------------------


def test_tiers_follow_link_distance() -> None:
    links = [("n1", "leaf"), ("n2", "leaf"), ("leaf", "spine"), ("x", "y")]
    assert graph.tiers(["n1", "n2", "leaf", "spine", "x", "y"], links, {"n1", "n2"}) == {
        "n1": 0,
        "n2": 0,
        "leaf": 1,
        "spine": 2,
        "x": 0,
        "y": 0,
    }


def test_sessions_merge_both_ends_and_svg_is_valid() -> None:
    owner = {"198.18.0.1": "n1", "198.18.0.250": "rr1", "fd00::1": "n1"}
    reports = [
        daemons.Session("n1", "198.18.0.250", "Established"),
        daemons.Session("rr1", "198.18.0.1", "Established"),
        daemons.Session("rr1", "fd00:0::1", "Active"),
        daemons.Session("n1", "203.0.113.9", "Established"),  # outside the lab
    ]
    sessions = graph.merge_sessions(reports, owner)
    assert len(sessions) == 1
    assert sessions[0].families == ("v4", "v6") and not sessions[0].established
    fabric = graph.Fabric(
        "t",
        (
            graph.GraphNode("n1", ImageKind.L3FABRIC, ("198.18.0.1",), 0),
            graph.GraphNode("rr1", ImageKind.BIRD, ("198.18.0.250",), 1),
        ),
        (("n1", "rr1"),),
        tuple(sessions),
    )
    svg = graph.render_svg(fabric)
    doc = xml.dom.minidom.parseString(svg)
    assert len(doc.getElementsByTagName("rect")) == 3  # background and two nodes
    assert 'class="session down"' in svg and 'class="link"' in svg


# -- --prometheus: management network and scrape config ------------------------------


def test_prometheus_node_management_addresses_and_scrape_config(tmp_path: Path) -> None:
    from l3fabric.lab import mgmt

    topo = mgmt.with_prometheus(load_topology(CLAB / "two-nodes.clab.yml", lab_root=tmp_path))
    assert topo.node("prometheus").image_kind is ImageKind.PROMETHEUS
    network = mgmt.plan_network(topo)
    assert [(n, str(a)) for n, a in network.addresses] == [
        ("node1", "198.19.255.2/24"),
        ("node2", "198.19.255.3/24"),
        ("prometheus", "198.19.255.254/24"),
    ]
    assert network.prometheus_url == "http://198.19.255.254:9090"
    targets = mgmt.scrape_targets(topo, network)
    config = yaml.safe_load(mgmt.prometheus_config(topo.name, targets))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "l3fabric" and job["scrape_interval"] == "2s"
    assert job["static_configs"][1] == {
        "targets": ["198.19.255.3:9641"],
        "labels": {"node": "node2", "lab": "two-nodes"},
    }
    with pytest.raises(TopologyError, match="--prometheus adds a node"):
        mgmt.with_prometheus(topo)
    assert not (tmp_path / topo.name).exists()


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_every_agent_is_reachable_from_the_management_network(path: Path, tmp_path: Path) -> None:
    from l3fabric.lab import mgmt

    topo = mgmt.with_prometheus(load_topology(path, lab_root=tmp_path))
    agents = [n.name for n in topo.nodes if n.image_kind is ImageKind.L3FABRIC]
    targets = mgmt.scrape_targets(topo, mgmt.plan_network(topo))
    assert [t.node for t in targets] == agents


def test_loopback_metrics_or_eth0_links_are_refused(tmp_path: Path) -> None:
    from l3fabric.lab import mgmt

    config = tmp_path / "node.yaml"
    config.write_text("node: {name: a}\nmetrics: {listen: 127.0.0.1:9641}\n")
    topology = {
        "name": "m",
        "topology": {
            "nodes": {
                "a": {
                    "kind": "linux",
                    "image": "l3fabric/node",
                    "binds": [f"{config}:/etc/l3fabric/node.yaml"],
                },
                "b": {"kind": "linux", "image": "alpine"},
            },
            "links": [{"endpoints": ["a:eth0", "b:eth1"]}],
        },
    }
    path = tmp_path / "m.clab.yml"
    path.write_text(yaml.safe_dump(topology))
    topo = mgmt.with_prometheus(load_topology(path, lab_root=tmp_path))
    with pytest.raises(TopologyError, match="a:eth0 uses eth0, the management interface"):
        mgmt.plan_network(topo)
    topology["topology"]["links"] = [{"endpoints": ["a:eth1", "b:eth1"]}]
    path.write_text(yaml.safe_dump(topology))
    topo = mgmt.with_prometheus(load_topology(path, lab_root=tmp_path))
    with pytest.raises(TopologyError, match=r"node a: metrics.listen 127.0.0.1:9641 .* 0.0.0.0"):
        mgmt.scrape_targets(topo, mgmt.plan_network(topo))


# -- etcd members ------------------------------------------------------------------


def test_etcd_address_is_the_first_address_the_exec_steps_add() -> None:
    from ipaddress import ip_address

    from l3fabric.lab.etcd import exec_address

    assert exec_address(["ip link set eth1 up", "ip addr add 10.0.0.5/24 dev eth1"]) == (
        ip_address("10.0.0.5")
    )
    six_first = ["ip -6 addr add fd00::5/64 dev eth1 nodad", "ip address add 10.0.0.6/24 dev eth1"]
    assert exec_address(six_first) == ip_address("10.0.0.6")
    assert exec_address(["ip a add fd00::7/64 dev eth1"]) == ip_address("fd00::7")
    assert exec_address(["ip route add default via 10.0.0.1", "echo 'ip addr add"]) is None


def etcd_lab(tmp_path: Path, exec_steps: dict[str, list[str]]) -> Path:
    nodes = {
        name: {"kind": "linux", "image": "quay.io/coreos/etcd:v3.5.17", "exec": steps}
        for name, steps in exec_steps.items()
    }
    path = tmp_path / "e.clab.yml"
    path.write_text(yaml.safe_dump({"name": "e", "topology": {"nodes": nodes}}))
    return path


def test_an_etcd_node_needs_an_underlay_address(tmp_path: Path) -> None:
    path = etcd_lab(tmp_path, {"etcd1": ["ip link set eth1 up"]})
    with pytest.raises(TopologyError, match=r"topology.nodes.etcd1.exec: .* runs etcd"):
        load_topology(path, lab_root=tmp_path)


def test_etcd_members_form_one_cluster_on_their_underlay_addresses(tmp_path: Path) -> None:
    from l3fabric.lab import etcd

    steps = {f"e{i}": [f"ip addr add 198.18.0.24{i}/24 dev eth1"] for i in (1, 2)}
    steps["e3"] = ["ip addr add fd00::243/64 dev eth1"]
    topo = load_topology(etcd_lab(tmp_path, steps), lab_root=tmp_path)
    members = topo.etcd_members()
    assert [(m.name, m.client_url) for m in members] == [
        ("e1", "http://198.18.0.241:2379"),
        ("e2", "http://198.18.0.242:2379"),
        ("e3", "http://[fd00::243]:2379"),
    ]
    argv = etcd.argv(members[1], members, "e")
    assert argv[0] == "etcd" and "--name=e2" in argv
    assert "--data-dir=/var/lib/etcd/e2" in argv
    assert "--listen-client-urls=http://198.18.0.242:2379,http://127.0.0.1:2379" in argv
    assert "--listen-peer-urls=http://198.18.0.242:2380" in argv
    assert (
        "--initial-cluster=e1=http://198.18.0.241:2380,e2=http://198.18.0.242:2380,"
        "e3=http://[fd00::243]:2380"
    ) in argv
    assert "--initial-cluster-token=e" in argv and "--initial-cluster-state=new" in argv
    # The data directory is the node's own, in the lab's state directory.
    plan = plan_mounts(
        topo.node("e1"), LabPaths(tmp_path, "e"), daemons.PRIVATE_DIRS[ImageKind.ETCD]
    )
    (bind,) = [b for b in plan.binds if b.target == PurePosixPath("/var/lib/etcd")]
    assert LabPaths(tmp_path, "e").dir in bind.source.parents


def test_etcd_and_then_agents_start_after_the_exec_steps(tmp_path: Path) -> None:
    topo = load_topology(CLAB / "etcd-fabric.clab.yml", lab_root=tmp_path)
    first, later = daemons.start_order(topo)
    assert {n.name for n in first} == {"rr1", "rr2"}
    assert [[n.name for n in group] for group in later] == [
        ["etcd1", "etcd2", "etcd3"],
        [f"node{i}" for i in range(1, 7)],
    ]
    plain = load_topology(CLAB / "route-reflectors.clab.yml", lab_root=tmp_path)
    first, later = daemons.start_order(plain)
    assert later == [] and {n.name for n in first} == {"rr1", "rr2"} | {
        f"node{i}" for i in range(1, 5)
    }


def test_etcd_fabric_nodes_use_the_three_members(tmp_path: Path) -> None:
    from l3fabric.config import load_config

    topo = load_topology(CLAB / "etcd-fabric.clab.yml", lab_root=tmp_path)
    urls = tuple(m.client_url for m in topo.etcd_members())
    assert len(urls) == 3
    agents = [n for n in topo.nodes if n.image_kind is ImageKind.L3FABRIC]
    assert len(agents) == 6
    for node in agents:
        source = node.bound_source("/etc/l3fabric/node.yaml")
        assert source is not None
        datastore = load_config(str(source)).datastore
        assert datastore.type == "etcd" and datastore.endpoints == urls


def test_keeper_policy_and_backoff() -> None:
    from l3fabric.lab import keeper

    assert keeper.should_restart("on-failure", 1) and keeper.should_restart("on-failure", -9)
    assert not keeper.should_restart("on-failure", 0) and not keeper.should_restart("no", 1)
    assert keeper.should_restart("always", 0)
    assert [keeper.backoff(i) for i in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert keeper.describe_exit(-9) == "signal SIGKILL" and keeper.describe_exit(3) == "code 3"


def test_lab_logs_selection_and_follow(tmp_path: Path) -> None:
    import io

    from l3fabric.lab import nodefiles

    files = {n: tmp_path / f"{n}.log" for n in ("holder", "frr-zebra", "frr-bgpd")}
    for name, path in files.items():
        path.write_text(f"{name} 1\n")
    assert [w for w, _ in nodefiles.select_logs(files, "frr", "s1")] == ["frr-zebra", "frr-bgpd"]
    assert [w for w, _ in nodefiles.select_logs(files, None, "s1")] == ["frr-zebra", "frr-bgpd"]
    with pytest.raises(LabError, match=r"has no agent log .*frr, frr-bgpd"):
        nodefiles.select_logs(files, "agent", "s1")
    out = io.StringIO()
    rounds = iter(range(3))

    def stop() -> bool:
        step = next(rounds, None)
        if step == 0:
            with open(files["frr-bgpd"], "a") as f:
                f.write("bgpd 2\n")
        elif step == 1:
            files["frr-bgpd"].write_text("new\n")  # truncated: read from the start
        return step is None

    nodefiles.show_logs([("frr-bgpd", files["frr-bgpd"])], out, follow=True, stop=stop, interval=0)
    assert out.getvalue() == "frr-bgpd 1\nbgpd 2\nnew\n"


def test_stale_single_file_bind_is_reported(tmp_path: Path) -> None:
    from l3fabric.lab import nodefiles
    from l3fabric.lab.topology import Bind

    conf = tmp_path / "node.yaml"
    conf.write_text("x\n")
    st = conf.stat()
    node = Node(
        "n1", "linux", "l3fabric/node", (Bind(conf, PurePosixPath("/etc/l3fabric/node.yaml")),)
    )
    same = nodefiles.stale_binds(node, 1, lambda _h, _t: f"{st.st_dev}:{st.st_ino}")
    assert same == []
    (stale,) = nodefiles.stale_binds(node, 1, lambda _h, _t: f"{st.st_dev}:{st.st_ino + 1}")
    assert stale.target == "/etc/l3fabric/node.yaml" and "replaced" in stale.message("n1")


def test_exec_of_an_agent_command_in_a_node_without_agent() -> None:
    from l3fabric.lab import nodefiles

    leaf = Node("leaf1", "linux", "l3fabric/bird:2")
    reason = nodefiles.not_an_agent(leaf, ["l3fabric", "status"])
    assert reason is not None and "leaf1 is a bird node" in reason and "birdc" in reason
    assert nodefiles.not_an_agent(leaf, ["python3", "-m", "l3fabric.cli", "--debug", "routes"])
    assert nodefiles.not_an_agent(leaf, ["l3fabric", "bird", "render", "--help"]) is None
    assert nodefiles.not_an_agent(leaf, ["l3fabric", "status", "--socket", "/x"]) is None
    assert nodefiles.not_an_agent(leaf, ["birdc", "show", "status"]) is None
    agent = Node("node1", "linux", "l3fabric/node")
    assert nodefiles.not_an_agent(agent, ["l3fabric", "status"]) is None


def test_inspect_of_a_lab_never_deployed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, lab({"a": HOST}))
    code = cli_lab.main(["lab", "inspect", str(path), "--lab-root", str(tmp_path / "labs")])
    assert code == 1
    assert "lab t is not deployed" in capsys.readouterr().err


def test_unreachable_agent_hint_is_separate() -> None:
    from l3fabric import control

    exc = control.AgentUnreachable(Path("/x/agent.sock"), "no such socket")
    brief = "cannot reach the l3fabric agent at /x/agent.sock: no such socket"
    assert str(exc) == exc.brief == brief
    assert exc.message == f"{exc.brief} {control.UNREACHABLE_HINT}"  # what the CLI prints
