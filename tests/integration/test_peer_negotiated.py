"""`status --peer` on a real two-node mesh reports what each session's OPEN
exchange negotiated (from ExaBGP's negotiated message), beside what the node
offers: node1 offers a hold time of 9 s, node2 27 s, and both sessions of
both nodes run on the lower one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentlab import MESH_BGP, AgentNode, start_mesh
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

OFFERED = {1: 9, 2: 27}
NEGOTIATED_HOLD = min(OFFERED.values())
PEERS = {  # node index -> its peer's addresses, with the one family each session carries
    1: (("198.18.0.2", "ipv4"), ("fd00:198:18::2", "ipv6")),
    2: (("198.18.0.1", "ipv4"), ("fd00:198:18::1", "ipv6")),
}


def _detail(node: AgentNode, peer: str) -> Any:
    # Exit 1 only says the session is not Established: the JSON is there.
    proc = node.cli("status", "--peer", peer, "-o", "json", check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["peer"]


def test_status_peer_reports_the_negotiated_hold_time_and_families(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    nodes = start_mesh(
        netns, procs, tmp_path, extra=lambda i: {"bgp": {**MESH_BGP, "hold_time": OFFERED[i]}}
    )
    for index, node in enumerate(nodes, start=1):
        for peer, family in PEERS[index]:
            detail = _detail(node, peer)
            assert detail["state"] == "Established", detail
            # The offer is this node's own configuration ...
            assert detail["hold_time"] == OFFERED[index]
            assert detail["families"] == [family]
            # ... the session runs on the lower hold time of the two.
            negotiated = detail["negotiated"]
            assert negotiated is not None, f"{node.name} -> {peer}: {detail}"
            assert negotiated["hold_time"] == NEGOTIATED_HOLD
            assert negotiated["keepalive_interval"] == NEGOTIATED_HOLD // 3
            assert negotiated["families"] == [f"{family} unicast"]
            assert negotiated["asn4"] is True
            assert negotiated["route_refresh"] in ("normal", "enhanced")
            assert negotiated["add_path"] == {"send": [], "receive": []}

    n1, n2 = nodes
    table = n2.cli("status", "--peer", "198.18.0.1").stdout
    assert f"hold time:        {NEGOTIATED_HOLD}s (keepalive 3s), offered 27s" in table
    assert "families:         ipv4 unicast, offered ipv4" in table

    # The session ends (node2's underlay link goes down until node1's hold
    # timer expires): node1 no longer shows a negotiated object; when the
    # session is back, it shows the new session's.
    ns_run(n2.netns, ["ip", "link", "set", "eth1", "down"])
    down = wait_for(
        lambda: (d := _detail(n1, "198.18.0.2"))["state"] != "Established" and d,
        timeout=30,
        what="node1's session to node2 down",
    )
    assert down["negotiated"] is None and down["hold_time"] == OFFERED[1]
    ns_run(n2.netns, ["ip", "link", "set", "eth1", "up"])
    back = wait_for(
        lambda: (d := _detail(n1, "198.18.0.2"))["state"] == "Established" and d,
        timeout=60,
        what="node1's session to node2 back",
    )
    assert back["negotiated"]["hold_time"] == NEGOTIATED_HOLD
    assert back["negotiated"]["families"] == ["ipv4 unicast"]
