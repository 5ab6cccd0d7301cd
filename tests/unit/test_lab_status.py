"""`lab status`: the configs' AS and role, the agents' answers, the rows,
the exit rule and the table; `gather` with fake daemons (one silent)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from l3fabric.cli.lab_status import render_table
from l3fabric.lab import daemons, status
from l3fabric.lab.status import NodeReport, RouterConfig
from l3fabric.lab.topology import ImageKind, Node, load_topology

REPO = Path(__file__).resolve().parents[2]
CLAB = REPO / "containerlab"
MGMT_LAB = REPO / "tests" / "data" / "lab"


# -- configs -----------------------------------------------------------------------


def test_bird_leaf_reflects_and_speaks_ebgp() -> None:
    config = status.parse_bird_config((CLAB / "leaf-spine/leaf1/bird.conf").read_text())
    assert config.asn == 65101 and config.reflects and config.ebgp
    assert ("198.18.1.0/24", 65101) in config.neighbours
    assert ("198.18.100.1", 65000) in config.neighbours


def test_bird_route_reflector_is_ibgp_only() -> None:
    config = status.parse_bird_config((CLAB / "route-reflectors/rr1/bird.conf").read_text())
    assert config.asn == 64512 and config.reflects and not config.ebgp


def test_bird_comments_are_not_config() -> None:
    text = (
        "# rr client;\nprotocol bgp p {\n  local as 65001; # as 1\n"
        "  neighbor 10.0.0.2 as 65002;\n}\n"
    )
    config = status.parse_bird_config(text)
    assert config == RouterConfig(65001, (("10.0.0.2", 65002),), False)


def test_frr_spine_and_ranges() -> None:
    spine = status.parse_frr_config((CLAB / "leaf-spine/spine1/frr.conf").read_text())
    assert spine.asn == 65000 and spine.ebgp and not spine.reflects
    assert ("198.18.100.0", 65101) in spine.neighbours
    text = (
        "router bgp 64512\n neighbor RACK peer-group\n neighbor RACK remote-as internal\n"
        " bgp listen range 198.18.0.0/24 peer-group RACK\n"
        " address-family ipv4 unicast\n  neighbor RACK route-reflector-client\n"
        "! neighbor 1.2.3.4 remote-as 1\n"
    )
    rr = status.parse_frr_config(text)
    assert rr == RouterConfig(64512, (("198.18.0.0/24", None),), True, False)
    assert not rr.ebgp
    assert status.parse_frr_config("router bgp 1\n neighbor X remote-as external\n").ebgp


def test_gobgp_toml() -> None:
    text = (
        '[global.config]\n  as = 65010\n  router-id = "1.1.1.1"\n'
        '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "198.18.0.1"\n'
        "    peer-as = 65010\n  [neighbors.route-reflector.config]\n"
        "    route-reflector-client = true\n"
    )
    config = status.parse_gobgp_config(text)
    assert config == RouterConfig(65010, (("198.18.0.1", 65010),), True)


def test_roles_as_far_as_the_configs_tell() -> None:
    nodes = {"198.18.1.1", "198.18.0.1"}
    leaf = status.parse_bird_config((CLAB / "leaf-spine/leaf1/bird.conf").read_text())
    spine = status.parse_frr_config((CLAB / "leaf-spine/spine1/frr.conf").read_text())
    rr = status.parse_bird_config((CLAB / "route-reflectors/rr1/bird.conf").read_text())
    tor = status.parse_frr_config("router bgp 65000\n neighbor 198.18.0.1 remote-as 64512\n")
    peer = status.parse_bird_config((MGMT_LAB / "mgmt-lab/r1/bird.conf").read_text())
    assert status.role(ImageKind.BIRD, leaf, 1, nodes) == "leaf (route reflector)"
    assert status.role(ImageKind.FRR, spine, 2, nodes) == "spine"
    assert status.role(ImageKind.BIRD, rr, 2, nodes) == "route reflector"
    assert status.role(ImageKind.FRR, tor, 1, nodes) == "ToR"
    # An eBGP router beside no l3fabric node is no spine: nothing says so.
    assert status.role(ImageKind.BIRD, peer, 0, nodes) == "router"
    assert status.role(ImageKind.FRR, None, 2, nodes) == "router"
    assert status.role(ImageKind.L3FABRIC, None, 0, nodes) == "l3fabric node"
    assert status.role(ImageKind.ETCD, None, 1, nodes) == "etcd member"
    assert status.role(ImageKind.HOST, None, 1, nodes) == "host"


def test_every_image_kind_has_a_role_or_a_config_reader() -> None:
    for kind in ImageKind:
        assert kind in status.OTHER_ROLES or kind in status.SPEAKERS, kind


def test_router_config_and_asn_from_the_topology_binds(tmp_path: Path) -> None:
    topo = load_topology(CLAB / "leaf-spine.clab.yml", lab_root=tmp_path)
    config = status.router_config(topo.node("spine2"))
    assert config is not None and config.asn == 65000
    assert status.configured_asn(topo.node("node3")) == 65102
    assert status.router_config(topo.node("node1")) is None
    startup = load_topology(MGMT_LAB / "mgmt-lab.clab.yml", lab_root=tmp_path)
    r2 = status.router_config(startup.node("r2"))  # bound from startup-config
    assert r2 is not None and r2.asn == 65002


# -- agents and rows ---------------------------------------------------------------


AGENT_STATUS = {
    "node": "node1",
    "asn": 64512,
    "workloads": 2,
    "peers": [
        {"peer": "198.18.0.2", "name": "node2", "state": "Established"},
        {"peer": "fd00:198:18::2", "name": "node2", "state": "Active"},
    ],
}
PROGRAMMED = {
    "routes": [
        {"prefix": "100.64.0.64/32", "kind": "learned"},
        {"prefix": "100.64.0.1/32", "kind": "local"},
    ]
}
ADVERTISED = {"routes": [{"prefix": "100.64.0.1/32"}, {"prefix": "fd00:64::/128"}]}


def test_agent_answer_counts_as_fabric_status_does() -> None:
    answer = status.agent_answer("node1", AGENT_STATUS, PROGRAMMED, ADVERTISED)
    assert answer.asn == 64512 and answer.workloads == 2
    assert answer.routes_in == 1 and answer.routes_out == 2
    assert [s.established for s in answer.sessions] == [True, False]
    alone = status.agent_answer("n", {"peers": []}, {"routes": []}, None)
    assert alone.routes_out == 0 and alone.asn is None
    # Asked through the CLI inside the node: routes are not known.
    cli = status.agent_answer("node1", AGENT_STATUS, None, None)
    assert cli.routes_in is None and cli.routes_out is None


def _session(node: str, peer: str, state: str = "Established") -> daemons.Session:
    return daemons.Session(node, peer, state, "p")


def _healthy_reports() -> list[NodeReport]:
    return [
        NodeReport(
            "node1",
            ImageKind.L3FABRIC,
            "running",
            ("198.18.0.1",),
            64512,
            "l3fabric node",
            0,
            "agent",
            (_session("node1", "198.18.0.250"),),
            workloads=2,
            routes_in=3,
            routes_out=2,
        ),
        NodeReport(
            "rr1",
            ImageKind.BIRD,
            "running",
            ("198.18.0.250",),
            64512,
            "route reflector",
            1,
            "bird",
            (_session("rr1", "198.18.0.1"),),
        ),
        NodeReport("sw", ImageKind.HOST, "running", (), None, "host", 1),
    ]


def test_rows_have_fabric_status_fields_and_exit_zero_when_all_is_well() -> None:
    rows = [status.status_row(r) for r in _healthy_reports()]
    first = rows[0]
    for field in ("name", "asn", "state", "peers_up", "peers_total", "workloads"):
        assert field in first
    assert (first["peers_up"], first["peers_total"], first["routes_in"]) == (1, 1, 3)
    assert rows[2]["speaker"] is None and rows[2]["answers"] is None
    assert status.healthy(rows)
    table = render_table(rows)
    assert table.splitlines()[0].split() == [
        "NODE",
        "KIND",
        "ROLE",
        "STATE",
        "AS",
        "PEERS",
        "WORKLOADS",
        "ROUTES-IN",
        "ROUTES-OUT",
    ]
    assert "\n\n" not in table  # no notes


def test_a_silent_agent_is_a_row_that_says_so() -> None:
    reports = _healthy_reports()
    reports[0] = replace(
        reports[0],
        sessions=None,
        error="agent does not answer: cannot reach the l3fabric agent at /x: refused",
        workloads=None,
        routes_in=None,
        routes_out=None,
    )
    rows = [status.status_row(r) for r in reports]
    assert rows[0]["answers"] is False and rows[0]["peers_total"] is None
    assert not status.healthy(rows)
    table = render_table(rows)
    line = next(x for x in table.splitlines() if x.startswith("node1"))
    assert "no answer (agent)" in line and "unknown" in line
    assert "node1: agent does not answer: cannot reach" in table
    assert "rr1" in table  # the rest is still shown


def test_an_exited_daemon_or_a_session_down_exits_one() -> None:
    reports = _healthy_reports()
    exited = [NodeReport(**{**reports[1].__dict__, "state": "exited (bird)", "sessions": None})]
    rows = [status.status_row(r) for r in [reports[0], *exited]]
    assert not status.healthy(rows)
    assert "exited (bird)" in render_table(rows)
    down = NodeReport(**{**reports[1].__dict__, "sessions": (_session("rr1", "x", "Active"),)})
    rows = [status.status_row(r) for r in [reports[0], down]]
    assert not status.healthy(rows)
    assert "rr1: x (p) is Active" in render_table(rows)


def test_tiers_follow_link_distance() -> None:
    links = [("n1", "leaf"), ("leaf", "spine")]
    assert status.tiers(["n1", "leaf", "spine", "x"], links, {"n1"}) == {
        "n1": 0,
        "leaf": 1,
        "spine": 2,
        "x": 0,
    }


# -- gather, with fake daemons -----------------------------------------------------


@dataclass(frozen=True)
class FakeLab:
    topology: Any

    @property
    def name(self) -> str:
        return str(self.topology.name)

    def state(self) -> object:
        return object()

    def context(self, state: object, node: Node) -> Node:
        return node


def test_gather_keeps_going_past_a_silent_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topo = load_topology(CLAB / "two-nodes.clab.yml", lab_root=tmp_path)
    inspected = [
        {"node": "node1", "state": "running", "addresses": ["198.18.0.1/24"]},
        {"node": "node2", "state": "exited (agent)", "addresses": ["198.18.0.2/24"]},
    ]

    def ask(ctx: Node, timeout: float) -> status.AgentAnswer:
        if ctx.name == "node2":
            raise ConnectionRefusedError("refused")
        return status.agent_answer(ctx.name, AGENT_STATUS, PROGRAMMED, ADVERTISED)

    monkeypatch.setattr(status, "ask_agent", ask)
    reports = status.gather(FakeLab(topo), inspected=inspected)
    assert [r.name for r in reports] == ["node1", "node2"]
    one, two = reports
    assert one.workloads == 2 and one.answers and one.addresses == ("198.18.0.1",)
    assert two.answers is False and "refused" in two.error and two.sessions is None
    assert two.asn == 64512  # from its config, although its agent is gone
    assert {r.role for r in reports} == {"l3fabric node"}


def test_a_frozen_daemon_is_described_by_the_timeout() -> None:
    assert status._describe(subprocess.TimeoutExpired(["birdc"], 5), 5) == "no answer in 5s"
    assert status._describe(ConnectionRefusedError("refused"), 5) == "refused"
