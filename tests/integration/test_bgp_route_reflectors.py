"""Four nodes peering only with two BIRD route reflectors."""

from __future__ import annotations

import ipaddress
import itertools
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRange, BirdRole
from tests.integration.agentlab import AgentNode, make_node, start_agent
from tests.integration.birdlab import Bird, lan, start_bird
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
]

ip, net = ipaddress.ip_address, ipaddress.ip_network
RR = {"rr1": ("198.18.0.250", "fd00:198:18::250"), "rr2": ("198.18.0.251", "fd00:198:18::251")}
GR_TIME = 4


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def reflector(name: str) -> BirdConfig:
    v4, _v6 = RR[name]
    other = next(n for n in RR if n != name)
    return BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=ipaddress.IPv4Address(v4),
        asn=64512,
        cluster_id=ipaddress.IPv4Address("198.18.0.254"),
        peers=(
            BirdPeer(f"{other}_v4", ip(RR[other][0]), 64512),
            BirdPeer(f"{other}_v6", ip(RR[other][1]), 64512),
        ),
        ranges=(
            BirdRange(net("198.18.0.0/24"), 64512, rr_client=True, name="nodes4"),
            BirdRange(net("fd00:198:18::/64"), 64512, rr_client=True, name="nodes6"),
        ),
        hold_time=9,
        keepalive=3,
    )


def reachable(pairs: list[tuple[str, str]]) -> bool:
    return all(ok(src, "ping", "-c", "1", "-W", "1", dst) for src, dst in pairs)


def test_four_nodes_two_reflectors(netns: Namespaces, procs: Processes, tmp_path: Path) -> None:
    node_ns = [netns.add("n") for _ in range(4)]
    rr_ns = {name: netns.add(name) for name in RR}
    lan(
        netns,
        [(ns, [f"198.18.0.{i}/24", f"fd00:198:18::{i}/64"]) for i, ns in enumerate(node_ns, 1)]
        + [(rr_ns[name], [f"{v4}/24", f"{v6}/64"]) for name, (v4, v6) in RR.items()],
    )
    birds: dict[str, Bird] = {
        name: start_bird(procs, rr_ns[name], reflector(name), tmp_path, name) for name in RR
    }
    peers = [
        {"address": address, "asn": 64512, "role": "route-reflector"}
        for pair in RR.values()
        for address in pair
    ]
    bgp = {
        "mesh": False,
        "hold_time": 9,
        "graceful_restart": {"enabled": True, "restart_time": GR_TIME},
        "peers": peers,
    }
    nodes: list[AgentNode] = []
    for i, ns in enumerate(node_ns, 1):
        node = make_node(
            netns, tmp_path, f"node{i}", i, store=tmp_path / "store", ns=ns, extra={"bgp": bgp}
        )
        start_agent(procs, node)
        nodes.append(node)
    for node in nodes:
        wait_for(
            lambda n=node: set(n.peer_states().values()) == {"Established"},
            timeout=40,
            what=f"{node.name}: 4 sessions to the reflectors",
        )

    workloads = []
    for node in nodes:
        wl = netns.add("w")
        addrs = node.cli_json("workload", "add", f"w-{node.name}", "--netns", wl)["addresses"]
        workloads.append((wl, addrs))
    pairs = [
        (src, dst)
        for (src, _), (_, dst_addrs) in itertools.permutations(workloads, 2)
        for dst in dst_addrs
    ]
    wait_for(lambda: reachable(pairs), timeout=20, what="full reachability")

    # Node 2 learned node 1's route from both reflectors, with one next hop.
    v4_of_1 = workloads[0][1][0]
    received = nodes[1].cli_json("routes", "--received", "--prefix", f"{v4_of_1}/32")["routes"]
    assert {r["peer"] for r in received} == {RR["rr1"][0], RR["rr2"][0]}
    assert {r["next_hop"] for r in received} == {"198.18.0.1"}
    route = ns_run(nodes[1].netns, ["ip", "route", "show", f"{v4_of_1}/32"])
    assert route.split()[:3] == [v4_of_1, "via", "198.18.0.1"], route

    # One reflector SIGKILLed under a 10 ms ping from node2's workload to
    # node1's, until node2's hold timer ends the session and drops rr1's
    # paths: not one is lost (the other reflector's paths were there).
    ping = subprocess.Popen(
        ["ip", "netns", "exec", workloads[1][0], "ping", "-q", "-i", "0.01", "-c", "2000", v4_of_1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        procs.stop(birds["rr1"].proc, signal.SIGKILL)
        wait_for(
            lambda: nodes[1].peer_states()[RR["rr1"][0]] != "Established",
            timeout=15,
            what="node2 notices rr1 is gone",
        )
        assert ping.poll() is None, "the ping ended before node2 dropped rr1"
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    assert " 2000 received" in out, out
    assert reachable(pairs)

    # Both down: the routes go once the graceful-restart time has passed.
    procs.stop(birds["rr2"].proc)
    wait_for(
        lambda: ns_run(nodes[1].netns, ["ip", "route", "show", f"{v4_of_1}/32"]).strip() == "",
        timeout=GR_TIME + 15,
        what="learned routes removed after both reflectors died",
    )
    assert not ok(workloads[1][0], "ping", "-c", "1", "-W", "1", v4_of_1)

    # One comes back: so does everything.
    birds["rr2"] = start_bird(procs, rr_ns["rr2"], reflector("rr2"), tmp_path, "rr2b")
    wait_for(lambda: reachable(pairs), timeout=40, what="reachability after rr2 returned")
