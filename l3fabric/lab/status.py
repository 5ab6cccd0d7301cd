"""`lab status`: every node of a deployed lab in one view, like `fabric
status` but with every node's own answer, which only the lab can collect
(it reaches each node's agent through the node's control socket, and each
BIRD or FRR daemon through its own tool).

What a node is (its AS, its role) comes from the daemon configs the
topology binds into it, so a dead daemon still has one; what it does
(sessions, workloads, routes) comes from the daemon, and a daemon that does
not answer is a row that says so, never the end of the view.

The parsing and row building are pure; `gather` is the I/O.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ipaddress
import logging
import re
import subprocess
from dataclasses import dataclass, replace
from typing import Any

from l3fabric import control
from l3fabric.config import ConfigError, load_config
from l3fabric.lab import daemons
from l3fabric.lab.runtime import in_node, run
from l3fabric.lab.topology import ImageKind, Node

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
# What answers for a node's BGP sessions: the one daemon a row names when
# it is silent.
SPEAKERS = {
    ImageKind.L3FABRIC: "agent",
    ImageKind.BIRD: "bird",
    ImageKind.FRR: "bgpd",
    ImageKind.GOBGP: "gobgpd",
}
CONFIG_FILES = {
    ImageKind.BIRD: "/etc/bird/bird.conf",
    ImageKind.FRR: "/etc/frr/frr.conf",
    ImageKind.GOBGP: daemons.GOBGP_CONFIG,
}
ROLE_NODE = "l3fabric node"
ROLE_RR = "route reflector"
ROLE_LEAF = "leaf (route reflector)"
ROLE_TOR = "ToR"
ROLE_SPINE = "spine"
ROLE_ROUTER = "router"
OTHER_ROLES = {
    ImageKind.ETCD: "etcd member",
    ImageKind.PROMETHEUS: "prometheus",
    ImageKind.HOST: "host",
}


# -- what the configs say ----------------------------------------------------------


@dataclass(frozen=True)
class RouterConfig:
    """The BGP facts of a router's config file: its AS, its neighbours
    (an address or a range, with the AS configured for it; None for FRR's
    `internal`/`external` or an AS not given) and whether it reflects routes."""

    asn: int | None
    neighbours: tuple[tuple[str, int | None], ...] = ()
    reflects: bool = False
    external: bool = False  # FRR's `remote-as external`

    @property
    def ebgp(self) -> bool:
        return self.external or any(
            asn is not None and asn != self.asn for _, asn in self.neighbours
        )


def _strip_comments(text: str, marker: str) -> list[str]:
    return [line.split(marker, 1)[0] for line in text.splitlines()]


def parse_bird_config(text: str) -> RouterConfig:
    """`local [ADDR] as N`, `neighbor [range] ADDR [port P] as N`, `rr client`."""
    lines = _strip_comments(text, "#")
    body = "\n".join(lines)
    local = re.search(r"\blocal\b[^;{}]*?\bas\s+(\d+)", body)
    neighbours = tuple(
        (m.group(1), int(m.group(2)))
        for m in re.finditer(
            r"\bneighbor\s+(?:range\s+)?([0-9a-fA-F:.]+(?:/\d+)?)(?:\s+port\s+\d+)?\s+as\s+(\d+)",
            body,
        )
    )
    reflects = re.search(r"\brr\s+client\b", body) is not None
    return RouterConfig(int(local.group(1)) if local else None, neighbours, reflects)


def parse_frr_config(text: str) -> RouterConfig:
    """`router bgp N`, `neighbor X remote-as N|internal|external`,
    `neighbor X route-reflector-client`, `bgp listen range NET peer-group G`."""
    lines = _strip_comments(text, "!")
    asn = None
    remote: dict[str, int | None] = {}
    external = False
    reflects = False
    ranges: list[tuple[str, str]] = []
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[:2] == ["router", "bgp"] and words[2].isdigit():
            asn = asn if asn is not None else int(words[2])
        elif len(words) >= 4 and words[0] == "neighbor" and words[2] == "remote-as":
            value = words[3]
            remote[words[1]] = int(value) if value.isdigit() else None
            external = external or value == "external"
        elif len(words) >= 3 and words[0] == "neighbor" and words[2] == "route-reflector-client":
            reflects = True
        elif words[:3] == ["bgp", "listen", "range"] and len(words) >= 6:
            ranges.append((words[3], words[5]))
    neighbours = [(peer, peer_asn) for peer, peer_asn in remote.items() if _is_address(peer)]
    # A listen range takes the AS of its peer group.
    neighbours += [(net, remote.get(group)) for net, group in ranges]
    return RouterConfig(asn, tuple(neighbours), reflects, external)


def parse_gobgp_config(text: str) -> RouterConfig:
    """gobgpd's TOML: `as`, `neighbor-address`, `peer-as`, `route-reflector-client`."""
    lines = _strip_comments(text, "#")
    asn = None
    neighbours: list[tuple[str, int | None]] = []
    address = None
    reflects = False
    for line in lines:
        match = re.match(r'^\s*([a-z-]+)\s*=\s*"?([^"\s]+)"?\s*$', line)
        if not match:
            continue
        key, value = match.groups()
        if key == "as" and asn is None and value.isdigit():
            asn = int(value)
        elif key == "neighbor-address":
            address = value
        elif key == "peer-as" and address is not None and value.isdigit():
            neighbours.append((address, int(value)))
            address = None
        elif key == "route-reflector-client" and value == "true":
            reflects = True
    return RouterConfig(asn, tuple(neighbours), reflects)


