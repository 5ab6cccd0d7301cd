"""A hostile external peer floods past max-prefix, IPv4 and IPv6 at once:
the session is torn down and held down (and says so in `l3fabric status`),
comes back when the hold-down ends, is torn down again while the flood goes
on, and stays up once the peer behaves.

node1 has max_prefixes 20 and two hostile BIRD peers, one per family, each
on a link of its own. The hold-down after a max-prefix teardown is the
agent's fixed 60 s, so this test takes two of them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.agentlab import AgentNode, make_node, start_agent
from tests.integration.birdlab import Bird
from tests.integration.hostilelab import (
    FAMILIES,
    NODE_AS,
    Family,
    external_peer,
    forged_routes,
    kernel_prefixes,
    link_hostile,
    peer_detail,
    peer_row,
    reconfigure_hostile,
    start_hostile,
    verdicts,
    wait_established,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
]

MAX_PREFIXES = 20
FLOOD = MAX_PREFIXES + 5
HELD_DOWN = f"max-prefix {MAX_PREFIXES} exceeded; held down 60s"
# The hold-down (60 s) plus a reconnect, with room for a loaded machine.
RELEASE_TIMEOUT = 120


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def routes_of(fam: Family) -> list[str]:
    return forged_routes(fam, [fam.victim])


def held_down(node: AgentNode, fam: Family, teardowns: int) -> bool:
    detail = peer_detail(node, fam.hostile)
    return (
        detail["teardowns"] == teardowns
        and detail["state"] == "Idle"
        and detail["info"] == HELD_DOWN
        and detail["held_down_seconds"] > 0
    )


def assert_held_down_and_harmless(node: AgentNode, hostiles: dict[Family, Bird]) -> None:
    """While held down: the peer's row says why, nothing of it is held or
    installed, and the victim is reachable."""
    table = node.cli("status", check=False).stdout
    for fam in hostiles:
        row = peer_row(node, fam.hostile)
        assert (row["state"], row["info"], row["received"]) == ("Idle", HELD_DOWN, 0), row
        assert HELD_DOWN in table, table
        detail = node.cli("status", "--peer", fam.hostile, check=False).stdout
        held = [line for line in detail.splitlines() if line.startswith("held down:")]
        assert held and held[0].split()[-1] != "no", detail
        assert verdicts(node, fam.hostile) == {}
        assert kernel_prefixes(node, fam) == {fam.host(fam.victim)}
        assert ok(node.netns, "ping", fam.ip_flag, "-c", "1", "-W", "2", fam.victim)
    assert node.proc is not None and node.proc.poll() is None


def test_max_prefix_flood_is_torn_down_held_down_and_released(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    node_ns = netns.add("n")
    for address in ("198.18.0.1/32", "fd00:198:18::1/128"):
        ns_run(node_ns, ["ip", "addr", "add", address, "dev", "lo"])
    peer_ns = {fam: link_hostile(netns, node_ns, fam, f"eth{fam.version}") for fam in FAMILIES}
    node = make_node(
        netns,
        tmp_path,
        "node1",
        1,
        store=tmp_path / "store",
        ns=node_ns,
        asn=NODE_AS,
        extra={
            "bgp": {
                "mesh": False,
                "hold_time": 9,
                "peers": [external_peer(fam) for fam in FAMILIES],
                "import_policy": {"max_prefixes": MAX_PREFIXES},
            }
        },
    )
    start_agent(procs, node)
    workload = netns.add("w")
    ips = [arg for fam in FAMILIES for arg in ("--ip", fam.victim)]
    node.cli_json("workload", "add", "victim", "--netns", workload, *ips)
    hostiles = {}
    for fam in FAMILIES:
        tmp = tmp_path / fam.id
        tmp.mkdir()
        hostiles[fam] = start_hostile(procs, peer_ns[fam], tmp, fam, routes_of(fam))
    wait_established(node, [fam.hostile for fam in FAMILIES])
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: set(verdicts(node, f.hostile)) == set(routes_of(f)),
            timeout=20,
            what=f"the {fam.id} hostile routes (within the limit)",
        )

    # Past the limit: torn down, held down, and the status says so.
    for fam, bird in hostiles.items():
        reconfigure_hostile(bird, fam, routes_of(fam), flood=FLOOD)
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: held_down(node, f, teardowns=1),
            timeout=30,
            what=f"{fam.id} max-prefix teardown and hold-down",
        )
    assert_held_down_and_harmless(node, hostiles)

    # The hold-down ends, the session comes back, the peer still floods:
    # torn down again.
    for fam in FAMILIES:
        try:
            wait_for(
                lambda f=fam: held_down(node, f, teardowns=2),
                timeout=RELEASE_TIMEOUT,
                what=f"{fam.id}: released, back, and torn down again",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{peer_detail(node, fam.hostile)}") from None
    assert_held_down_and_harmless(node, hostiles)

    # The peer behaves while held down: at the next release it stays up and
    # its routes are judged as ever.
    for fam, bird in hostiles.items():
        reconfigure_hostile(bird, fam, routes_of(fam))
    wait_established(node, [fam.hostile for fam in FAMILIES], timeout=RELEASE_TIMEOUT)
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: set(verdicts(node, f.hostile)) == set(routes_of(f)),
            timeout=20,
            what=f"the {fam.id} routes after the release",
        )
        got = verdicts(node, fam.hostile)
        assert got[fam.host(fam.victim)] == "covers-local-workload"
        assert got[fam.legit] is None
        wait_for(
            lambda f=fam: f.legit in kernel_prefixes(node, f),
            timeout=20,
            what=f"the {fam.id} honest route installed again",
        )
        detail = peer_detail(node, fam.hostile)
        assert (detail["teardowns"], detail["held_down_seconds"]) == (2, 0), detail
