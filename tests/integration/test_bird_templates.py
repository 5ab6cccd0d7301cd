"""Rendered BIRD configurations running for real, in network namespaces.

Two labs:
- two route reflectors (one with a dynamic client range and MD5, one as a
  non-client iBGP peer) and two Calico-style BIRD nodes on one LAN: the
  sessions come up and a workload route reaches the other node reflected,
  with the originating node's next hop;
- a leaf (tor role, AS-per-rack dynamic range) with two nodes below and a
  spine above: ECMP for an anycast prefix, the fabric prefix filter, and a
  ping from the spine into a workload through the leaf's kernel routes.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path

import pytest

from l3fabric.bgp.bird import BirdConfig, BirdNextHop, BirdPeer, BirdRange, BirdRole
from l3fabric.model import RTPROT_L3FABRIC, host_iface_name
from tests.integration.birdlab import lan, start_bird
from tests.nettools import Namespaces, Processes, ns_run, run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("bird") is None or shutil.which("birdc") is None,
        reason="BIRD 2 (bird, birdc) is not installed",
    ),
]

ip = ipaddress.ip_address
net = ipaddress.ip_network
FABRIC = (net("100.64.0.0/16"), net("fd00:64::/48"), net("198.18.0.0/15"))
SESSION_TIMEOUT = 30.0


def add_workload_routes(node: str, workload: str, prefixes: list[str]) -> str:
    """A host-side veth and kernel routes to it marked RTPROT_L3FABRIC, the
    way the node agent leaves them. Returns the host-side interface."""
    host_if = host_iface_name(workload)
    if host_if not in ns_run(node, ["ip", "-o", "link", "show"]):
        other_end = "x" + host_if[3:]
        ns_run(node, ["ip", "link", "add", host_if, "type", "veth", "peer", "name", other_end])
        ns_run(node, ["ip", "link", "set", host_if, "up"])
        ns_run(node, ["ip", "link", "set", other_end, "up"])
    for prefix in prefixes:
        ns_run(
            node,
            ["ip", "route", "add", prefix, "dev", host_if, "proto", str(RTPROT_L3FABRIC)],
        )
    return host_if


def kernel_route(ns: str, prefix: str) -> str:
    family = "-6" if ":" in prefix else "-4"
    return ns_run(ns, ["ip", family, "route", "show", "exact", prefix]).strip()


def rack_below_spine(netns: Namespaces, *, uplink_v6: bool) -> tuple[str, str, str, str]:
    """leaf, spine, n1, n2: the nodes and the leaf on one rack LAN
    (198.18.1.0/24, fd00:18:1::/64), the leaf's up0 to the spine's down0."""
    leaf, spine, n1, n2 = (netns.add(tag) for tag in ("leaf", "spine", "n1", "n2"))
    lan(
        netns,
        [
            (leaf, ["198.18.1.254/24", "fd00:18:1::254/64"]),
            (n1, ["198.18.1.1/24", "fd00:18:1::1/64"]),
            (n2, ["198.18.1.2/24", "fd00:18:1::2/64"]),
        ],
    )
    up, down = ["198.18.2.0/31"], ["198.18.2.1/31"]
    if uplink_v6:
        up, down = [*up, "fd00:18:2::/127"], [*down, "fd00:18:2::1/127"]
    netns.link(leaf, spine, up, down, names=("up0", "down0"))
    return leaf, spine, n1, n2


def local_subnet(ns: str, ifname: str, address: str) -> None:
    """A connected subnet on a veth whose peer stays in the same namespace."""
    peer = ifname[:-1] + "1"
    ns_run(ns, ["ip", "link", "add", ifname, "type", "veth", "peer", "name", peer])
    ns_run(ns, ["ip", "addr", "add", address, "dev", ifname])
    for name in (ifname, peer):
        ns_run(ns, ["ip", "link", "set", name, "up"])


def node_cfg(router_id: str, asn: int, peers: tuple[BirdPeer, ...]) -> BirdConfig:
    return BirdConfig(
        role=BirdRole.NODE,
        router_id=ipaddress.IPv4Address(router_id),
        asn=asn,
        peers=peers,
        hold_time=9,
        keepalive=3,
    )


def test_route_reflector_reflects_with_next_hop_kept(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    rr1, rr2, n1, n2 = (netns.add(tag) for tag in ("rr1", "rr2", "n1", "n2"))
    lan(
        netns,
        [
            (rr1, ["198.18.0.250/24", "fd00:18::250/64"]),
            (rr2, ["198.18.0.251/24", "fd00:18::251/64"]),
            (n1, ["198.18.0.1/24", "fd00:18::1/64"]),
            (n2, ["198.18.0.2/24", "fd00:18::2/64"]),
        ],
    )
    password = "fabric-md5 key"
    cluster = ipaddress.IPv4Address("198.18.0.254")
    reflector = BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=ipaddress.IPv4Address("198.18.0.250"),
        asn=64512,
        cluster_id=cluster,
        peers=(BirdPeer("rr2", ip("198.18.0.251"), 64512, password="between reflectors"),),
        ranges=(
            BirdRange(net("198.18.0.0/24"), 64512, rr_client=True, password=password, name="nodes"),
        ),
        hold_time=9,
        keepalive=3,
    )
    other_reflector = BirdConfig(
        role=BirdRole.ROUTE_REFLECTOR,
        router_id=ipaddress.IPv4Address("198.18.0.251"),
        asn=64512,
        peers=(BirdPeer("rr1", ip("198.18.0.250"), 64512, password="between reflectors"),),
        hold_time=9,
        keepalive=3,
    )
    to_rr = (BirdPeer("rr1", ip("198.18.0.250"), 64512, password=password),)
    add_workload_routes(n1, "w1", ["100.64.1.5/32", "fd00:64::1:5/128"])

    bird_rr1 = start_bird(procs, rr1, reflector, tmp_path, "rr1")
    bird_rr2 = start_bird(procs, rr2, other_reflector, tmp_path, "rr2")
    bird_n1 = start_bird(procs, n1, node_cfg("198.18.0.1", 64512, to_rr), tmp_path, "n1")
    bird_n2 = start_bird(procs, n2, node_cfg("198.18.0.2", 64512, to_rr), tmp_path, "n2")

    wait_for(
        lambda: bird_rr1.established() == {"peer_rr2", "dyn_nodes_1", "dyn_nodes_2"},
        timeout=SESSION_TIMEOUT,
        what="rr1: rr2 and both dynamic clients Established",
    )
    assert bird_n1.established() == {"peer_rr1"}
    assert bird_rr2.established() == {"peer_rr1"}

    # n2 installs n1's workload routes via n1 itself, not via the reflector.
    v4 = wait_for(lambda: kernel_route(n2, "100.64.1.5/32"), timeout=SESSION_TIMEOUT, what="v4")
    assert re.search(r"via 198\.18\.0\.1 dev eth1 proto bird\b", v4), v4
    v6 = wait_for(lambda: kernel_route(n2, "fd00:64::1:5/128"), timeout=SESSION_TIMEOUT, what="v6")
    assert re.search(r"via fd00:18::1 dev eth1 proto bird\b", v6), v6

    # It came through the reflector: originator n1, cluster list rr1's cluster id.
    detail = bird_n2.cli("show", "route", "100.64.1.5/32", "all")
    assert "BGP.next_hop: 198.18.0.1" in detail, detail
    assert "BGP.originator_id: 198.18.0.1" in detail, detail
    assert f"BGP.cluster_list: {cluster}" in detail, detail

    # Client routes are reflected to the non-client reflector too, next hop kept.
    detail = wait_for(
        lambda: (lambda out: out if "BGP.next_hop" in out else "")(
            bird_rr2.cli("show", "route", "100.64.1.5/32", "all")
        ),
        timeout=SESSION_TIMEOUT,
        what="rr2 to learn 100.64.1.5/32",
    )
    assert "BGP.next_hop: 198.18.0.1" in detail, detail

    # The reflectors stay off the data path: nothing written to their kernels.
    assert kernel_route(rr1, "100.64.1.5/32") == ""
    assert kernel_route(rr2, "100.64.1.5/32") == ""

    # Withdrawal propagates the same way.
    ns_run(n1, ["ip", "route", "del", "100.64.1.5/32", "proto", str(RTPROT_L3FABRIC)])
    wait_for(
        lambda: kernel_route(n2, "100.64.1.5/32") == "",
        timeout=SESSION_TIMEOUT,
        what="n2 to drop 100.64.1.5/32 after n1 withdrew it",
    )


def test_leaf_spine_ecmp_filtering_and_forwarding(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    leaf, spine, n1, n2 = rack_below_spine(netns, uplink_v6=True)
    w1 = netns.add("w1")
    for router in (leaf, spine, n1, n2):
        ns_run(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        ns_run(router, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    # Nodes default to their ToR, as in a real rack (proxy ARP for the
    # workloads' gateway also needs a route to it).
    for node in (n1, n2):
        ns_run(node, ["ip", "route", "add", "default", "via", "198.18.1.254"])

    # A real workload on n1, wired the Calico way: /32 on eth0, link-local
    # gateway answered by proxy ARP on the host side.
    host_if = host_iface_name("w1")
    run(["ip", "link", "add", host_if, "netns", n1, "type", "veth", "peer", "eth0", "netns", w1])
    ns_run(n1, ["sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1"])
    ns_run(n1, ["ip", "link", "set", host_if, "up"])
    ns_run(w1, ["ip", "addr", "add", "100.64.1.5/32", "dev", "eth0"])
    ns_run(w1, ["ip", "link", "set", "eth0", "up"])
    ns_run(w1, ["ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])
    ns_run(w1, ["ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])
    add_workload_routes(n1, "w1", ["100.64.1.5/32"])
    # An anycast address on both nodes, and a prefix outside the fabric.
    add_workload_routes(n1, "any1", ["100.64.9.9/32", "fd00:64::9:9/128", "192.0.2.0/24"])
    add_workload_routes(n2, "any2", ["100.64.9.9/32", "fd00:64::9:9/128"])

    rack_as, leaf_as, spine_as = 65101, 65001, 65000
    leaf_cfg = BirdConfig(
        role=BirdRole.TOR,
        router_id=ipaddress.IPv4Address("198.18.1.254"),
        asn=leaf_as,
        peers=(BirdPeer("spine1", ip("198.18.2.1"), spine_as, password="leaf-spine"),),
        ranges=(BirdRange(net("198.18.1.0/24"), rack_as, name="rack1"),),
        accept_prefixes=FABRIC,
        hold_time=9,
        keepalive=3,
    )
    spine_cfg = BirdConfig(
        role=BirdRole.TOR,
        router_id=ipaddress.IPv4Address("198.18.2.1"),
        asn=spine_as,
        peers=(BirdPeer("leaf1", ip("198.18.2.0"), leaf_as, password="leaf-spine"),),
        accept_prefixes=FABRIC,
        hold_time=9,
        keepalive=3,
    )
    to_leaf = (BirdPeer("leaf", ip("198.18.1.254"), leaf_as),)
    bird_leaf = start_bird(procs, leaf, leaf_cfg, tmp_path, "leaf")
    bird_spine = start_bird(procs, spine, spine_cfg, tmp_path, "spine")
    bird_n1 = start_bird(procs, n1, node_cfg("198.18.1.1", rack_as, to_leaf), tmp_path, "n1")
    start_bird(procs, n2, node_cfg("198.18.1.2", rack_as, to_leaf), tmp_path, "n2")

    wait_for(
        lambda: bird_leaf.established() == {"peer_spine1", "dyn_rack1_1", "dyn_rack1_2"},
        timeout=SESSION_TIMEOUT,
        what="leaf: spine and both rack nodes Established",
    )

    # ECMP: one kernel route with a next hop per node.
    def anycast_paths(prefix: str, gateways: tuple[str, str]) -> bool:
        route = kernel_route(leaf, prefix)
        return all(f"nexthop via {gw} dev eth1" in route for gw in gateways)

    wait_for(
        lambda: anycast_paths("100.64.9.9/32", ("198.18.1.1", "198.18.1.2")),
        timeout=SESSION_TIMEOUT,
        what="leaf: 100.64.9.9/32 via both nodes",
    )
    wait_for(
        lambda: anycast_paths("fd00:64::9:9/128", ("fd00:18:1::1", "fd00:18:1::2")),
        timeout=SESSION_TIMEOUT,
        what="leaf: fd00:64::9:9/128 via both nodes",
    )

    # n1 offers 192.0.2.0/24 (same kernel protocol), the leaf refuses it.
    assert "192.0.2.0/24" in bird_n1.cli("show", "route", "export", "peer_leaf")
    wait_for(
        lambda: re.search(
            r"Import updates:\s+\d+\s+\d+\s+[1-9]",
            bird_leaf.cli("show", "protocols", "all", "dyn_rack1_1")
            + bird_leaf.cli("show", "protocols", "all", "dyn_rack1_2"),
        ),
        timeout=SESSION_TIMEOUT,
        what="leaf to filter an import",
    )
    assert "Network not found" in bird_leaf.cli("show", "route", "192.0.2.0/24", check=False)
    assert kernel_route(leaf, "192.0.2.0/24") == ""

    # The spine learns the workload and the rack subnet from the leaf.
    wait_for(
        lambda: "via 198.18.2.0 dev down0 proto bird" in kernel_route(spine, "100.64.1.5/32"),
        timeout=SESSION_TIMEOUT,
        what="spine: 100.64.1.5/32 via the leaf",
    )
    wait_for(
        lambda: "via 198.18.2.0 dev down0 proto bird" in kernel_route(spine, "198.18.1.0/24"),
        timeout=SESSION_TIMEOUT,
        what="spine: rack subnet via the leaf",
    )
    v6 = wait_for(
        lambda: kernel_route(spine, "fd00:64::9:9/128"), timeout=SESSION_TIMEOUT, what="spine v6"
    )
    assert re.search(r"via fd00:18:2:: dev down0 proto bird\b", v6), v6
    # And the nodes learn the leaf-spine link, so replies find their way back.
    wait_for(
        lambda: "via 198.18.1.254 dev eth1 proto bird" in kernel_route(n1, "198.18.2.0/31"),
        timeout=SESSION_TIMEOUT,
        what="n1: leaf-spine link via the leaf",
    )
    assert bird_spine.established() == {"peer_leaf1"}

    # Traffic really flows spine -> leaf -> n1 -> workload, unencapsulated.
    out = ns_run(spine, ["ping", "-c", "2", "-W", "2", "-I", "198.18.2.1", "100.64.1.5"])
    assert " 0% packet loss" in out, out


def test_leaf_reflects_its_rack_with_next_hop_self_ebgp(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    """A tor that is its rack's route reflector, as the leaf-spine lab's
    leaves: rack-mates keep each other's next hop, routes from the spine get
    the leaf's, only pool routes come in from the rack, and the management
    interface's subnet is never announced."""
    leaf, spine, n1, n2 = rack_below_spine(netns, uplink_v6=False)
    # A management interface on the leaf, its subnet inside the fabric prefix.
    local_subnet(leaf, "mgmt0", "198.19.255.2/24")
    # A pool subnet behind the spine, announced to the leaf as connected.
    local_subnet(spine, "pool0", "100.64.200.1/24")

    add_workload_routes(n1, "w1", ["100.64.1.5/32", "fd00:64::1:5/128"])
    # Inside the fabric but not a pool: a rack node must not announce it.
    add_workload_routes(n1, "under", ["198.18.50.0/24"])

    rack_as, spine_as = 65101, 65000
    leaf_cfg = BirdConfig(
        role=BirdRole.TOR,
        router_id=ipaddress.IPv4Address("198.18.1.254"),
        asn=rack_as,
        peers=(BirdPeer("spine1", ip("198.18.2.1"), spine_as),),
        ranges=(
            BirdRange(
                net("198.18.1.0/24"),
                rack_as,
                rr_client=True,
                name="rack",
                next_hop=BirdNextHop.SELF_EBGP,
            ),
        ),
        accept_prefixes=FABRIC,
        pool_prefixes=(net("100.64.0.0/16"), net("fd00:64::/48")),
        direct_exclude=("mgmt*",),
        hold_time=9,
        keepalive=3,
    )
    spine_cfg = BirdConfig(
        role=BirdRole.TOR,
        router_id=ipaddress.IPv4Address("198.18.2.1"),
        asn=spine_as,
        peers=(BirdPeer("leaf1", ip("198.18.2.0"), rack_as),),
        accept_prefixes=FABRIC,
        hold_time=9,
        keepalive=3,
    )
    to_leaf = (BirdPeer("leaf", ip("198.18.1.254"), rack_as),)
    bird_leaf = start_bird(procs, leaf, leaf_cfg, tmp_path, "leaf")
    bird_spine = start_bird(procs, spine, spine_cfg, tmp_path, "spine")
    start_bird(procs, n1, node_cfg("198.18.1.1", rack_as, to_leaf), tmp_path, "n1")
    start_bird(procs, n2, node_cfg("198.18.1.2", rack_as, to_leaf), tmp_path, "n2")
    wait_for(
        lambda: bird_leaf.established() == {"peer_spine1", "dyn_rack_1", "dyn_rack_2"},
        timeout=SESSION_TIMEOUT,
        what="leaf: spine and both rack nodes Established",
    )

    # Reflected inside the rack with the originating node as next hop.
    wait_for(
        lambda: "via 198.18.1.1 dev eth1 proto bird" in kernel_route(n2, "100.64.1.5/32"),
        timeout=SESSION_TIMEOUT,
        what="n2: 100.64.1.5/32 via n1 itself",
    )
    v6 = wait_for(
        lambda: kernel_route(n2, "fd00:64::1:5/128"), timeout=SESSION_TIMEOUT, what="n2 v6"
    )
    assert "via fd00:18:1::1 dev eth1 proto bird" in v6, v6
    # From the spine (eBGP): the leaf is the next hop.
    wait_for(
        lambda: "via 198.18.1.254 dev eth1 proto bird" in kernel_route(n2, "100.64.200.0/24"),
        timeout=SESSION_TIMEOUT,
        what="n2: the spine's pool subnet via the leaf",
    )
    # The spine learns the workload and the rack subnet, not the management
    # subnet and not n1's non-pool prefix (the leaf refused it).
    wait_for(
        lambda: "via 198.18.2.0 dev down0 proto bird" in kernel_route(spine, "100.64.1.5/32"),
        timeout=SESSION_TIMEOUT,
        what="spine: 100.64.1.5/32 via the leaf",
    )
    assert "via 198.18.2.0" in kernel_route(spine, "198.18.1.0/24")
    assert "Network not found" in bird_leaf.cli("show", "route", "198.18.50.0/24", check=False)
    assert "Network not found" in bird_leaf.cli("show", "route", "198.19.255.0/24", check=False)
    assert kernel_route(spine, "198.18.50.0/24") == ""
    assert kernel_route(spine, "198.19.255.0/24") == ""
    assert bird_spine.established() == {"peer_leaf1"}
