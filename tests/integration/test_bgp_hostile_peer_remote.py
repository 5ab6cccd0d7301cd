"""A hostile external peer hijacks a REMOTE node's workload, IPv4 and IPv6.

    node1 (AS 65001) ==== mesh (iBGP) ==== node2 (AS 65001)
      |  workload w1                         workload w2 (the target)
      |
    hostile BIRD peers, AS 65066, one per family, each on its own link

The hostile peers announce w2's /32 and /128. The import policy cannot
refuse them (an external router legitimately carries other nodes' workload
routes), so best-path selection decides: the mesh path has an empty AS path,
the hostile one [65066], and the shorter AS path wins before eBGP is
preferred over iBGP. w1's traffic goes to the real w2, and the hostile
namespace counts none of it.

When w2's owner is down (its agent stopped, its mesh session gone) the
hostile path is the only one left and node1 uses it: the trust boundary
docs/security.md describes. When node2 is back, the mesh path wins again.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.agentlab import (
    AgentNode,
    make_node,
    start_agent,
    stop_orphaned_speaker,
    underlay,
)
from tests.integration.hostilelab import (
    FAMILIES,
    NODE_AS,
    Family,
    external_peer,
    link_hostile,
    start_hostile,
    verdicts,
    wait_established,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables is not installed"),
]


@dataclass
class Lab:
    node1: AgentNode
    node2: AgentNode
    w1: str  # node1's workload namespace
    hostile_ns: dict[Family, str]


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def node_extra(index: int) -> dict[str, object]:
    bgp: dict[str, object] = {
        "mesh": True,
        "hold_time": 9,
        # Without graceful restart the mesh path goes the moment node2's
        # session does, rather than after the restart time.
        "graceful_restart": {"enabled": False},
    }
    if index == 1:
        bgp["peers"] = [external_peer(fam) for fam in FAMILIES]
    return {"bgp": bgp}


def count_echoes(peer_ns: str, fam: Family) -> None:
    """An nftables counter in the hostile namespace of echo requests for w2."""
    proto = "ip" if fam.version == 4 else "ip6"
    icmp = "icmp" if fam.version == 4 else "icmpv6"
    rules = (
        "table inet hijackcount {\n"
        " chain pre { type filter hook prerouting priority 0;\n"
        f"  {proto} daddr {fam.remote} {icmp} type echo-request counter\n"
        " }\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", peer_ns, "nft", "-f", "-"], input=rules, text=True, check=True
    )


def echoes_seen(peer_ns: str) -> int:
    out = ns_run(peer_ns, ["nft", "list", "chain", "inet", "hijackcount", "pre"])
    return int(out.split("counter packets ")[1].split()[0])


@pytest.fixture
def lab(
    netns: Namespaces, procs: Processes, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Lab]:
    hide_as = bool(getattr(request, "param", False))
    ns1, ns2 = underlay(netns, 2)
    hostile_ns = {fam: link_hostile(netns, ns1, fam, f"eth{fam.version}") for fam in FAMILIES}
    node1, node2 = (
        make_node(
            netns,
            tmp_path,
            f"node{i}",
            i,
            store=tmp_path / "store",
            ns=ns,
            asn=NODE_AS,
            extra=node_extra(i),
        )
        for i, ns in ((1, ns1), (2, ns2))
    )
    for node in (node1, node2):
        start_agent(procs, node)
    w1, w2 = netns.add("w"), netns.add("w")
    ips1 = [arg for fam in FAMILIES for arg in ("--ip", fam.victim)]
    ips2 = [arg for fam in FAMILIES for arg in ("--ip", fam.remote)]
    node1.cli_json("workload", "add", "w1", "--netns", w1, *ips1)
    node2.cli_json("workload", "add", "w2", "--netns", w2, *ips2)
    for fam, peer_ns in hostile_ns.items():
        tmp = tmp_path / fam.id
        tmp.mkdir()
        routes = [fam.host(fam.remote), fam.host(fam.victim)]
        start_hostile(procs, peer_ns, tmp, fam, routes, hide_as=hide_as)
        count_echoes(peer_ns, fam)
    wait_established(node1, [*(f.hostile for f in FAMILIES), "198.18.0.2", "fd00:198:18::2"])
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: len(verdicts(node1, f.hostile)) == 2,
            timeout=20,
            what=f"the {fam.id} hostile routes at node1",
        )
    yield Lab(node1, node2, w1, hostile_ns)


def paths(node: AgentNode, fam: Family) -> dict[str, tuple[list[int], bool, str | None]]:
    """peer -> (AS path, best, reject reason) of the paths for w2's prefix."""
    routes = node.cli_json("routes", "--received", "--prefix", fam.host(fam.remote))["routes"]
    return {r["peer"]: (r["as_path"], r["best"], r["reason"]) for r in routes}


