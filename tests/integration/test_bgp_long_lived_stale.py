"""Both BIRD route reflectors are lost under
bgp.graceful_restart.long_lived_stale_time, one crashed (SIGKILL: its TCP
connections close without a NOTIFICATION) and one frozen (SIGSTOP, like a
host that died or was cut off: the nodes' hold timers expire). The nodes keep
each other's routes past the restart time, as long-lived stale, and the
workloads keep talking; when the reflectors return the routes are fresh."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

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
HOLD_TIME = 9
# Shorter than the hold time: the frozen reflector's restart time begins (when
# its hold timer expires) after the crashed one's routes went long-lived
# stale, and ends long before theirs, so the agent must keep to the earlier
# deadline.
RESTART_TIME = 5
LONG_LIVED_STALE_TIME = 600  # far longer than the test: nothing may be swept by time


def reflector(name: str) -> BirdConfig:
    other = next(n for n in RR if n != name)
    return BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=ipaddress.IPv4Address(RR[name][0]),
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
        hold_time=HOLD_TIME,
        keepalive=3,
    )


def pings(ns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def kernel_route(node: AgentNode, prefix: str) -> str:
    return ns_run(node.netns, ["ip", "route", "show", prefix, "proto", "76"]).strip()


def received(node: AgentNode, prefix: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = node.cli_json("routes", "--received", "--prefix", prefix)["routes"]
    return rows


def restart_state(node: AgentNode, peer: str) -> dict[str, Any]:
    """`status --peer` (exit 1 only says the session is not Established)."""
    out = node.cli("status", "--peer", peer, "-o", "json", check=False).stdout
    gr: dict[str, Any] = json.loads(out)["peer"]["graceful_restart"]
    return gr


def wait_state(node: AgentNode, prefix: str, wanted: str, timeout: float) -> None:
    """Until every path `node` holds for `prefix` is in state `wanted` (and it
    holds one from each reflector); the failure says what it holds."""
    try:
        wait_for(
            lambda: states(node, prefix) == {wanted} and len(received(node, prefix)) == len(RR),
            timeout=timeout,
            what=f"{node.name}: {prefix} {wanted}",
        )
    except AssertionError as exc:
        held = [(r["peer"], r["state"]) for r in received(node, prefix)]
        raise AssertionError(
            f"{exc}\nholds {held}\npeers {node.peer_states()}\n{node.log_tail(60)}"
        ) from None


def states(node: AgentNode, prefix: str) -> set[str]:
    return {r["state"] for r in received(node, prefix)}


def test_routes_outlive_both_reflectors_as_long_lived_stale(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    node_ns = [netns.add("n") for _ in range(2)]
    rr_ns = {name: netns.add(name) for name in RR}
    lan(
        netns,
        [(ns, [f"198.18.0.{i}/24", f"fd00:198:18::{i}/64"]) for i, ns in enumerate(node_ns, 1)]
        + [(rr_ns[name], [f"{v4}/24", f"{v6}/64"]) for name, (v4, v6) in RR.items()],
    )
    birds: dict[str, Bird] = {
        name: start_bird(procs, rr_ns[name], reflector(name), tmp_path, name) for name in RR
    }
    bgp = {
        "mesh": False,
        "hold_time": HOLD_TIME,
        "graceful_restart": {
            "enabled": True,
            "restart_time": RESTART_TIME,
            "long_lived_stale_time": LONG_LIVED_STALE_TIME,
        },
        "peers": [
            {"address": address, "asn": 64512, "role": "route-reflector"}
            for pair in RR.values()
            for address in pair
        ],
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
            timeout=60,
            what=f"{node.name}: 4 sessions to the reflectors",
        )
    workloads = []
    for node in nodes:
        wl = netns.add("w")
        addrs = node.cli_json("workload", "add", f"w-{node.name}", "--netns", wl)["addresses"]
        workloads.append((wl, addrs[0]))
    (wl1, addr1), (wl2, addr2) = workloads
    wait_for(lambda: pings(wl2, addr1) and pings(wl1, addr2), timeout=30, what="reachability")
    prefix1, prefix2 = f"{addr1}/32", f"{addr2}/32"
    wait_state(nodes[1], prefix1, "fresh", timeout=30)

    # rr1 crashes, rr2 freezes: graceful restart, then long-lived stale once
    # the restart time has ended (for rr2 after the hold time).
    procs.stop(birds["rr1"].proc, signal.SIGKILL)
    os.killpg(birds["rr2"].proc.pid, signal.SIGSTOP)
    for node, prefix in ((nodes[1], prefix1), (nodes[0], prefix2)):
        wait_state(node, prefix, "long-lived-stale", timeout=HOLD_TIME + RESTART_TIME + 60)
        assert kernel_route(node, prefix), f"{node.name} lost {prefix}:\n{node.log_tail()}"
    # The data plane never depended on the reflectors: still forwarding.
    wait_for(lambda: pings(wl2, addr1) and pings(wl1, addr2), timeout=30, what="pings, RRs down")
    for address in (RR["rr1"][0], RR["rr2"][0]):
        gr = restart_state(nodes[1], address)
        assert gr["state"] == "long-lived stale", (address, gr)
        assert gr["long_lived_stale_time"] == LONG_LIVED_STALE_TIME
        assert gr["long_lived_stale_routes"] >= 1
    text = nodes[1].cli("routes", "--received", "--prefix", prefix1).stdout
    assert "long-lived stale" in text, text

    # The reflectors return: the nodes send their routes again, the
    # reflectors reflect them, and End-of-RIB sweeps whatever was not resent.
    procs.stop(birds["rr2"].proc, signal.SIGKILL)
    for name in RR:
        birds[name] = start_bird(procs, rr_ns[name], reflector(name), tmp_path, f"{name}b")
    for node in nodes:
        wait_for(
            lambda n=node: set(n.peer_states().values()) == {"Established"},
            timeout=60,
            what=f"{node.name}: sessions to the returned reflectors",
        )
    for node, prefix in ((nodes[1], prefix1), (nodes[0], prefix2)):
        wait_state(node, prefix, "fresh", timeout=60)
        assert kernel_route(node, prefix), f"{node.name} lost {prefix}:\n{node.log_tail()}"
        gr = restart_state(node, RR["rr1"][0])
        assert (gr["stale_routes"], gr["long_lived_stale_routes"]) == (0, 0), gr
    wait_for(lambda: pings(wl2, addr1) and pings(wl1, addr2), timeout=30, what="pings, RRs back")
