"""Full mesh over real ExaBGP: workloads on two nodes reach each other over
routes learned by BGP, with no encapsulation and no NAT."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.agentlab import (
    MESH_BGP,
    AgentNode,
    speaker_pid,
    start_agent,
    start_mesh,
    stop_orphaned_speaker,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def proto76(ns: str, family: str) -> str:
    return ns_run(ns, ["ip", family, "route", "show", "proto", "76"])


def learned(ns: str, address: str) -> bool:
    """Whether `address` has a route via a gateway (learned) on this node."""
    family = "-6" if ":" in address else "-4"
    return any(
        line.split()[0] in (address, f"{address}/128") and " via " in line
        for line in proto76(ns, family).splitlines()
    )


@pytest.fixture
def mesh(netns: Namespaces, procs: Processes, tmp_path: Path) -> list[AgentNode]:
    return start_mesh(netns, procs, tmp_path)


def test_workloads_on_two_nodes_reach_each_other(mesh: list[AgentNode], netns: Namespaces) -> None:
    a, b = mesh
    wa, wb = netns.add("wa"), netns.add("wb")
    addr_a = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"]
    addr_b = b.cli_json("workload", "add", "wb", "--netns", wb)["addresses"]
    v4a, v6a = addr_a
    v4b, v6b = addr_b

    wait_for(
        lambda: f"{v4a} via 198.18.0.1" in proto76(b.netns, "-4"),
        timeout=10,
        what="v4 route learned on b",
    )
    wait_for(
        lambda: f"{v6a} via fd00:198:18::1" in proto76(b.netns, "-6"),
        timeout=10,
        what="v6 route learned on b",
    )
    for src, dst in ((wa, v4b), (wa, v6b), (wb, v4a), (wb, v6a)):
        wait_for(
            lambda s=src, d=dst: ok(s, "ping", "-c", "1", "-W", "1", d),
            timeout=10,
            what=f"ping {dst}",
        )
    # Each node reaches the other's workloads too.
    assert ok(a.netns, "ping", "-c", "1", "-W", "1", v4b)

    advertised = {r["prefix"] for r in a.cli_json("routes", "--advertised")["routes"]}
    assert advertised == {f"{v4a}/32", f"{v6a}/128"}
    received = b.cli_json("routes", "--received", "--peer", "198.18.0.1")["routes"]
    assert {(r["prefix"], r["next_hop"], r["accepted"]) for r in received} == {
        (f"{v4a}/32", "198.18.0.1", True)
    }
    peers = {p["peer"]: p for p in b.status()["peers"]}
    assert peers["198.18.0.1"]["received"] == 1 and peers["198.18.0.1"]["advertised"] == 1

    a.cli("workload", "del", "wa")
    wait_for(lambda: not learned(b.netns, v4a), timeout=10, what="route withdrawn on b")
    wait_for(lambda: not learned(b.netns, v6a), timeout=10, what="v6 withdrawn on b")


def test_exabgp_killed_is_restarted_and_routes_come_back(
    mesh: list[AgentNode], netns: Namespaces
) -> None:
    a, b = mesh
    wa = netns.add("wa")
    v4a = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"][0]
    wait_for(lambda: learned(b.netns, v4a), timeout=10, what="learned")
    pid = a.status()["exabgp_pid"]
    assert pid
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(
        lambda: a.status()["exabgp_pid"] not in (None, pid), timeout=20, what="ExaBGP restarted"
    )
    wait_for(
        lambda: all(p["state"] == "Established" for p in a.status()["peers"]),
        timeout=30,
        what="sessions back",
    )
    wait_for(lambda: learned(b.netns, v4a), timeout=20, what="route back on b")


def test_agent_restart_keeps_routes_on_peer(
    mesh: list[AgentNode], netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    """Graceful restart: b keeps a's routes while a's agent restarts, and
    never withdraws them from its kernel (a sends End-of-RIB only after it
    has replayed its routes)."""
    a, b = mesh
    wa, wb = netns.add("wa"), netns.add("wb")
    v4a = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"][0]
    v4b = b.cli_json("workload", "add", "wb", "--netns", wb)["addresses"][0]
    wait_for(lambda: learned(b.netns, v4a), timeout=10, what="learned")
    wait_for(lambda: learned(a.netns, v4b), timeout=10, what="learned on a")
    monitor_log = tmp_path / "monitor.log"
    monitor = procs.start(
        ["ip", "-4", "monitor", "route"], netns=b.netns, log_path=str(monitor_log)
    )
    # a's own kernel must keep b's route through a's restart too.
    monitor_a_log = tmp_path / "monitor-a.log"
    monitor_a = procs.start(
        ["ip", "-4", "monitor", "route"], netns=a.netns, log_path=str(monitor_a_log)
    )
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    a.proc.wait(timeout=15)
    wait_for(
        lambda: all(p["state"] != "Established" for p in b.status()["peers"]),
        timeout=15,
        what="b saw the sessions drop",
    )
    assert learned(b.netns, v4a), "b dropped a's route instead of keeping it as stale"
    received = b.cli_json("routes", "--received", "--peer", "198.18.0.1")["routes"]
    assert [r["stale"] for r in received] == [True]
    start_agent(procs, a)
    wait_for(
        lambda: (
            [
                r["stale"]
                for r in b.cli_json("routes", "--received", "--peer", "198.18.0.1")["routes"]
            ]
            == [False]
        ),
        timeout=30,
        what="a's route refreshed on b after a's End-of-RIB",
    )
    wait_for(lambda: a.status()["state"] == "ready", timeout=30, what="a ready again")
    a.cli("reconcile")  # a pass after the restart must not drop b's route either
    Processes.stop(monitor)
    Processes.stop(monitor_a)
    events = [line for line in monitor_log.read_text().splitlines() if v4a in line.split()]
    assert not [e for e in events if e.startswith("Deleted")], events
    assert learned(b.netns, v4a)
    events_a = [line for line in monitor_a_log.read_text().splitlines() if v4b in line.split()]
    assert not [e for e in events_a if e.startswith("Deleted")], events_a
    assert learned(a.netns, v4b)


ORPHAN_GR_TIME = 3


def test_a_dead_agents_exabgp_announces_for_the_restart_time_then_stops(
    netns: Namespaces, procs: Processes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The rule for an agent that dies and does not come back: its ExaBGP
    keeps the sessions (so a restart within the graceful-restart time loses
    nothing), then stops, and the peers drop the node's routes."""
    bgp = {**MESH_BGP, "graceful_restart": {"enabled": True, "restart_time": ORPHAN_GR_TIME}}
    a, b = start_mesh(netns, procs, tmp_path, extra=lambda index: {"bgp": bgp})
    request.addfinalizer(lambda: stop_orphaned_speaker(a))
    wa = netns.add("wa")
    v4a = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"][0]
    wait_for(lambda: learned(b.netns, v4a), timeout=10, what="learned")
    exabgp = speaker_pid(a)
    assert exabgp is not None and a.proc is not None
    os.kill(a.proc.pid, signal.SIGKILL)  # the agent alone, not its ExaBGP
    # Still announcing at first: the session stays up, the route stays.
    assert speaker_pid(a) == exabgp and learned(b.netns, v4a)
    wait_for(
        lambda: speaker_pid(a) is None,
        timeout=ORPHAN_GR_TIME + 15,
        what="the orphaned ExaBGP stopped",
    )
    wait_for(
        lambda: not learned(b.netns, v4a), timeout=ORPHAN_GR_TIME + 15, what="route dropped on b"
    )
