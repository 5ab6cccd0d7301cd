"""A hostile external peer against one node, IPv4 and IPv6: the import
policy's matrix, each case a regression test against a real BIRD 2 peer.

node1 (AS 65001) runs a workload "victim"; the hostile BIRD (AS 65066) on
the same LAN announces, on one session per family: the victim's own /32 or
/128, a prefix covering it, the default route, a pool prefix with our AS
prepended to its path, one with a next hop on no connected network, one
with node1's own address as next hop, an honest pool prefix and one outside
the pools. Every refused route is listed by `l3fabric routes --received`
with its reason and is never in the kernel (route protocol 76); the honest
one is installed and the victim stays reachable.

One lab per family (module-scoped): the cases only read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
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
    kernel_routes,
    link_hostile,
    start_hostile,
    verdicts,
    wait_established,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
]


@dataclass(frozen=True)
class Lab:
    fam: Family
    node: AgentNode
    hostile: Bird
    received: dict[str, str | None]  # what the hostile peer sent, once all of it is in
    kernel: set[str]  # node1's proto-76 prefixes of the family at that time


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.id)
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")
    fam: Family = request.param
    tmp = tmp_path_factory.mktemp(f"hostile-{fam.id}")
    netns, procs = Namespaces(), Processes()
    try:
        yield _build(netns, procs, tmp, fam)
    finally:
        procs.cleanup()
        netns.cleanup()


def _build(netns: Namespaces, procs: Processes, tmp: Path, fam: Family) -> Lab:
    node_ns = netns.add("n")
    # node1's node addresses, on lo: no other node here.
    for address in ("198.18.0.1/32", "fd00:198:18::1/128"):
        ns_run(node_ns, ["ip", "addr", "add", address, "dev", "lo"])
    peer_ns = link_hostile(netns, node_ns, fam)
    node = make_node(
        netns,
        tmp,
        "node1",
        1,
        store=tmp / "store",
        ns=node_ns,
        asn=NODE_AS,
        extra={"bgp": {"mesh": False, "hold_time": 9, "peers": [external_peer(fam)]}},
    )
    start_agent(procs, node)
    workload = netns.add("w")
    node.cli_json("workload", "add", "victim", "--netns", workload, "--ip", fam.victim)
    routes = forged_routes(fam, [fam.victim])
    hostile = start_hostile(procs, peer_ns, tmp, fam, routes)
    wait_established(node, [fam.hostile])
    try:
        wait_for(
            lambda: set(verdicts(node, fam.hostile)) == set(routes),
            timeout=20,
            what="every hostile route to arrive",
        )
    except AssertionError as exc:
        sent = hostile.cli("show", "route", "export", "victim", check=False)
        got = node.cli("routes", "--received").stdout
        raise AssertionError(f"{exc}\nBIRD exports:\n{sent}\nreceived:\n{got}") from None
    # Give the accepted route its way into the kernel before reading it.
    try:
        wait_for(
            lambda: fam.legit in kernel_prefixes(node, fam), timeout=20, what="the honest route"
        )
    except AssertionError as exc:
        got = node.cli("routes", "--received").stdout
        raise AssertionError(f"{exc}\n{got}\n{kernel_routes(node, fam)}") from None
    return Lab(fam, node, hostile, verdicts(node, fam.hostile), kernel_prefixes(node, fam))


def _refused(lab: Lab, prefix: str, reason: str) -> None:
    assert lab.received[prefix] == reason, lab.received
    if prefix != lab.fam.host(lab.fam.victim):  # the victim's own route is there
        assert prefix not in lab.kernel, kernel_routes(lab.node, lab.fam)
    # The operator's table says the same thing in words.
    table = lab.node.cli("routes", "--received", "--prefix", prefix).stdout
    assert f"rejected: {reason}" in table, table


def ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def test_hijack_of_local_workload_is_refused(lab: Lab) -> None:
    fam = lab.fam
    _refused(lab, fam.host(fam.victim), "covers-local-workload")
    # The victim's own route is the node's, through its veth.
    route = ns_run(lab.node.netns, ["ip", fam.ip_flag, "route", "show", fam.host(fam.victim)])
    assert "dev l3f" in route and "via" not in route, route
    assert ok(lab.node.netns, "ping", fam.ip_flag, "-c", "1", "-W", "2", fam.victim)


def test_covering_prefix_is_refused(lab: Lab) -> None:
    _refused(lab, lab.fam.covering, "covers-local-workload")


def test_default_route_is_refused(lab: Lab) -> None:
    _refused(lab, lab.fam.default, "default-route")
    table = ns_run(lab.node.netns, ["ip", lab.fam.ip_flag, "route", "show", "default"])
    assert table.strip() == "", table


def test_as_path_loop_is_refused(lab: Lab) -> None:
    routes = lab.node.cli_json("routes", "--received", "--prefix", lab.fam.as_loop)["routes"]
    assert [r["as_path"] for r in routes] == [[65066, 65001]]
    _refused(lab, lab.fam.as_loop, "as-loop")


def test_next_hop_on_no_connected_network_never_reaches_the_kernel(lab: Lab) -> None:
    routes = lab.node.cli_json("routes", "--received", "--prefix", lab.fam.far_hop)["routes"]
    assert [r["next_hop"] for r in routes] == [lab.fam.far_gateway]
    # The kernel refuses a gateway on no on-link network, whatever the RIB says.
    assert lab.fam.far_hop not in kernel_prefixes(lab.node, lab.fam)


def test_next_hop_on_no_connected_network_is_refused(lab: Lab) -> None:
    _refused(lab, lab.fam.far_hop, "unreachable-next-hop")


def test_next_hop_of_our_own_is_refused(lab: Lab) -> None:
    routes = lab.node.cli_json("routes", "--received", "--prefix", lab.fam.self_hop)["routes"]
    assert [r["next_hop"] for r in routes] == [lab.fam.node]
    _refused(lab, lab.fam.self_hop, "next-hop-self")


def test_prefix_outside_the_pools_is_refused(lab: Lab) -> None:
    _refused(lab, lab.fam.outside, "outside-pools")


def test_honest_route_is_installed_and_nothing_else(lab: Lab) -> None:
    fam = lab.fam
    assert lab.received[fam.legit] is None
    route = ns_run(lab.node.netns, ["ip", fam.ip_flag, "route", "show", fam.legit, "proto", "76"])
    assert f"via {fam.hostile}" in route, route
    # The kernel holds the victim's own host route and the honest prefix:
    # no refused route, whatever its reason.
    assert lab.kernel == {fam.host(fam.victim), fam.legit}, kernel_routes(lab.node, fam)
    refused = {p for p, reason in lab.received.items() if reason is not None}
    peer = next(p for p in lab.node.status()["peers"] if p["peer"] == fam.hostile)
    assert sum(peer["rejected"].values()) == len(refused), peer