PARSERS = {
    ImageKind.BIRD: parse_bird_config,
    ImageKind.FRR: parse_frr_config,
    ImageKind.GOBGP: parse_gobgp_config,
}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def _peers_with(config: RouterConfig, addresses: set[str]) -> bool:
    """Whether one of the config's neighbours (address or range) is one of
    `addresses`."""
    for neighbour, _ in config.neighbours:
        try:
            network = ipaddress.ip_network(neighbour, strict=False)
        except ValueError:
            continue
        for address in addresses:
            try:
                if ipaddress.ip_address(address) in network:
                    return True
            except ValueError:
                continue
    return False


def role(kind: ImageKind, config: RouterConfig | None, tier: int, node_addresses: set[str]) -> str:
    """What a node is in the fabric, only as far as its config tells: a
    router that reflects and speaks eBGP is a leaf; one that only reflects,
    a route reflector; one with l3fabric nodes as neighbours, their ToR;
    an eBGP router two or more link hops above the nodes, a spine."""
    if kind is ImageKind.L3FABRIC:
        return ROLE_NODE
    if kind in OTHER_ROLES:
        return OTHER_ROLES[kind]
    if config is None:
        return ROLE_ROUTER
    if config.reflects:
        return ROLE_LEAF if config.ebgp else ROLE_RR
    if _peers_with(config, node_addresses):
        return ROLE_TOR
    if config.ebgp and tier >= 2:
        return ROLE_SPINE
    return ROLE_ROUTER


def tiers(nodes: list[str], links: list[tuple[str, str]], bottom: set[str]) -> dict[str, int]:
    """Link hops from the nearest bottom node (BFS); unreachable nodes sit
    on the bottom row."""
    neighbours: dict[str, set[str]] = collections.defaultdict(set)
    for a, b in links:
        neighbours[a].add(b)
        neighbours[b].add(a)
    distance = {n: 0 for n in bottom}
    queue = collections.deque(bottom)
    while queue:
        current = queue.popleft()
        for nxt in sorted(neighbours[current]):
            if nxt not in distance:
                distance[nxt] = distance[current] + 1
                queue.append(nxt)
    return {n: distance.get(n, 0) for n in nodes}


# -- what the daemons say ----------------------------------------------------------


@dataclass(frozen=True)
class NodeReport:
    """One node as the lab found it. `sessions` is None when its speaker
    did not answer (`error` says why) or has no session reader; a node that
    speaks no BGP has `speaker` "" and no sessions."""

    name: str
    kind: ImageKind
    state: str  # as `lab inspect` reports it
    addresses: tuple[str, ...] = ()
    asn: int | None = None
    role: str = ""
    tier: int = 0
    speaker: str = ""
    sessions: tuple[daemons.Session, ...] | None = ()
    error: str = ""
    workloads: int | None = None
    routes_in: int | None = None
    routes_out: int | None = None

    @property
    def answers(self) -> bool | None:
        """Whether the node's BGP speaker answered (None: it has none)."""
        return None if not self.speaker else not self.error


