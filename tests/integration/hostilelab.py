"""A hostile external BGP peer for integration tests: a BIRD 2 instance in AS
65066 whose export filter forges what a misconfigured or malicious router
would send (hijacks, AS-path loops, forged next hops, floods), one address
family per session.

The node under attack, node1, is AS 65001 with its node addresses
198.18.0.1 / fd00:198:18::1 (on the fabric's underlay, shared with node2 in
the two-node cases). The hostile peer sits on a link of its own to node1,
198.18.1.0/24 / fd00:198:1::/64: node1 .1 / ::1, the peer .66 / ::66. The
session runs between those link addresses, so the peer can name node1's
node address as a next hop (BIRD itself refuses to send the session's
own address).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.agentlab import AgentNode
from tests.integration.birdlab import Bird, reconfigure_raw_bird, start_raw_bird
from tests.nettools import Namespaces, Processes, ns_run, wait_for

NODE_AS = 65001
HOSTILE_AS = 65066


@dataclass(frozen=True)
class Family:
    """The addresses and forged routes of one address family."""

    version: int
    node: str  # node1's node address
    local: str  # node1's end of the hostile link (the session's local address)
    hostile: str  # the hostile peer's address
    length: int  # host-route prefix length: 32 or 128
    lan: int  # the links' prefix length
    victim: str  # node1's local workload
    remote: str  # node2's workload (two-node cases)
    covering: str  # a prefix covering the victim
    default: str
    as_loop: str  # announced with our own AS prepended
    far_hop: str  # announced with a next hop on no connected network
    far_gateway: str
    self_hop: str  # announced with node1's own address as next hop
    legit: str  # an honest pool prefix: accepted and installed
    outside: str  # outside every pool
    flood_base: str  # flood prefixes are host routes counting up from here

    @property
    def id(self) -> str:
        return f"v{self.version}"

    @property
    def ip_flag(self) -> str:
        return f"-{self.version}"

    def host(self, address: str) -> str:
        return f"{address}/{self.length}"

    def flood(self, count: int) -> list[str]:
        base = ipaddress.ip_address(self.flood_base)
        return [self.host(str(base + i)) for i in range(count)]


V4 = Family(
    version=4,
    node="198.18.0.1",
    local="198.18.1.1",
    hostile="198.18.1.66",
    length=32,
    lan=24,
    victim="100.64.0.10",
    remote="100.64.0.70",
    covering="100.64.0.0/24",
    default="0.0.0.0/0",
    as_loop="100.64.50.0/24",
    far_hop="100.64.51.0/24",
    far_gateway="203.0.113.9",
    self_hop="100.64.52.0/24",
    legit="100.64.99.0/24",
    outside="198.51.100.0/24",
    flood_base="100.64.200.0",
)
V6 = Family(
    version=6,
    node="fd00:198:18::1",
    local="fd00:198:1::1",
    hostile="fd00:198:1::66",
    length=128,
    lan=64,
    victim="fd00:64::a",
    remote="fd00:64::1:a",
    covering="fd00:64::/120",
    default="::/0",
    as_loop="fd00:64:0:50::/64",
    far_hop="fd00:64:0:51::/64",
    far_gateway="2001:db8:ffff::9",
    self_hop="fd00:64:0:52::/64",
    legit="fd00:64:0:99::/64",
    outside="2001:db8:5::/48",
    flood_base="fd00:64:0:200::",
)
FAMILIES = (V4, V6)


def forged_routes(fam: Family, hijack: Sequence[str]) -> list[str]:
    """Every route of the matrix: hijacks of `hijack` (host addresses), the
    covering prefix, the default route, the forged-attribute prefixes, an
    honest pool prefix and one outside the pools."""
    return [
        *(fam.host(a) for a in hijack),
        fam.covering,
        fam.default,
        fam.as_loop,
        fam.far_hop,
        fam.self_hop,
        fam.legit,
        fam.outside,
    ]


def hostile_config(
    fam: Family, routes: Sequence[str], *, flood: int = 0, hide_as: bool = False
) -> str:
    """The hostile BIRD: static blackholes for `routes` (and `flood` host
    routes), exported to node1 with the forged attributes of the matrix.

    hide_as: announce as a route server does (`rs client`: its own AS is not
    prepended), with an empty AS path and the best origin, so that its path
    ties with a mesh path on length, origin and MED.
    """
    statics = "".join(f"  route {r} blackhole;\n" for r in [*routes, *fam.flood(flood)])
    hiding = (
        f"  bgp_path.empty; bgp_origin = ORIGIN_IGP; bgp_next_hop = {fam.hostile};\n"
        if hide_as
        else ""
    )
    # `error wait time`: a hostile peer comes straight back after a teardown.
    return f"""router id 198.18.1.66;
