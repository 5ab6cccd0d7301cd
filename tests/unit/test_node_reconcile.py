"""NodeReconciler at its seams: a fake kernel, a real route table. A quiet
pass dumps the node's links once and names the routes' interfaces from that
dump; a pass that made links dumps them again for the routes."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from l3fabric.agent.metrics import Metrics
from l3fabric.agent.node_reconcile import FULL_PASS_AT_LEAST_EVERY, NodeReconciler
from l3fabric.agent.routetable import RouteTable
from l3fabric.dataplane.base import Observed
from l3fabric.model import NextHop, Route, Workload
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


def _quiet_node() -> tuple[CountingKernel, Clock, RouteTable, NodeReconciler, Workload]:
    """A node whose one workload is wired and whose kernel has been read
    since: the next periodic pass has nothing to look for."""
    kernel = CountingKernel()
    clock = Clock()
    table = RouteTable(kernel, metrics=Metrics(CollectorRegistry()), clock=clock)
    reconciler = NodeReconciler(kernel, table, clock=clock, present=lambda _w: True)
    workload = Workload("w1", "node1", "/run/netns/w1", (ipaddress.ip_address("100.64.0.5"),))
    reconciler.run([workload], keep_unknown_learned=False)  # wires it
    assert reconciler.run([workload], keep_unknown_learned=False).kernel_read  # reads what it wrote
    kernel.link_dumps, kernel.route_dumps = 0, []
    return kernel, clock, table, reconciler, workload


def test_a_pass_with_nothing_changed_reads_neither_links_nor_routes() -> None:
    kernel, clock, _table, reconciler, workload = _quiet_node()
    for _ in range(3):
        clock.now += 30
        report = reconciler.run([workload], keep_unknown_learned=False)
        assert not report.kernel_read and report.repaired == {} and report.errors == []
    assert (kernel.link_dumps, kernel.route_dumps) == (0, [])


def test_a_change_in_the_kernel_makes_the_next_pass_read_and_repair() -> None:
    kernel, _clock, _table, reconciler, workload = _quiet_node()
    (route,) = kernel.routes.values()
    del kernel.routes[route.prefix]  # someone's `ip route del`
    report = reconciler.run([workload], keep_unknown_learned=False)
    assert report.kernel_read and report.repaired == {"replace_route_local": 1}, report
    assert kernel.routes == {route.prefix: route}


def test_changed_inputs_make_the_pass_read() -> None:
    kernel, _clock, _table, reconciler, workload = _quiet_node()
    other = Workload("w2", "node1", "/run/netns/w2", (ipaddress.ip_address("100.64.0.6"),))
    assert reconciler.run([workload, other], keep_unknown_learned=False).kernel_read
    assert other.host_iface in kernel.links
    # The rule for learned routes after a restart changed: stale ones may go now.
    assert reconciler.run([workload, other], keep_unknown_learned=True).kernel_read
    assert not reconciler.run([workload, other], keep_unknown_learned=True).kernel_read


def test_pending_route_writes_make_the_pass_read() -> None:
    _kernel, _clock, table, reconciler, workload = _quiet_node()
    learned = Route(
        ipaddress.ip_network("100.64.7.0/26"), (NextHop(ipaddress.ip_address("198.18.0.2")),)
    )
    table.learned_changed([learned], [])  # not flushed yet
    assert reconciler.run([workload], keep_unknown_learned=False).kernel_read
    assert not table.dirty


def test_an_operator_pass_a_failed_pass_and_a_long_quiet_spell_read_anyway() -> None:
    kernel, clock, _table, reconciler, workload = _quiet_node()
    assert reconciler.run([workload], keep_unknown_learned=False, read_kernel=True).kernel_read
    assert reconciler.run([workload], keep_unknown_learned=False, look_inside_all=True).kernel_read
    clock.now += FULL_PASS_AT_LEAST_EVERY
    assert reconciler.run([workload], keep_unknown_learned=False).kernel_read
    assert not reconciler.run([workload], keep_unknown_learned=False).kernel_read
    kernel.fail_prefixes.add(ipaddress.ip_network("100.64.0.5/32"))
    kernel.routes.clear()
    failed = reconciler.run([workload], keep_unknown_learned=False)
    assert failed.kernel_read and failed.errors
    kernel.fail_prefixes.clear()
    # Not known to be clean: read again even though the kernel did not change.
    assert kernel.kernel_changed() is False
    retried = reconciler.run([workload], keep_unknown_learned=False)
    assert retried.kernel_read and retried.errors == [] and len(kernel.routes) == 1


def test_a_quiet_pass_still_looks_inside_its_share_of_workloads() -> None:
    kernel, _clock, _table, reconciler, workload = _quiet_node()
    # Inside the workload's namespace, which the node's notifications never see.
    kernel.observed[workload.host_iface] = Observed(netns_present=True, host_present=True)
    report = reconciler.run([workload], keep_unknown_learned=False)
    assert not report.kernel_read and report.repaired == {"workload_side": 1}, report


def test_an_error_in_a_quiet_pass_makes_the_next_pass_read() -> None:
    kernel, _clock, _table, reconciler, workload = _quiet_node()

    def broken(_w: Workload) -> Observed:
        raise OSError("netlink went away")

    kernel.inspect = broken  # type: ignore[method-assign]
    failed = reconciler.run([workload], keep_unknown_learned=False)
    assert not failed.kernel_read and failed.errors
    retried = reconciler.run([workload], keep_unknown_learned=False)
    assert retried.read_because == ("inputs changed",)