def kernel_via(node: AgentNode, fam: Family) -> str:
    return ns_run(node.netns, ["ip", fam.ip_flag, "route", "show", fam.host(fam.remote)])


def mesh_path_wins(node: AgentNode, fam: Family) -> bool:
    mesh = "198.18.0.2" if fam.version == 4 else "fd00:198:18::2"
    return paths(node, fam) == {
        mesh: ([], True, None),
        fam.hostile: ([65066], False, None),
    } and f"via {mesh} " in kernel_via(node, fam)


def test_remote_workload_hijack_loses_to_the_mesh_path(lab: Lab) -> None:
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: mesh_path_wins(lab.node1, f),
            timeout=20,
            what=f"{fam.id}: the mesh path to w2 selected over the hostile one",
        )
        # The hijack of node1's own workload is refused outright, as ever.
        assert verdicts(lab.node1, fam.hostile)[fam.host(fam.victim)] == "covers-local-workload"
        table = lab.node1.cli("routes", "--received", "--prefix", fam.host(fam.remote)).stdout
        assert "best" in table and "accepted" in table, table
        # w1 reaches the real w2 (the hostile namespace forwards nothing),
        # and none of its echo requests went to the hostile peer.
        before = echoes_seen(lab.hostile_ns[fam])
        assert ok(lab.w1, "ping", fam.ip_flag, "-c", "3", "-W", "2", fam.remote)
        assert echoes_seen(lab.hostile_ns[fam]) == before == 0
        route = ns_run(lab.node1.netns, ["ip", fam.ip_flag, "route", "get", fam.remote])
        assert "dev eth1" in route, route


def test_remote_workload_hijack_wins_while_the_owner_is_down(
    lab: Lab, procs: Processes, netns: Namespaces
) -> None:
    for fam in FAMILIES:
        wait_for(lambda f=fam: mesh_path_wins(lab.node1, f), timeout=20, what="the mesh path")
    assert lab.node2.proc is not None
    procs.stop(lab.node2.proc)
    stop_orphaned_speaker(lab.node2)
    # The trust boundary: with the owner's path gone, the external peer's
    # path for a pool address is accepted and used.
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: (
                paths(lab.node1, f) == {f.hostile: ([65066], True, None)}
                and f"via {f.hostile} " in kernel_via(lab.node1, f)
            ),
            timeout=40,
            what=f"{fam.id}: the hostile path used once w2's owner is down",
        )
        assert not ok(lab.w1, "ping", fam.ip_flag, "-c", "3", "-W", "1", fam.remote)
        assert echoes_seen(lab.hostile_ns[fam]) >= 3

    # The owner is back: its mesh path wins again and w2 is reached.
    start_agent(procs, lab.node2)
    for fam in FAMILIES:
        wait_for(
            lambda f=fam: mesh_path_wins(lab.node1, f),
            timeout=60,
            what=f"{fam.id}: the mesh path selected again",
        )
        wait_for(
            lambda f=fam: ok(lab.w1, "ping", f.ip_flag, "-c", "1", "-W", "2", f.remote),
            timeout=20,
            what=f"{fam.id}: w2 reached again",
        )


@pytest.mark.parametrize("lab", [True], indirect=True, ids=["empty-as-path"])
def test_remote_workload_hijack_with_its_as_hidden_is_refused(lab: Lab) -> None:
    """A peer that leaves its own AS out (a route server's `rs client`, or a
    forged UPDATE) would tie with the mesh path on AS-path length and then
    win as eBGP over iBGP."""
    for fam in FAMILIES:
        mesh = "198.18.0.2" if fam.version == 4 else "fd00:198:18::2"
        want = {mesh: ([], True, None), fam.hostile: ([], False, "bad-first-as")}
        try:
            wait_for(
                lambda f=fam, w=want: paths(lab.node1, f) == w,
                timeout=20,
                what=f"{fam.id}: the AS-less hostile path refused",
            )
        except AssertionError as exc:
            got = paths(lab.node1, fam), kernel_via(lab.node1, fam)
            raise AssertionError(f"{exc}: {got}") from None
        assert f"via {mesh} " in kernel_via(lab.node1, fam)
        before = echoes_seen(lab.hostile_ns[fam])
        assert ok(lab.w1, "ping", fam.ip_flag, "-c", "3", "-W", "2", fam.remote)
        assert echoes_seen(lab.hostile_ns[fam]) == before == 0