protocol device {{}}
protocol static hostile {{
  ipv{fam.version};
{statics}}}
filter forge {{
{hiding}  if net = {fam.as_loop} then bgp_path.prepend({NODE_AS});
  if net = {fam.far_hop} then bgp_next_hop = {fam.far_gateway};
  if net = {fam.self_hop} then bgp_next_hop = {fam.node};
  accept;
}}
protocol bgp victim {{
  local {fam.hostile} as {HOSTILE_AS};
  neighbor {fam.local} as {NODE_AS};
  hold time 9;
  connect retry time 1;
  error wait time 1, 2;
{"  rs client;" if hide_as else ""}
  ipv{fam.version} {{ import none; export filter forge; }};
}}
"""


def start_hostile(
    procs: Processes, netns: str, tmp_path: Path, fam: Family, routes: Sequence[str], **kw: Any
) -> Bird:
    return start_raw_bird(procs, netns, hostile_config(fam, routes, **kw), tmp_path, "hostile")


def reconfigure_hostile(bird: Bird, fam: Family, routes: Sequence[str], **kw: Any) -> None:
    reconfigure_raw_bird(bird, hostile_config(fam, routes, **kw))


def external_peer(fam: Family) -> dict[str, Any]:
    """node1's configuration of the hostile peer."""
    return {
        "address": fam.hostile,
        "asn": HOSTILE_AS,
        "role": "external",
        "local_address": fam.local,
    }


def link_hostile(netns: Namespaces, node_ns: str, fam: Family, node_if: str = "eth2") -> str:
    """The hostile peer's namespace, linked to node1's `node_if`."""
    peer_ns = netns.add("evil")
    netns.link(
        node_ns,
        peer_ns,
        [f"{fam.local}/{fam.lan}"],
        [f"{fam.hostile}/{fam.lan}"],
        names=(node_if, "eth1"),
    )
    return peer_ns


def peer_row(node: AgentNode, peer: str) -> dict[str, Any]:
    """The peer's row of `l3fabric status`."""
    rows = [p for p in node.status()["peers"] if p["peer"] == peer]
    if len(rows) != 1:
        raise AssertionError(f"{peer} is not one row of the peer table: {rows}")
    return rows[0]


def peer_detail(node: AgentNode, peer: str) -> dict[str, Any]:
    """`l3fabric status --peer PEER`."""
    proc = node.cli("status", "--peer", peer, "-o", "json", check=False)
    if not proc.stdout.startswith("{"):
        raise AssertionError(f"status --peer {peer}: {proc.returncode} {proc.stderr}")
    detail: dict[str, Any] = json.loads(proc.stdout)["peer"]
    return detail


def verdicts(node: AgentNode, peer: str) -> dict[str, str | None]:
    """prefix -> reject reason (None: accepted) of what `peer` sent, from
    the operator's view, `l3fabric routes --received`."""
    routes = node.cli_json("routes", "--received", "--peer", peer)["routes"]
    return {r["prefix"]: r["reason"] for r in routes}


def kernel_routes(node: AgentNode, fam: Family) -> str:
    """What l3fabric programmed into the kernel (route protocol 76)."""
    return ns_run(node.netns, ["ip", fam.ip_flag, "route", "show", "proto", "76"])


def kernel_prefixes(node: AgentNode, fam: Family) -> set[str]:
    """The destinations of the node's proto-76 routes, as prefixes."""
    found = set()
    for line in kernel_routes(node, fam).splitlines():
        dest = line.split()[0]
        if dest == "default":
            dest = fam.default
        found.add(str(ipaddress.ip_network(dest, strict=False)))
    return found


def wait_established(node: AgentNode, peers: Sequence[str], timeout: float = 40) -> None:
    def up() -> bool:
        states = node.peer_states()
        return all(states.get(p) == "Established" for p in peers)

    try:
        wait_for(up, timeout=timeout, what=f"{node.name}: sessions with {', '.join(peers)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.status()}\n{node.log_tail()}") from None
