"""NodeReconciler at its seams: a fake kernel, a real route table. A quiet
pass dumps the node's links once and names the routes' interfaces from that
dump; a pass that made links dumps them again for the routes."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from l3fabric.agent.metrics import Metrics
from l3fabric.agent.node_reconcile import NodeReconciler
from l3fabric.agent.routetable import RouteTable
from l3fabric.model import Route, Workload
from tests.fakes import Clock, FakeKernel


class CountingKernel(FakeKernel):
    def __init__(self) -> None:
        super().__init__()
        self.link_dumps = 0
        self.route_dumps: list[bool] = []  # whether each was handed the links

    def node_links(self) -> dict[str, int]:
        self.link_dumps += 1
        return super().node_links()

    def dump_routes(self, links: Mapping[str, int] | None = None) -> list[Route]:
        self.route_dumps.append(links is not None)
        return super().dump_routes(links)


def test_a_quiet_pass_dumps_the_links_once_and_a_wiring_pass_twice() -> None:
    kernel = CountingKernel()
    clock = Clock()
    table = RouteTable(kernel, metrics=Metrics(CollectorRegistry()), clock=clock)
    reconciler = NodeReconciler(kernel, table, clock=clock, present=lambda _w: True)
    workload = Workload("w1", "node1", "/run/netns/w1", (ipaddress.ip_address("100.64.0.5"),))
    first = reconciler.run([workload], keep_unknown_learned=False)
    assert workload.host_iface in kernel.links and first.repaired.get("wire_workload") == 1, first
    assert kernel.route_dumps == [False]  # it made a link: the routes need a fresh dump
    kernel.link_dumps = 0
    again = reconciler.run([workload], keep_unknown_learned=False)
    assert again.repaired == {} and again.errors == []
    assert (kernel.link_dumps, kernel.route_dumps[-1]) == (1, True)
