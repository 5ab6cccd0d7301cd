"""`lab graph --html`: one self-contained page (the SVG inline, a table of
nodes and one of sessions), with no script, font, stylesheet or image
from anywhere else, so a browser opens it offline."""

from __future__ import annotations

from html import escape
from typing import Any

from l3fabric.lab.graph import DOWN, UP, Fabric, render_svg
from l3fabric.lab.status import UNKNOWN, status_row

STYLE = f"""
body {{ font-family: sans-serif; margin: 1.5em; color: #111827; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #d1d5db; padding: 0.25em 0.6em; text-align: left; }}
th {{ background: #f3f4f6; }}
td.num {{ text-align: right; }}
.up {{ color: {UP}; }}
.down {{ color: {DOWN}; font-weight: bold; }}
.picture {{ overflow-x: auto; }}
"""


def _cell(value: Any, css: str = "") -> str:
    text = UNKNOWN if value is None else str(value)
    return f'<td class="{css}">{escape(text)}</td>' if css else f"<td>{escape(text)}</td>"


def _table(headers: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def node_rows(fabric: Fabric) -> list[str]:
    """One row per node, from what `lab status` found (from the graph's own
    nodes for a picture made without it)."""
    rows = []
    reports = {r.name: status_row(r) for r in fabric.reports}
    for node in fabric.nodes:
        row = reports.get(node.name, {})
        peers = (
            f"{row['peers_up']}/{row['peers_total']}"
            if row.get("peers_total") is not None
            else ("-" if not row.get("speaker") else UNKNOWN)
        )
        l3fabric = node.kind.value == "l3fabric"
        state = node.condition or "running"
        cells = [
            _cell(node.name),
            _cell(node.kind.value),
            _cell(node.role or "-"),
            _cell(state, "down" if node.down else "up"),
            _cell(node.asn if node.asn is not None else "-"),
            _cell(peers, "num"),
            _cell(node.workloads if l3fabric else "-", "num"),
            _cell(row.get("routes_in") if l3fabric else "-", "num"),
            _cell(row.get("routes_out") if l3fabric else "-", "num"),
            _cell(", ".join(node.addresses) or "-"),
        ]
        rows.append(f'<tr id="node-{escape(node.name)}">' + "".join(cells) + "</tr>")
    return rows


def session_rows(fabric: Fabric) -> list[str]:
    rows = []
    for s in fabric.sessions:
        cells = [
            _cell(s.a),
            _cell(s.b),
            _cell("+".join(s.families)),
            _cell("established" if s.established else "down", "up" if s.established else "down"),
            _cell(", ".join(sorted(set(s.states)))),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def render_html(fabric: Fabric) -> str:
    up = sum(1 for s in fabric.sessions if s.established)
    down_nodes = [n.name for n in fabric.nodes if n.down]
    title = f"lab {fabric.lab}"
    summary = (
        f"{len(fabric.nodes)} nodes ({len(down_nodes)} down), {len(fabric.links)} links, "
        f"{len(fabric.sessions)} BGP sessions ({up} established)"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(summary)}</p>",
        f'<div class="picture">\n{render_svg(fabric)}</div>',
        "<h2>Nodes</h2>",
        _table(
            (
                "node",
                "kind",
                "role",
                "state",
                "AS",
                "sessions up",
                "workloads",
                "routes in",
                "routes out",
                "addresses",
            ),
            node_rows(fabric),
        ),
        "<h2>BGP sessions</h2>",
        _table(("node", "peer node", "families", "state", "as reported"), session_rows(fabric))
        if fabric.sessions
        else "<p>none</p>",
    ]
    if fabric.problems:
        parts += ["<h2>Not answering</h2>", "<ul>"]
        parts += [f'<li class="down">{escape(p)}</li>' for p in fabric.problems]
        parts.append("</ul>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
