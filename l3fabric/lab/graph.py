"""`lab graph`: the lab's nodes, links and BGP sessions as an SVG picture.

Sessions come from each speaker: l3fabric agents (`status` peers), BIRD
(`birdc show protocols all`) and FRR (`show bgp summary json`). A peer
address is matched to the node that has it; sessions to addresses outside
the lab are left out. Layout: l3fabric nodes at the bottom, every other node
one row higher per link hop away from them (leaves, then spines), so the
picture follows the fabric's tiers without a layout engine.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
from dataclasses import dataclass
from xml.sax.saxutils import escape

from l3fabric.lab import daemons
from l3fabric.lab.deploy import Lab, node_addresses, node_context
from l3fabric.lab.topology import ImageKind

log = logging.getLogger(__name__)

COLOURS = {
    ImageKind.L3FABRIC: "#dbeafe",
    ImageKind.BIRD: "#fef3c7",
    ImageKind.FRR: "#fce7f3",
    ImageKind.HOST: "#e5e7eb",
}
UP, DOWN = "#16a34a", "#dc2626"
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 54, 40, 120, 40
BEND = 45  # how far a session curve bulges from its link line


@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: ImageKind
    addresses: tuple[str, ...]
    tier: int  # 0 = bottom row


@dataclass(frozen=True)
class GraphSession:
    a: str
    b: str
    families: tuple[str, ...]
    states: tuple[str, ...]  # as reported, one per (end, family)

    @property
    def established(self) -> bool:
        return all(s.lower() == "established" for s in self.states)


@dataclass(frozen=True)
class Fabric:
    lab: str
    nodes: tuple[GraphNode, ...]
    links: tuple[tuple[str, str], ...]
    sessions: tuple[GraphSession, ...]
    problems: tuple[str, ...] = ()


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


def merge_sessions(reports: list[daemons.Session], owner_of: dict[str, str]) -> list[GraphSession]:
    """One edge per pair of nodes, from the sessions either end reports."""
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for s in reports:
        peer = owner_of.get(_normal(s.peer_address))
        if peer is None or peer == s.node:
            continue
        family = f"v{ipaddress.ip_address(_normal(s.peer_address)).version}"
        a, b = sorted((s.node, peer))
        by_pair[(a, b)].append((family, s.state))
    return [
        GraphSession(a, b, tuple(sorted({f for f, _ in items})), tuple(st for _, st in items))
        for (a, b), items in sorted(by_pair.items())
    ]


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%")[0]))
    except ValueError:
        return address


def collect(lab: Lab) -> Fabric:
    state = lab.state()
    topo = lab.topology
    links = [(link.a.node, link.b.node) for link in topo.links]
    bottom = {n.name for n in topo.nodes if n.image_kind is ImageKind.L3FABRIC}
    tier_of = tiers([n.name for n in topo.nodes], links, bottom or {topo.nodes[0].name})
    owner_of: dict[str, str] = {}
    nodes = []
    for node in topo.nodes:
        addresses = tuple(a.split("/")[0] for a in node_addresses(lab, node.name))
        owner_of.update({_normal(a): node.name for a in addresses})
        nodes.append(GraphNode(node.name, node.image_kind, addresses, tier_of[node.name]))
    reports: list[daemons.Session] = []
    problems = []
    for node in topo.nodes:
        try:
            reports += daemons.sessions(node_context(lab, state, node.name))
        except Exception as exc:  # a stopped daemon: draw what the others say
            problems.append(f"{node.name}: {exc}")
            log.warning("no BGP sessions from %s: %s", node.name, exc)
    return Fabric(
        lab.name,
        tuple(nodes),
        tuple(links),
        tuple(merge_sessions(reports, owner_of)),
        tuple(problems),
    )


def render_svg(fabric: Fabric) -> str:
    rows: dict[int, list[GraphNode]] = collections.defaultdict(list)
    for node in fabric.nodes:
        rows[node.tier].append(node)
    top = max(rows) if rows else 0
    widest = max((len(r) for r in rows.values()), default=1)
    width = MARGIN * 2 + widest * BOX_W + (widest - 1) * GAP_X
    height = MARGIN * 2 + 40 + (top + 1) * BOX_H + top * GAP_Y + 40
    centre: dict[str, tuple[float, float]] = {}
    for tier, members in rows.items():
        span = len(members) * BOX_W + (len(members) - 1) * GAP_X
        x0 = (width - span) / 2
        y = MARGIN + 40 + (top - tier) * (BOX_H + GAP_Y)
        for i, node in enumerate(members):
            centre[node.name] = (x0 + i * (BOX_W + GAP_X) + BOX_W / 2, y + BOX_H / 2)
    up = sum(1 for s in fabric.sessions if s.established)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN}" y="{MARGIN}" font-size="16" font-weight="bold">'
        f"lab {escape(fabric.lab)}: {len(fabric.sessions)} BGP sessions, {up} established</text>",
    ]
    for a, b in fabric.links:
        (x1, y1), (x2, y2) = centre[a], centre[b]
        out.append(
            f'<line class="link" x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
            'stroke="#9ca3af" stroke-width="3"/>'
        )
    for s in fabric.sessions:
        (x1, y1), (x2, y2) = centre[s.a], centre[s.b]
        # Bend sessions away from the straight link line so both stay
        # visible, always to the same side whichever end is listed first.
        dx, dy = x2 - x1, y2 - y1
        length = max((dx * dx + dy * dy) ** 0.5, 1.0)
        nx, ny = -dy / length, dx / length
        if nx < 0 or (nx == 0 and ny > 0):
            nx, ny = -nx, -ny
        mx, my = (x1 + x2) / 2 + nx * BEND, (y1 + y2) / 2 + ny * BEND
        colour = UP if s.established else DOWN
        state = "established" if s.established else "down"
        out.append(
            f'<path class="session {state}" d="M{x1:.0f},{y1:.0f} Q{mx:.0f},{my:.0f} '
            f'{x2:.0f},{y2:.0f}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="6,4"><title>{escape(s.a)} - {escape(s.b)} '
            f"({'+'.join(s.families)}): {escape(', '.join(sorted(set(s.states))))}</title></path>"
        )
    for node in fabric.nodes:
        cx, cy = centre[node.name]
        left, top_y = cx - BOX_W / 2, cy - BOX_H / 2
        first = next(iter(node.addresses), "")
        out += [
            f'<g class="node {node.kind.value}"><rect x="{left:.0f}" y="{top_y:.0f}" '
            f'width="{BOX_W}" height="{BOX_H}" rx="8" fill="{COLOURS[node.kind]}" '
            'stroke="#374151"/>',
            f'<text x="{cx:.0f}" y="{cy - 6:.0f}" text-anchor="middle" font-weight="bold">'
            f"{escape(node.name)}</text>",
            f'<text x="{cx:.0f}" y="{cy + 10:.0f}" text-anchor="middle">{node.kind.value}'
            f"{' ' + escape(first) if first else ''}</text>",
            f"<title>{escape(', '.join(node.addresses))}</title></g>",
        ]
    legend_y = height - MARGIN / 2
    out.append(
        f'<text x="{MARGIN}" y="{legend_y:.0f}">grey: link   '
        f'<tspan fill="{UP}">dashed green: BGP established</tspan>   '
        f'<tspan fill="{DOWN}">dashed red: BGP not established</tspan></text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
