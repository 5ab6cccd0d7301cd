"""Faults of the fabric's own parts, with packets counted: a 10 ms ping
between workloads on two nodes runs through each fault and must lose none.
docs/reliability.md lists the faults and what the fabric does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
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
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PINGS = 600  # 6 s at 10 ms: the fault and the recovery happen inside it


def learned(ns: str, address: str) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", "-4", "route", "show", "proto", "76"],
        capture_output=True,
        text=True,
    ).stdout
    return f"{address} via" in out


def lost_packets_during(src_ns: str, address: str, fault: Callable[[], None]) -> tuple[int, int]:
    """(sent, lost) of a 10 ms ping from src_ns to address while fault() runs."""
    ping = subprocess.Popen(
        ["ip", "netns", "exec", src_ns, "ping", "-q", "-i", "0.01", "-c", str(PINGS), address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fault()
        out, _ = ping.communicate(timeout=60)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert match, out
    sent, received = int(match[1]), int(match[2])
    return sent, sent - received


@pytest.fixture
def fabric(netns: Namespaces, procs: Processes, tmp_path: Path) -> tuple[list[AgentNode], str, str]:
    bgp = {**MESH_BGP, "graceful_restart": {"enabled": True, "restart_time": 30}}
    a, b = start_mesh(netns, procs, tmp_path, extra=lambda index: {"bgp": bgp})
    wa, wb = netns.add("wa"), netns.add("wb")
    a.cli_json("workload", "add", "wa", "--netns", wa)
    vb = b.cli_json("workload", "add", "wb", "--netns", wb)["addresses"][0]
    wait_for(lambda: learned(a.netns, vb), timeout=15, what="wb's route on a")
    return [a, b], wa, vb


def test_agent_sigkill_and_restart_loses_nothing(
    fabric: tuple[list[AgentNode], str, str], procs: Processes, request: pytest.FixtureRequest
) -> None:
    (_a, b), wa, vb = fabric
    request.addfinalizer(lambda: stop_orphaned_speaker(b))

    def fault() -> None:
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGKILL)
        start_agent(procs, b)
        wait_for(lambda: b.status()["state"] == "ready", timeout=30, what="b ready again")

    sent, lost = lost_packets_during(wa, vb, fault)
    assert sent == PINGS and lost == 0


def test_exabgp_sigkill_loses_nothing(fabric: tuple[list[AgentNode], str, str]) -> None:
    (_a, b), wa, vb = fabric
    before = speaker_pid(b)

    def fault() -> None:
        assert before is not None
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: speaker_pid(b) not in (None, before), timeout=20, what="ExaBGP respawned")
        wait_for(
            lambda: all(p["state"] == "Established" for p in b.status()["peers"]),
            timeout=30,
            what="sessions back",
        )

    sent, lost = lost_packets_during(wa, vb, fault)
    assert sent == PINGS and lost == 0
