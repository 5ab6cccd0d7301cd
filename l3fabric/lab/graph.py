"""`lab graph`: the lab's nodes, links and BGP sessions as an SVG picture,
or as a self-contained HTML page (the picture and a table of nodes and
sessions; graph_html.py).

What is drawn comes from `lab status` (lab/status.py): each node's AS and
role from its config, its state as `lab inspect` says, its workloads from
its agent, and sessions from each speaker: l3fabric agents (`status`
peers), BIRD (`birdc show protocols all`) and FRR (`show bgp summary
json`). A peer address is matched to the node that has it; sessions to
addresses outside the lab are left out. Layout: l3fabric nodes at the
bottom, every other node one row higher per link hop away from them
(leaves, then spines), so the picture follows the fabric's tiers without a
layout engine.
"""

from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass
from xml.sax.saxutils import escape

from l3fabric.lab import daemons
from l3fabric.lab.deploy import Lab
from l3fabric.lab.status import NodeReport, gather, tiers
from l3fabric.lab.topology import ImageKind

__all__ = ["COLOURS", "Fabric", "GraphNode", "GraphSession", "collect", "render_svg", "tiers"]

COLOURS = {
    ImageKind.L3FABRIC: "#dbeafe",
    ImageKind.BIRD: "#fef3c7",
    ImageKind.FRR: "#fce7f3",
    ImageKind.PROMETHEUS: "#ffedd5",
    ImageKind.ETCD: "#dcfce7",
    ImageKind.GOBGP: "#ede9fe",
    ImageKind.HOST: "#e5e7eb",
}
UP, DOWN = "#16a34a", "#dc2626"
BORDER = "#374151"
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 180, 66, 40, 120, 40
BEND = 45  # how far a session curve bulges from its link line


@dataclass(frozen=True)
class GraphNode:
    name: str
    kind: ImageKind
    addresses: tuple[str, ...]
    tier: int  # 0 = bottom row
    asn: int | None = None
    role: str = ""
    workloads: int | None = None  # l3fabric nodes whose agent answered
    state: str = "running"  # as `lab inspect` says: running, exited (bird), ...
    silent: str = ""  # the speaker that did not answer, on a running node

    @property
    def down(self) -> bool:
        return self.state != "running" or bool(self.silent)

    @property
    def condition(self) -> str:
        """ "exited (bird)", "no answer (agent)", or "" for a healthy node."""
        if self.state != "running":
            return self.state
        return f"no answer ({self.silent})" if self.silent else ""


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
    reports: tuple[NodeReport, ...] = ()  # what `lab status` found, for the HTML tables


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


def graph_node(report: NodeReport) -> GraphNode:
    return GraphNode(
        report.name,
        report.kind,
        report.addresses,
        report.tier,
        asn=report.asn,
        role=report.role,
        workloads=report.workloads,
        state=report.state,
        silent=report.speaker if report.answers is False else "",
    )


def fabric_of(lab: str, links: list[tuple[str, str]], reports: list[NodeReport]) -> Fabric:
    """The picture of what `lab status` found (pure)."""
    owner_of = {_normal(a): r.name for r in reports for a in r.addresses}
    said = [s for r in reports for s in (r.sessions or ())]
    return Fabric(
        lab,
        tuple(graph_node(r) for r in reports),
        tuple(links),
        tuple(merge_sessions(said, owner_of)),
        tuple(f"{r.name}: {r.error}" for r in reports if r.error),
        tuple(reports),
    )


def collect(lab: Lab) -> Fabric:
    # A stopped daemon is drawn as such, with what the others say of it.
    reports = gather(lab)
    links = [(link.a.node, link.b.node) for link in lab.topology.links]
    return fabric_of(lab.name, links, reports)


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
        out += _node_svg(node, centre[node.name])
    legend_y = height - MARGIN / 2
    out.append(
        f'<text x="{MARGIN}" y="{legend_y:.0f}">grey: link   '
        f'<tspan fill="{UP}">dashed green: BGP established</tspan>   '
        f'<tspan fill="{DOWN}">dashed red: BGP not established; red border: daemon exited '
        "or not answering</tspan></text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def node_lines(node: GraphNode) -> tuple[str, str, str]:
    """The three lines of a node's box: its name; its role; its AS with its
    workloads (l3fabric) or what is wrong with it (a node with neither: its
    first address). Short enough for the box; the title has the rest."""
    parts = [f"AS {node.asn}"] if node.asn is not None else []
    if node.down:
        parts.append(node.condition)
    elif node.kind is ImageKind.L3FABRIC:
        count = node.workloads
        parts.append(
            "workloads unknown" if count is None else f"{count} workload" + "s" * (count != 1)
        )
    elif not parts:
        parts.append(next(iter(node.addresses), node.kind.value))
    return node.name, node.role or node.kind.value, " \u00b7 ".join(parts)


def _node_svg(node: GraphNode, centre: tuple[float, float]) -> list[str]:
    cx, cy = centre
    left, top_y = cx - BOX_W / 2, cy - BOX_H / 2
    name, second, third = node_lines(node)
    # A dead node keeps its place and colour, so the picture still shows
    # what it is; the border and the last line say it is down.
    stroke = (
        f'stroke="{DOWN}" stroke-width="3"'
        + (' stroke-dasharray="5,3"' if node.state == "running" else "")
        if node.down
        else f'stroke="{BORDER}"'
    )
    third_style = f' fill="{DOWN}" font-weight="bold"' if node.down else ""
    title = [node.kind.value, node.role, f"AS {node.asn}" if node.asn is not None else ""]
    title += [node.condition or "running", ", ".join(node.addresses)]
    return [
        f'<g class="node {node.kind.value}{" down" if node.down else ""}">'
        f'<rect x="{left:.0f}" y="{top_y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="8" '
        f'fill="{COLOURS[node.kind]}" {stroke}/>',
        f'<text x="{cx:.0f}" y="{cy - 12:.0f}" text-anchor="middle" font-weight="bold">'
        f"{escape(name)}</text>",
        f'<text x="{cx:.0f}" y="{cy + 4:.0f}" text-anchor="middle">{escape(second)}</text>',
        f'<text x="{cx:.0f}" y="{cy + 20:.0f}" text-anchor="middle"{third_style}>'
        f"{escape(third)}</text>",
        f"<title>{escape(' | '.join(t for t in title if t))}</title></g>",
    ]