@dataclass(frozen=True)
class AgentAnswer:
    """What one agent said of itself (the counts `fabric status` shows)."""

    asn: int | None
    workloads: int | None
    sessions: tuple[daemons.Session, ...]
    routes_in: int | None
    routes_out: int | None


def agent_answer(
    node: str,
    status: dict[str, Any],
    programmed: dict[str, Any] | None,
    advertised: dict[str, Any] | None,
) -> AgentAnswer:
    """From `status` and the `routes` views; None: the view was not asked."""
    peers = status.get("peers") or []
    sessions = tuple(
        daemons.Session(
            node, str(p.get("peer", "")), str(p.get("state", "?")), str(p.get("name", ""))
        )
        for p in peers
    )
    routes_in = (
        sum(1 for r in programmed.get("routes", []) if r.get("kind") == "learned")
        if programmed is not None
        else None
    )
    if not peers:
        routes_out: int | None = 0  # no neighbours: nothing is advertised
    else:
        routes_out = len(advertised.get("routes", [])) if advertised is not None else None
    asn = status.get("asn")
    workloads = status.get("workloads")
    return AgentAnswer(
        asn if isinstance(asn, int) else None,
        workloads if isinstance(workloads, int) else None,
        sessions,
        routes_in,
        routes_out,
    )


def status_row(report: NodeReport) -> dict[str, Any]:
    """A `fabric status` row (name, asn, state, peers_up, peers_total,
    workloads, routes_in, routes_out) with the lab's own fields."""
    sessions = report.sessions
    up = sum(1 for s in sessions if s.established) if sessions is not None else None
    return {
        "name": report.name,
        "kind": report.kind.value,
        "role": report.role,
        "state": report.state,
        "asn": report.asn,
        "speaker": report.speaker or None,
        "answers": report.answers,
        "error": report.error or None,
        "peers_up": up,
        "peers_total": len(sessions) if sessions is not None else None,
        "sessions": [
            {"peer": s.peer_address, "name": s.name, "state": s.state} for s in sessions or ()
        ],
        "workloads": report.workloads,
        "routes_in": report.routes_in,
        "routes_out": report.routes_out,
        "addresses": list(report.addresses),
    }


def healthy(rows: list[dict[str, Any]]) -> bool:
    """Every node running, every speaker answering, every session
    established (what `lab status` exits 0 for)."""
    for row in rows:
        if row["state"] != "running" or row["answers"] is False:
            return False
        if row["speaker"] and row["peers_total"] is None:
            return False
        if row["peers_up"] is not None and row["peers_up"] != row["peers_total"]:
            return False
    return True


# -- the I/O -----------------------------------------------------------------------


def router_config(node: Node) -> RouterConfig | None:
    """The node's BGP config as the topology binds it; None when it has
    none or it cannot be read."""
    parse = PARSERS.get(node.image_kind)
    inside = CONFIG_FILES.get(node.image_kind)
    if parse is None or inside is None:
        return None
    source = node.bound_source(inside)
    if source is None:
        return None
    try:
        return parse(source.read_text(errors="replace"))
    except OSError:
        return None


def configured_asn(node: Node) -> int | None:
    """An l3fabric node's AS from the node config it is given."""
    source = node.bound_source(daemons.AGENT_CONFIG)
    if source is None:
        return None
    try:
        return load_config(source).node.asn
    except (ConfigError, OSError):
        return None


def ask_agent(ctx: daemons.NodeContext, timeout: float) -> AgentAnswer:
    """status and the routes views over the node's control socket, as
    `fabric status` asks its local agent."""
    socket = ctx.host_path(daemons.agent_state_dir(ctx) / "agent.sock")
    name = ctx.node.name
    if socket is None:  # only status can be asked through the CLI inside the node
        return agent_answer(name, daemons.agent_call(ctx, "status"), None, None)
    status = control.call("status", {}, socket_path=socket, timeout=timeout)
    programmed = control.call("routes", {"view": "programmed"}, socket_path=socket, timeout=timeout)
    advertised = None
    if status.get("peers"):
        advertised = control.call(
            "routes", {"view": "advertised"}, socket_path=socket, timeout=timeout
        )
    return agent_answer(name, status, programmed, advertised)


