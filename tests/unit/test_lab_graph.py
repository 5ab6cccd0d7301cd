"""`lab graph`: every image kind drawn, AS, role and workloads on each
node, a dead or silent daemon shown as such, and the self-contained HTML
page."""

from __future__ import annotations

import html.parser
import xml.dom.minidom

from l3fabric.lab import daemons, graph
from l3fabric.lab.graph_html import render_html
from l3fabric.lab.status import NodeReport
from l3fabric.lab.topology import ImageKind


def test_every_image_kind_has_a_colour_and_is_drawn() -> None:
    nodes = tuple(
        graph.GraphNode(f"n-{kind.value}", kind, ("198.18.0.1",), 0) for kind in ImageKind
    )
    assert set(graph.COLOURS) == set(ImageKind)
    svg = graph.render_svg(graph.Fabric("t", nodes, (), ()))
    doc = xml.dom.minidom.parseString(svg)
    assert len(doc.getElementsByTagName("g")) == len(ImageKind)
    for kind in ImageKind:
        assert f'class="node {kind.value}"' in svg


def test_node_lines_role_as_workloads_and_trouble() -> None:
    node = graph.GraphNode(
        "node1", ImageKind.L3FABRIC, ("198.18.0.1",), 0, 64512, "l3fabric node", 2
    )
    assert graph.node_lines(node) == ("node1", "l3fabric node", "AS 64512 \u00b7 2 workloads")
    one = graph.GraphNode("n", ImageKind.L3FABRIC, (), 0, None, "l3fabric node", 1)
    assert graph.node_lines(one)[1:] == ("l3fabric node", "1 workload")
    unknown = graph.GraphNode("n", ImageKind.L3FABRIC, (), 0, workloads=None)
    assert graph.node_lines(unknown)[1:] == ("l3fabric", "workloads unknown")
    leaf = graph.GraphNode("leaf1", ImageKind.BIRD, ("198.18.1.254",), 1, 65101, "leaf")
    assert graph.node_lines(leaf)[1:] == ("leaf", "AS 65101")
    host = graph.GraphNode("sw", ImageKind.HOST, ("198.18.0.9",), 1, None, "host")
    assert graph.node_lines(host)[2] == "198.18.0.9"
    dead = graph.GraphNode(
        "rr1", ImageKind.BIRD, (), 1, 64512, "route reflector", state="exited (bird)"
    )
    assert dead.down and graph.node_lines(dead)[2] == "AS 64512 \u00b7 exited (bird)"
    silent = graph.GraphNode("node2", ImageKind.L3FABRIC, (), 0, silent="agent")
    assert silent.down and graph.node_lines(silent)[2] == "no answer (agent)"
    for line in (*graph.node_lines(dead), *graph.node_lines(node)):
        assert len(line) <= 26  # about what a box holds at 12 px


def _reports() -> list[NodeReport]:
    return [
        NodeReport(
            "node1",
            ImageKind.L3FABRIC,
            "running",
            ("198.18.0.1",),
            64512,
            "l3fabric node",
            0,
            "agent",
            (daemons.Session("node1", "198.18.0.250", "Established"),),
            workloads=2,
            routes_in=4,
            routes_out=2,
        ),
        NodeReport(
            "node2",
            ImageKind.L3FABRIC,
            "running",
            ("198.18.0.2",),
            64512,
            "l3fabric node",
            0,
            "agent",
            None,
            error="agent does not answer: <refused & gone>",
        ),
        NodeReport(
            "rr1",
            ImageKind.BIRD,
            "exited (bird)",
            ("198.18.0.250",),
            64512,
            "route reflector",
            1,
            "bird",
            None,
            error="bird does not answer: no socket",
        ),
    ]


def test_fabric_of_reports_and_svg_marks_the_dead() -> None:
    fabric = graph.fabric_of("t", [("node1", "rr1"), ("node2", "rr1")], _reports())
    assert [s.a + "-" + s.b for s in fabric.sessions] == ["node1-rr1"]
    assert len(fabric.problems) == 2
    svg = graph.render_svg(fabric)
    doc = xml.dom.minidom.parseString(svg)
    groups = {
        g.getElementsByTagName("text")[0].firstChild.data: g  # type: ignore[union-attr]
        for g in doc.getElementsByTagName("g")
    }
    rr1 = groups["rr1"]
    assert rr1.getAttribute("class") == "node bird down"
    rect = rr1.getElementsByTagName("rect")[0]
    assert rect.getAttribute("stroke") == graph.DOWN and not rect.getAttribute("stroke-dasharray")
    assert "exited (bird)" in rr1.toxml()
    node2 = groups["node2"]
    assert node2.getElementsByTagName("rect")[0].getAttribute("stroke-dasharray")
    assert "no answer (agent)" in node2.toxml()
    assert groups["node1"].getAttribute("class") == "node l3fabric"
    assert "2 workloads" in groups["node1"].toxml() and "AS 64512" in groups["node1"].toxml()
    assert 'class="session established"' in svg


class _Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs_seen: list[tuple[str, str | None]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs_seen += attrs
        self.ids += [v for k, v in attrs if k == "id" and v]


def test_html_is_self_contained_with_every_node_and_session() -> None:
    fabric = graph.fabric_of("t", [("node1", "rr1"), ("node2", "rr1")], _reports())
    page = render_html(fabric)
    parser = _Page()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "svg" in parser.tags and "table" in parser.tags
    # Nothing fetched from anywhere: no script, link, image or frame, no
    # src/href attribute, no url() in the style.
    assert not {"script", "link", "img", "iframe", "object"} & set(parser.tags)
    assert not [k for k, _ in parser.attrs_seen if k in ("src", "href")]
    assert "url(" not in page and "@import" not in page
    assert parser.ids == ["node-node1", "node-node2", "node-rr1"]
    assert "&lt;refused &amp; gone&gt;" in page and "<refused" not in page
    assert "exited (bird)" in page and "no answer (agent)" in page
    assert "1/1" in page and "unknown" in page  # node1 up; node2 silent


def test_html_without_sessions_or_reports() -> None:
    nodes = (graph.GraphNode("a", ImageKind.HOST, (), 0),)
    page = render_html(graph.Fabric("empty", nodes, (), ()))
    assert "<p>none</p>" in page and 'id="node-a"' in page
