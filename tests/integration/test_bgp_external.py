"""External peering: nodes in their own AS peer eBGP with a ToR, BIRD or FRR.

Topology (one LAN 198.18.0.0/24 + fd00:198:18::/64):

    node1 (AS 65001) --+
                       +-- tor (AS 65100) -- ext host 198.19.100.2
    node2 (AS 65002) --+

The ToR learns the workload routes and forwards; the nodes learn the ToR's
subnet (allowed by import policy) and each other's workloads through it.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRole
from tests.integration.agentlab import AgentNode, make_node, start_agent
from tests.integration.birdlab import lan, start_bird
from tests.integration.frrlab import frr_available, start_frr
from tests.nettools import Namespaces, Processes, assert_never, ns_run, wait_for

pytestmark = pytest.mark.integration

ip, net = ipaddress.ip_address, ipaddress.ip_network
TOR_AS = 65100
TOR = ("198.18.0.254", "fd00:198:18::254")
EXT_NETS = ("198.19.100.0/24", "fd00:198:19:100::/64")
EXT_HOST = ("198.19.100.2", "fd00:198:19:100::2")
NODE_AS = {1: 65001, 2: 65002}


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def bird_tor(password: str | None = None) -> BirdConfig:
    peers = tuple(
        BirdPeer(f"node{i}_v{v}", ip(addr), asn, password=password)
        for i, asn in NODE_AS.items()
        for v, addr in ((4, f"198.18.0.{i}"), (6, f"fd00:198:18::{i}"))
    )
    return BirdConfig(
        role=BirdRole.TOR,
        router_id=ipaddress.IPv4Address(TOR[0]),
        asn=TOR_AS,
        peers=peers,
        accept_prefixes=(net("100.64.0.0/16"), net("fd00:64::/48"), *map(net, EXT_NETS)),
        hold_time=9,
        keepalive=3,
    )


def frr_tor() -> str:
    neighbors = "".join(
        f" neighbor {addr} remote-as {asn}\n"
        for i, asn in NODE_AS.items()
        for addr in (f"198.18.0.{i}", f"fd00:198:18::{i}")
    )
    activate4 = "".join(f"  neighbor 198.18.0.{i} activate\n" for i in NODE_AS)
    activate6 = "".join(f"  neighbor fd00:198:18::{i} activate\n" for i in NODE_AS)
    return (
        "frr defaults datacenter\nhostname tor\n"
        f"router bgp {TOR_AS}\n bgp router-id {TOR[0]}\n no bgp ebgp-requires-policy\n"
        " no bgp default ipv4-unicast\n timers bgp 3 9\n"
        f"{neighbors}"
        f" address-family ipv4 unicast\n  network {EXT_NETS[0]}\n{activate4}"
        " exit-address-family\n"
        f" address-family ipv6 unicast\n  network {EXT_NETS[1]}\n{activate6}"
        " exit-address-family\n"
    )


def node_bgp(password: str | None = None) -> dict[str, Any]:
    peers: list[dict[str, Any]] = [
        {"address": addr, "asn": TOR_AS, "role": "external"} for addr in TOR
    ]
    if password:
        for peer in peers:
            peer["password"] = password
    return {
        "mesh": False,
        "hold_time": 9,
        "peers": peers,
        "import_policy": {"allowed_prefixes": list(EXT_NETS)},
    }


def build(
    netns: Namespaces, tmp_path: Path, node_password: str | None = None
) -> tuple[list[AgentNode], str, str]:
    nodes_ns = [netns.add("n") for _ in NODE_AS]
    tor, ext = netns.add("tor"), netns.add("ext")
    lan(
        netns,
        [(ns, [f"198.18.0.{i}/24", f"fd00:198:18::{i}/64"]) for i, ns in enumerate(nodes_ns, 1)]
        + [(tor, [f"{TOR[0]}/24", f"{TOR[1]}/64"])],
    )
    netns.link(
        tor,
        ext,
        ["198.19.100.1/24", "fd00:198:19:100::1/64"],
        [f"{EXT_HOST[0]}/24", f"{EXT_HOST[1]}/64"],
        names=("eth2", "eth1"),
    )
    ns_run(ext, ["ip", "route", "add", "default", "via", "198.19.100.1"])
    ns_run(ext, ["ip", "-6", "route", "add", "default", "via", "fd00:198:19:100::1"])
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        ns_run(tor, ["sysctl", "-qw", key])
    nodes = [
        make_node(
            netns,
            tmp_path,
            f"node{i}",
            i,
            store=tmp_path / "store",
            ns=ns,
            asn=NODE_AS[i],
            extra={"bgp": node_bgp(node_password)},
        )
        for i, ns in enumerate(nodes_ns, 1)
    ]
    return nodes, tor, ext


@pytest.mark.parametrize("tor_kind", ["bird", "frr"])
def test_external_tor_exchanges_routes_and_forwards(
    tor_kind: str, netns: Namespaces, procs: Processes, tmp_path: Path, shared_tmp: Path
) -> None:
    if tor_kind == "bird" and shutil.which("bird") is None:
        pytest.skip("BIRD 2 is not installed")
    if tor_kind == "frr" and not frr_available():
        pytest.skip("FRR is not installed")
    nodes, tor, ext = build(netns, tmp_path)
    if tor_kind == "bird":
        start_bird(procs, tor, bird_tor(), tmp_path, "tor")
    else:
        start_frr(procs, tor, frr_tor(), shared_tmp, "tor")
    for node in nodes:
        start_agent(procs, node)
    for node in nodes:
        wait_for(
            lambda n=node: n.peer_states() == {TOR[0]: "Established", TOR[1]: "Established"},
            timeout=40,
            what=f"{node.name} Established with the {tor_kind} ToR",
        )
    workloads = []
    for node in nodes:
        wl = netns.add("w")
        workloads.append(
            (wl, node.cli_json("workload", "add", f"w{node.name}", "--netns", wl)["addresses"])
        )
    (w1, addrs1), (w2, addrs2) = workloads

    # ToR -> nodes: its subnet, accepted because import policy allows it.
    for node in nodes:
        try:
            wait_for(
                lambda n=node: (
                    {r["prefix"] for r in n.cli_json("routes")["routes"]} >= set(EXT_NETS)
                ),
                timeout=20,
                what=f"{node.name} installs the ToR's subnets",
            )
        except AssertionError as exc:
            received = node.cli("routes", "--received").stdout
            raise AssertionError(f"{exc}\nreceived:\n{received}\n{node.log_tail()}") from None
    # Nodes -> ToR -> nodes: workload traffic crosses, both families.
    for src, dst in ((w1, addrs2), (w2, addrs1), (w1, EXT_HOST), (w2, EXT_HOST)):
        for address in dst:
            wait_for(
                lambda s=src, a=address: ok(s, "ping", "-c", "1", "-W", "1", a),
                timeout=20,
                what=f"ping {address} through the {tor_kind} ToR",
            )
    # The external host can open connections to a workload (no NAT on the way).
    assert ok(ext, "ping", "-c", "1", "-W", "1", addrs1[0])
    received = nodes[0].cli_json("routes", "--received", "--prefix", f"{addrs2[0]}/32")["routes"]
    assert [r["as_path"] for r in received] == [[TOR_AS, NODE_AS[2]]]


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed")
def test_wrong_md5_password_keeps_session_down_and_says_why(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    nodes, tor, _ext = build(netns, tmp_path, node_password="not-the-tor-password")
    start_bird(procs, tor, bird_tor(password="the-tor-password"), tmp_path, "tor")
    node = nodes[0]
    start_agent(procs, node)
    # A session with matching passwords comes up within seconds here (see
    # the tests above); give this one several connect-retry rounds.
    assert_never(
        lambda: "Established" in node.peer_states().values(),
        duration=12,
        what="a session with a mismatched MD5 password coming up",
    )
    peers = node.status()["peers"]
    assert {p["state"] for p in peers} != {"Established"}
    assert all("MD5" in p["info"] for p in peers), peers
    assert node.cli("status", check=False).returncode == 1


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed")
def test_a_peer_that_says_goodbye_takes_its_routes_with_it_despite_graceful_restart(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    """`birdc disable` sends a Cease NOTIFICATION: RFC 4724 keeps routes as
    stale only for a session that ends without one, so the node drops the
    ToR's routes at once rather than after the 120 s restart time."""
    nodes, tor, _ext = build(netns, tmp_path)
    node = nodes[0]
    bgp = node_bgp()
    bgp["graceful_restart"] = {"enabled": True, "restart_time": 120}
    node = make_node(
        netns,
        tmp_path,
        "node1",
        1,
        store=tmp_path / "store",
        ns=node.netns,
        asn=NODE_AS[1],
        extra={"bgp": bgp},
    )
    bird = start_bird(procs, tor, bird_tor(), tmp_path, "tor")
    start_agent(procs, node)

    def installed() -> set[str]:
        return {r["prefix"] for r in node.cli_json("routes")["routes"]} & set(EXT_NETS)

    wait_for(lambda: installed() == set(EXT_NETS), timeout=40, what="ToR subnets installed")
    (protocol,) = [name for name in bird.established() if name.endswith("node1_v4")]
    bird.cli("disable", protocol)
    # Well inside the restart time: a stale-kept route would still be here.
    wait_for(lambda: installed() == {EXT_NETS[1]}, timeout=15, what="v4 routes gone at once")
    (peer,) = [p for p in node.status()["peers"] if p["peer"] == TOR[0]]
    assert peer["state"] != "Established"
    assert peer["received"] == 0