def router_sessions(ctx: daemons.NodeContext, timeout: float) -> list[daemons.Session]:
    """A BIRD or FRR node's sessions, as daemons.sessions reads them but
    bounded by `timeout`: a frozen daemon must not hold up the view."""
    name = ctx.node.name
    if ctx.node.image_kind is ImageKind.BIRD:
        socket = str(ctx.run_dir / "bird" / "bird.ctl")
        out = run(["birdc", "-s", socket, "show", "protocols", "all"], timeout=timeout)
        return daemons.parse_bird_protocols(name, out.stdout)
    if ctx.node.image_kind is ImageKind.FRR:
        argv = in_node(ctx.holder, ["vtysh", "-c", "show bgp summary json"])
        return daemons.parse_frr_summary(name, run(argv, timeout=timeout).stdout)
    return daemons.sessions(ctx)


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no answer in {timeout:g}s"
    if isinstance(exc, control.AgentUnreachable):
        return exc.brief
    if isinstance(exc, control.ControlError):
        return exc.message
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _ask(lab: Any, state: Any, base: NodeReport, node: Node, timeout: float) -> NodeReport:
    """Fill in what the node's speaker says; an error is kept on the row."""
    if not base.speaker:
        return base
    try:
        ctx = lab.context(state, node)
        if node.image_kind is ImageKind.L3FABRIC:
            answer = ask_agent(ctx, timeout)
            return replace(
                base,
                asn=answer.asn if answer.asn is not None else base.asn,
                sessions=answer.sessions,
                workloads=answer.workloads,
                routes_in=answer.routes_in,
                routes_out=answer.routes_out,
            )
        if node.image_kind is ImageKind.GOBGP:
            # No reader of gobgp's sessions: unknown, not "none".
            return replace(base, sessions=None)
        return replace(base, sessions=tuple(router_sessions(ctx, timeout)))
    except Exception as exc:  # a dead or wedged daemon is a row, not the end
        # The row carries the error; the log is for --debug runs.
        log.debug("node does not answer", extra={"node": node.name, "error": str(exc)})
        return replace(
            base, sessions=None, error=f"{base.speaker} does not answer: {_describe(exc, timeout)}"
        )


def gather(
    lab: Any, timeout: float = 5.0, inspected: list[dict[str, Any]] | None = None
) -> list[NodeReport]:
    """Every node of the lab (raises LabError when it is not deployed)."""
    from l3fabric.lab.deploy import inspect

    rows = inspected if inspected is not None else inspect(lab)
    state = lab.state()
    topo = lab.topology
    by_name = {r["node"]: r for r in rows}
    links = [(link.a.node, link.b.node) for link in topo.links]
    bottom = {n.name for n in topo.nodes if n.image_kind is ImageKind.L3FABRIC}
    tier_of = tiers([n.name for n in topo.nodes], links, bottom or {topo.nodes[0].name})
    node_addresses = {
        a.split("/")[0]
        for n in topo.nodes
        if n.image_kind is ImageKind.L3FABRIC
        for a in by_name.get(n.name, {}).get("addresses", [])
    }
    bases = []
    for node in topo.nodes:
        row = by_name.get(node.name, {})
        config = router_config(node)
        asn = config.asn if config is not None else None
        if node.image_kind is ImageKind.L3FABRIC:
            asn = configured_asn(node)
        bases.append(
            NodeReport(
                name=node.name,
                kind=node.image_kind,
                state=str(row.get("state", "exited")),
                addresses=tuple(a.split("/")[0] for a in row.get("addresses", [])),
                asn=asn,
                role=role(node.image_kind, config, tier_of[node.name], node_addresses),
                tier=tier_of[node.name],
                speaker=SPEAKERS.get(node.image_kind, ""),
            )
        )
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(_ask, lab, state, base, node, timeout)
            for base, node in zip(bases, topo.nodes, strict=True)
        ]
        return [f.result() for f in futures]
