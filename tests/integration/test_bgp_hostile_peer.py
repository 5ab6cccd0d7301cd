"""A hostile external peer: hijack attempts and a prefix flood.

The peer is a BIRD instance announcing static routes: a /32 equal to a local
workload, a default route, and later more prefixes than max-prefix allows.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.agentlab import make_node, start_agent
from tests.nettools import Namespaces, Processes, ns_run, run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
]

VICTIM = "100.64.0.10"
MAX_PREFIXES = 20


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def hostile_config(log: Path, flood: int) -> str:
    flood_routes = "".join(
        f"  route 100.64.{200 + i // 250}.{i % 250}/32 blackhole;\n" for i in range(flood)
    )
    return f"""
log "{log}" all;
router id 198.18.0.66;
protocol device {{}}
protocol static hostile {{
  ipv4;
  route {VICTIM}/32 blackhole;
  route 100.64.0.0/24 blackhole;
  route 0.0.0.0/0 blackhole;
  route 100.64.99.0/24 blackhole;
{flood_routes}}}
protocol bgp victim {{
  local 198.18.0.66 as 65066;
  neighbor 198.18.0.1 as 65001;
  hold time 9;
  connect retry time 1;
  ipv4 {{ import none; export all; }};
}}
"""


def test_hostile_peer_cannot_hijack_or_flood(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    node_ns, peer_ns = netns.add("n"), netns.add("evil")
    netns.link(node_ns, peer_ns, ["198.18.0.1/24", "fd00:198:18::1/64"], ["198.18.0.66/24"])
    node = make_node(
        netns,
        tmp_path,
        "node1",
        1,
        store=tmp_path / "store",
        ns=node_ns,
        asn=65001,
        extra={
            "bgp": {
                "mesh": False,
                "hold_time": 9,
                "keepalive": 3,
                "peers": [{"address": "198.18.0.66", "asn": 65066, "role": "external"}],
                "import_policy": {"max_prefixes": MAX_PREFIXES},
            }
        },
    )
    start_agent(procs, node)
    workload = netns.add("w")
    node.cli_json("workload", "add", "victim", "--netns", workload, "--ip", VICTIM)

    conf, sock = tmp_path / "evil.conf", str(tmp_path / "evil.ctl")
    conf.write_text(hostile_config(tmp_path / "evil.log", flood=0))
    procs.start(
        ["bird", "-f", "-c", str(conf), "-s", sock, "-P", str(tmp_path / "evil.pid")],
        netns=peer_ns,
        log_path=str(tmp_path / "evil.out"),
    )
    wait_for(
        lambda: node.peer_states() == {"198.18.0.66": "Established"},
        timeout=30,
        what="session with the hostile peer",
    )

    def verdicts() -> dict[str, str | None]:
        routes = node.cli_json("routes", "--received", "--peer", "198.18.0.66")["routes"]
        return {r["prefix"]: r["reason"] for r in routes}

    wait_for(lambda: len(verdicts()) == 4, timeout=10, what="the hostile routes to arrive")
    assert verdicts() == {
        f"{VICTIM}/32": "covers-local-workload",
        "100.64.0.0/24": "covers-local-workload",
        "0.0.0.0/0": "default-route",
        "100.64.99.0/24": None,
    }
    table = ns_run(node_ns, ["ip", "route", "show"])
    assert "default" not in table
    assert f"{VICTIM} dev l3f" in table and "100.64.0.0/24" not in table
    assert ok(node_ns, "ping", "-c", "1", "-W", "1", VICTIM)

    # Now flood past max-prefix: the session is torn down and held down.
    conf.write_text(hostile_config(tmp_path / "evil.log", flood=MAX_PREFIXES + 5))
    run(["birdc", "-s", sock, "configure"])
    wait_for(
        lambda: "max-prefix" in node.status()["peers"][0]["info"],
        timeout=15,
        what="max-prefix teardown reported",
    )
    peer = node.status()["peers"][0]
    assert peer["state"] != "Established"
    assert verdicts() == {}
    assert "100.64.99.0/24" not in ns_run(node_ns, ["ip", "route", "show"])
    # The agent is healthy and the local workload is still reachable.
    assert node.proc is not None and node.proc.poll() is None
    assert [w["name"] for w in node.cli_json("workload", "list")] == ["victim"]
    assert ok(node_ns, "ping", "-c", "1", "-W", "1", VICTIM)
