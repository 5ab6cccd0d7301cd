"""Two nodes, each with two uplinks: one to each of two BIRD routers.

    wa -- node1 --eth1-- r1 --eth2-- node2 -- wb
             \\           |            /
              \\---eth2-- r2 --eth1---/
                     (r1 and r2 are linked too)

node N (AS 6500N) has its address 198.18.0.N / fd00:198:18::N on lo and
one session per family to each router over the link between them
(198.18.(10R+N).0/24, the node at .1, the router at .254; IPv6 the same
under fd00:198:18:(10R+N)::/64). The routers (AS 6510R) reach the node
addresses, the next hop of every node route, over those links (static
routes, `gateway recursive`), and each other over their own link, the
backup path when a router loses a node (the role spines play in a real
fabric; a static pool route via the other router, below BGP's, stands for
the spines' paths). Each node holds a two-way ECMP route to the other's
workloads.

The routers run `check link`, as BIRD does by default on direct sessions:
a link that loses carrier shuts its session at once, as a hardware router
does, instead of waiting for the hold timer.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.integration.agentlab import AgentNode, make_node, start_agent
from tests.integration.birdlab import Bird, start_bird_config
from tests.nettools import Namespaces, Processes, ns_run, run, wait_for

NODE_AS = {1: 65001, 2: 65002}
ROUTER_AS = {1: 65101, 2: 65102}
POOLS = ("100.64.0.0/16", "fd00:64::/48")
# A router's kernel skips a route whose link lost carrier and falls back to
# the pools via the other router at once, as a hardware router's FIB does
# (BIRD alone takes its main loop's time, up to half a second here); the
# loss counted is then the nodes' own.
ROUTER_SYSCTLS = (
    "net.ipv4.ip_forward=1",
    "net.ipv6.conf.all.forwarding=1",
    "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
    "net.ipv6.conf.all.ignore_routes_with_linkdown=1",
)


def link_net(router: int, node: int) -> tuple[str, str]:
    """The IPv4 and IPv6 /24 and /64 prefixes (without length) of a link."""
    third = 10 * router + node
    return f"198.18.{third}", f"fd00:198:18:{third}:"


def node_end(router: int, node: int) -> tuple[str, str]:
    v4, v6 = link_net(router, node)
    return f"{v4}.1", f"{v6}:1"


def router_end(router: int, node: int) -> tuple[str, str]:
    v4, v6 = link_net(router, node)
    return f"{v4}.254", f"{v6}:fe"


def interlink(router: int) -> tuple[str, str]:
    return f"198.18.30.{router}", f"fd00:198:18:30::{router}"


def bird_config(router: int, log: Path) -> str:
    other = 3 - router
    asn = ROUTER_AS[router]
    statics4 = "".join(f"  route 198.18.0.{n}/32 via {node_end(router, n)[0]};\n" for n in NODE_AS)
    statics6 = "".join(
        f"  route fd00:198:18::{n}/128 via {node_end(router, n)[1]};\n" for n in NODE_AS
    )
    sessions = []
    for n, node_as in NODE_AS.items():
        for family, address in zip(("ipv4", "ipv6"), node_end(router, n), strict=True):
            sessions.append(
                f"protocol bgp node{n}_{family} from node {{\n"
                f"  neighbor {address} as {node_as};\n"
                f"  {family} {{ import filter pools_{family}; export filter learned;"
                " gateway recursive; };\n}\n"
            )
    for family, address in zip(("ipv4", "ipv6"), interlink(other), strict=True):
        sessions.append(
            f"protocol bgp peer_{family} from fabric {{\n"
            f"  neighbor {address} as {ROUTER_AS[other]};\n"
            f"  {family} {{ import filter pools_{family}; export filter learned; }};\n}}\n"
        )
    return (
        f'log "{log}" all;\n'
        f"router id {interlink(router)[0]};\n"
        f"filter pools_ipv4 {{ if net ~ [ {POOLS[0]}+ ] then accept; reject; }}\n"
        f"filter pools_ipv6 {{ if net ~ [ {POOLS[1]}+ ] then accept; reject; }}\n"
        "filter learned { if source = RTS_BGP then accept; reject; }\n"
        "protocol device { scan time 2; }\n"
        'protocol direct { ipv4; ipv6; interface "*"; }\n'
        f"protocol static nodes4 {{\n  ipv4;\n  check link;\n{statics4}}}\n"
        f"protocol static nodes6 {{\n  ipv6;\n  check link;\n{statics6}}}\n"
        "protocol kernel { ipv4 { import none; export filter learned; }; merge paths on; }\n"
        "protocol kernel { ipv6 { import none; export filter learned; }; merge paths on; }\n"
        "template bgp fabric {\n"
        f"  local as {asn};\n"
        "  hold time 9;\n  keepalive time 3;\n  connect delay time 1;\n"
        "  connect retry time 2;\n  error wait time 1, 5;\n  check link yes;\n}\n"
        "template bgp node from fabric { graceful restart on; }\n" + "".join(sessions)
    )


def uplink(*ends: tuple[str, str, int, tuple[str, ...]]) -> None:
    """A veth between two namespaces, each end (namespace, name, ifindex,
    addresses) up. The two ends get different ifindexes: the kernel treats a
    veth's carrier change as urgent only when its peer's index differs from
    its own, and otherwise batches it for up to a second (linkwatch), which
    would delay every reaction to the cut by that much, on no real link."""
    (ns_a, name_a, index_a, _), (ns_b, name_b, index_b, _) = ends
    end_a = [name_a, "index", str(index_a), "netns", ns_a]
    run(
        [
            "ip",
            "link",
            "add",
            *end_a,
            "type",
            "veth",
            "peer",
            name_b,
            "index",
            str(index_b),
            "netns",
            ns_b,
        ]
    )
    for ns, name, _index, addrs in ends:
        for addr in addrs:
            ns_run(
                ns, ["ip", "addr", "add", addr, "dev", name, *(["nodad"] if ":" in addr else [])]
            )
        ns_run(ns, ["ip", "link", "set", name, "up"])


def start_router(procs: Processes, netns: str, router: int, tmp_path: Path) -> Bird:
    return start_bird_config(
        procs, netns, lambda log: bird_config(router, log), tmp_path, f"r{router}"
    )


def node_bgp(node: int) -> dict[str, object]:
    peers = []
    for router, asn in ROUTER_AS.items():
        for local, remote in zip(node_end(router, node), router_end(router, node), strict=True):
            peers.append(
                {"address": remote, "asn": asn, "role": "external", "local_address": local}
            )
    return {"mesh": False, "hold_time": 9, "peers": peers}


@dataclass(frozen=True)
class Fabric:
    nodes: tuple[AgentNode, AgentNode]
    routers: tuple[str, str]  # namespaces
    birds: tuple[Bird, Bird]


def build(netns: Namespaces, procs: Processes, tmp_path: Path) -> Fabric:
    """The topology above, routers and agents running, every session up."""
    node_ns = [netns.add("n") for _ in NODE_AS]
    router_ns = [netns.add("r") for _ in ROUTER_AS]
    for n, ns in enumerate(node_ns, 1):
        ns_run(ns, ["ip", "addr", "add", f"198.18.0.{n}/32", "dev", "lo"])
        ns_run(ns, ["ip", "addr", "add", f"fd00:198:18::{n}/128", "dev", "lo"])
        for r, rns in enumerate(router_ns, 1):
            v4, v6 = node_end(r, n)
            rv4, rv6 = router_end(r, n)
            index = 10 * r + n
            uplink(
                (ns, f"eth{r}", 100 + index, (f"{v4}/24", f"{v6}/64")),
                (rns, f"eth{n}", 200 + index, (f"{rv4}/24", f"{rv6}/64")),
            )
    r1, r2 = interlink(1), interlink(2)
    uplink(
        (router_ns[0], "eth3", 301, (f"{r1[0]}/24", f"{r1[1]}/64")),
        (router_ns[1], "eth3", 302, (f"{r2[0]}/24", f"{r2[1]}/64")),
    )
    for r, rns in enumerate(router_ns, 1):
        for key in ROUTER_SYSCTLS:
            ns_run(rns, ["sysctl", "-qw", key])
        for family, pool, via in zip(("-4", "-6"), POOLS, interlink(3 - r), strict=True):
            ns_run(rns, ["ip", family, "route", "add", pool, "via", via, "metric", "4000"])
    birds = tuple(start_router(procs, rns, r, tmp_path) for r, rns in enumerate(router_ns, 1))
    nodes = tuple(
        make_node(
            netns,
            tmp_path,
            f"node{n}",
            n,
            store=tmp_path / "store",
            ns=ns,
            asn=NODE_AS[n],
            extra={"bgp": node_bgp(n)},
        )
        for n, ns in enumerate(node_ns, 1)
    )
    for node in nodes:
        start_agent(procs, node)
    for node in nodes:
        wait_for(
            lambda n=node: list(n.peer_states().values()) == ["Established"] * 4,
            timeout=60,
            what=f"{node.name}: 4 sessions Established",
        )
    a, b = nodes
    return Fabric((a, b), (router_ns[0], router_ns[1]), (birds[0], birds[1]))


def next_hops(ns: str, address: str) -> list[str]:
    """The devices of the node's proto-76 route to address, "dead" ones marked."""
    family = "-6" if ":" in address else "-4"
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "ip", family, "route", "show", address, "proto", "76"],
        capture_output=True,
        text=True,
    ).stdout
    hops = []
    for line in out.splitlines():
        fields = line.split()
        if "dev" in fields:
            dev = fields[fields.index("dev") + 1]
            hops.append(f"{dev} dead" if "dead" in fields else dev)
    return sorted(hops)
