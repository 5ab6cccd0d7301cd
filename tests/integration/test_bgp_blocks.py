"""advertise: blocks — nodes announce their IPAM blocks, plus /32s and /128s
for addresses they borrowed from another node's block (Calico's way)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.agentlab import MESH_BGP, start_mesh
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = pytest.mark.integration

# Two blocks of four addresses per family: node1 takes one, node2 the other,
# and node2's fifth workload has to borrow from node1's block.
POOLS = [
    {"cidr": "100.64.0.0/29", "block_size": 30},
    {"cidr": "fd00:64::/125", "block_size": 126},
]


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def test_blocks_and_borrowed_addresses(netns: Namespaces, procs: Processes, tmp_path: Path) -> None:
    n1, n2 = start_mesh(
        netns,
        procs,
        tmp_path,
        extra=lambda i: {"pools": POOLS, "bgp": {**MESH_BGP, "advertise": "blocks"}},
    )

    w1 = netns.add("w")
    a1 = n1.cli_json("workload", "add", "w1", "--netns", w1)["addresses"]
    on_n2 = []
    for i in range(5):
        ns = netns.add("w")
        on_n2.append((ns, n2.cli_json("workload", "add", f"w2-{i}", "--netns", ns)["addresses"]))
    borrowed_ns, borrowed = on_n2[-1]

    advertised_1 = {r["prefix"] for r in n1.cli_json("routes", "--advertised")["routes"]}
    advertised_2 = {r["prefix"] for r in n2.cli_json("routes", "--advertised")["routes"]}
    assert advertised_1 == {"100.64.0.0/30", "fd00:64::/126"}, advertised_1
    # node2: its own block, plus host routes for what it borrowed in node1's.
    assert advertised_2 == {
        "100.64.0.4/30",
        "fd00:64::4/126",
        f"{borrowed[0]}/32",
        f"{borrowed[1]}/128",
    }, advertised_2
    assert borrowed[0].startswith("100.64.0.") and int(borrowed[0].rsplit(".", 1)[1]) < 4

    # node2 accepts node1's block although it covers an address node2 borrowed.
    received = n2.cli_json("routes", "--received", "--prefix", "100.64.0.0/30")["routes"]
    assert [(r["prefix"], r["accepted"]) for r in received] == [("100.64.0.0/30", True)]

    # Everyone reaches everyone, the borrowed workload included.
    pairs = [(w1, a) for _, addrs in on_n2 for a in addrs] + [
        (ns, a) for ns, _ in on_n2 for a in a1
    ]
    pairs += [(borrowed_ns, a) for a in a1]
    for src, dst in pairs:
        wait_for(
            lambda s=src, d=dst: ok(s, "ping", "-c", "1", "-W", "1", d),
            timeout=15,
            what=f"ping {dst}",
        )
