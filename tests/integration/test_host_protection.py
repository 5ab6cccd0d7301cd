"""Workloads may not reach the node's own services (the agent's metrics and
health listener, BGP): our nftables table refuses them on workload
interfaces, while ping and anything the node started stay possible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.agentlab import AgentNode, make_node, start_agent
from tests.nettools import Namespaces, Processes, ns_run

pytestmark = pytest.mark.integration

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc)
"""


def connect(ns: str, address: str, port: int) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, address, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


@pytest.fixture
def node(netns: Namespaces, procs: Processes, tmp_path: Path) -> AgentNode:
    made = make_node(
        netns,
        tmp_path,
        "node",
        1,
        store=tmp_path / "store",
        extra={"metrics": {"listen": "0.0.0.0:9641"}},
    )
    start_agent(procs, made)
    return made


def test_workloads_cannot_reach_the_agents_ports(node: AgentNode, netns: Namespaces) -> None:
    w = netns.add("w")
    node.cli_json("workload", "add", "w", "--netns", w)
    # The node itself reaches its metrics; a workload is refused, v4 and v6.
    assert connect(node.netns, "198.18.0.1", 9641) == "open"
    assert connect(w, "198.18.0.1", 9641) == "refused"
    assert connect(w, "fd00:198:18::1", 9641) == "refused"
    assert connect(w, "198.18.0.1", 179) == "refused"
    # ICMP to the node stays allowed.
    ns_run(w, ["ping", "-c", "1", "-W", "2", "198.18.0.1"])
    table = ns_run(node.netns, ["nft", "-s", "list", "table", "inet", "l3fabric"])
    assert "9641" in table and "179" in table
    # Workloads of other nodes arrive routed, from a pool address: refused too.
    assert "ip saddr 100.64.0.0/16" in table and "ip6 saddr fd00:64::/48" in table
    # Applying it again changes nothing (one table, same rules).
    node.cli("reconcile")
    assert ns_run(node.netns, ["nft", "-s", "list", "table", "inet", "l3fabric"]) == table
    assert "nat" not in ns_run(node.netns, ["nft", "list", "ruleset"])
