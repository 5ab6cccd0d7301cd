"""The pure planners: links from workload records, routes as a diff."""

from __future__ import annotations

import ipaddress

from l3fabric.model import NextHop, Route, RouteKind, Workload, workload_routes
from l3fabric.reconcile import (
    DeleteLink,
    DeleteRoute,
    Orphan,
    ReplaceRoute,
    WireWorkload,
    apply_links,
    plan_links,
    plan_routes,
)
from tests.fakes import FakeKernel

NS = "/run/netns/w1"


def wl(name: str, *addrs: str, netns: str = NS) -> Workload:
    return Workload(name, "node1", netns, tuple(ipaddress.ip_address(a) for a in addrs))


def learned(prefix: str, *gateways: str) -> Route:
    return Route(
        ipaddress.ip_network(prefix),
        tuple(NextHop(gateway=ipaddress.ip_address(g)) for g in gateways),
        RouteKind.LEARNED,
    )


def test_wired_workloads_plan_nothing() -> None:
    workloads = (wl("a", "100.64.0.1", "fd00:64::1"), wl("b", "100.64.0.2"))
    links = frozenset(w.host_iface for w in workloads)
    assert plan_links(workloads, links, frozenset()) == []


def test_missing_link_is_rewired_when_netns_exists() -> None:
    a = wl("a", "100.64.0.1")
    assert plan_links((a,), frozenset(), frozenset({NS})) == [WireWorkload(a)]


def test_workload_whose_netns_is_gone_is_an_orphan() -> None:
    a = wl("a", "100.64.0.1")
    assert plan_links((a,), frozenset(), frozenset()) == [Orphan(a)]


def test_link_without_workload_is_deleted() -> None:
    a = wl("a", "100.64.0.1")
    assert plan_links((), frozenset({a.host_iface}), frozenset()) == [DeleteLink(a.host_iface)]


def test_apply_links_wires_unwires_and_reports_orphans() -> None:
    a, b, c = wl("a", "100.64.0.1"), wl("b", "100.64.0.2"), wl("c", "100.64.0.3")
    kernel = FakeKernel()
    kernel.attach(c)
    result = apply_links([WireWorkload(a), Orphan(b), DeleteLink(c.host_iface)], kernel)
    assert set(kernel.links) == {a.host_iface}
    assert result.orphans == ["b"]
    assert result.by_kind == {"wire_workload": 1, "delete_link": 1}


def test_one_failing_wire_does_not_stop_the_others() -> None:
    a, b = wl("a", "100.64.0.1"), wl("b", "100.64.0.2")
    kernel = FakeKernel()
    kernel.attach(b)
    kernel.attach_error = OSError("no such namespace")
    result = apply_links([WireWorkload(a), DeleteLink(b.host_iface)], kernel)
    assert kernel.links == {}
    assert len(result.errors) == 1 and "wire a" in result.errors[0]


def test_missing_route_is_restored_and_stale_one_removed() -> None:
    a = wl("a", "100.64.0.1")
    host = workload_routes(a)[0]
    stale = learned("100.64.9.9/32", "198.18.0.9")
    ops = plan_routes({host.prefix: host}, {stale.prefix: stale})
    assert ops == [ReplaceRoute(host), DeleteRoute(stale.prefix)]


def test_changed_nexthops_are_replaced() -> None:
    old = learned("100.64.1.0/26", "198.18.0.2")
    new = learned("100.64.1.0/26", "198.18.0.2", "198.18.0.3")
    assert plan_routes({new.prefix: new}, {old.prefix: old}) == [ReplaceRoute(new)]


def test_unknown_learned_routes_are_kept_only_when_asked() -> None:
    kept = learned("100.64.1.0/26", "198.18.0.2")
    a = wl("a", "100.64.0.1")
    local = workload_routes(a)[0]
    actual = {kept.prefix: kept, local.prefix: local}
    assert plan_routes({}, actual, keep_unknown_learned=True) == [DeleteRoute(local.prefix)]
    assert plan_routes({}, actual) == [DeleteRoute(local.prefix), DeleteRoute(kept.prefix)]
