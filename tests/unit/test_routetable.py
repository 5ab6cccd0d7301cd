"""The route table: the one writer of the kernel's l3fabric routes."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from l3fabric.agent.metrics import Metrics
from l3fabric.agent.routetable import RouteTable
from l3fabric.model import NextHop, Route, RouteKind, Workload, workload_routes
from tests.fakes import Clock, FakeKernel

net = ipaddress.ip_network


def wl(name: str, *addrs: str) -> Workload:
    return Workload(name, "node1", "/run/netns/x", tuple(ipaddress.ip_address(a) for a in addrs))


def learned(prefix: str, *gateways: str) -> Route:
    return Route(
        net(prefix),
        tuple(NextHop(gateway=ipaddress.ip_address(g)) for g in gateways),
        RouteKind.LEARNED,
    )


def table(kernel: FakeKernel) -> tuple[RouteTable, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return RouteTable(kernel, metrics=metrics, clock=Clock()), metrics


def gauge(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("l3fabric_routes_programmed", {"kind": kind})
    return value or 0.0


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


def test_a_workload_delta_writes_only_its_host_routes(kernel: FakeKernel) -> None:
    rt, metrics = table(kernel)
    a = wl("a", "100.64.0.1", "fd00:64::1")
    kernel.attach(a)
    rt.workload_changed(a, None)
    result = rt.flush()
    assert kernel.routes == {r.prefix: r for r in workload_routes(a)}
    assert result.replaced == {"local": 2}
    assert gauge(metrics, "local") == 2
    rt.workload_changed(None, a)
    rt.flush()
    assert kernel.routes == {}
    assert gauge(metrics, "local") == 0


def test_learned_deltas_follow_the_rib_and_gauges_follow_the_writes(kernel: FakeKernel) -> None:
    rt, metrics = table(kernel)
    r1, r2 = learned("100.64.1.0/26", "198.18.0.2"), learned("100.64.2.0/26", "198.18.0.3")
    rt.learned_changed([r1, r2], [])
    rt.flush()
    assert set(kernel.routes) == {r1.prefix, r2.prefix}
    assert gauge(metrics, "learned") == 2
    rt.learned_changed([], [r1.prefix])
    rt.flush()
    assert set(kernel.routes) == {r2.prefix}
    assert gauge(metrics, "learned") == 1


def test_a_local_workload_wins_over_a_learned_route(kernel: FakeKernel) -> None:
    rt, _ = table(kernel)
    a = wl("a", "100.64.0.9")
    host = workload_routes(a)[0]
    rt.learned_changed([learned("100.64.0.9/32", "198.18.0.2")], [])
    rt.flush()
    kernel.attach(a)
    rt.workload_changed(a, None)
    rt.flush()
    assert kernel.routes[host.prefix] == host
    # The peer's path going (it is rejected now the address is local) must
    # not delete the local route.
    rt.learned_changed([], [host.prefix])
    rt.flush()
    assert kernel.routes[host.prefix] == host
    # The workload going leaves the prefix to whatever a peer offers.
    other = learned("100.64.0.9/32", "198.18.0.3")
    rt.learned_changed([other], [])
    rt.workload_changed(None, a)
    rt.flush()
    assert kernel.routes[host.prefix] == other


def test_a_failing_route_does_not_stop_the_others_and_is_retried(kernel: FakeKernel) -> None:
    rt, _ = table(kernel)
    good, bad = learned("100.64.1.0/26", "198.18.0.2"), learned("100.64.2.0/26", "198.18.0.2")
    kernel.fail_prefixes.add(bad.prefix)
    rt.learned_changed([good, bad], [])
    result = rt.flush()
    assert kernel.routes == {good.prefix: good}
    assert [f.route_prefix for f in result.failures] == [bad.prefix]
    assert rt.dirty
    kernel.fail_prefixes.clear()
    rt.flush()
    assert kernel.routes == {good.prefix: good, bad.prefix: bad}
    assert not rt.dirty


def test_a_full_pass_finds_nothing_to_do_after_deltas(kernel: FakeKernel) -> None:
    rt, _ = table(kernel)
    a, b = wl("a", "100.64.0.1"), wl("b", "100.64.0.2", "fd00:64::2")
    for w in (a, b):
        kernel.attach(w)
        rt.workload_changed(w, None)
    rt.learned_changed([learned("100.64.1.0/26", "198.18.0.2", "198.18.0.3")], [])
    rt.flush()
    kernel.program_calls.clear()
    result = rt.resync()
    assert result.applied == 0 and result.failures == []
    assert kernel.program_calls == []


def test_resync_repairs_what_changed_behind_its_back(kernel: FakeKernel) -> None:
    rt, _ = table(kernel)
    a = wl("a", "100.64.0.1")
    kernel.attach(a)
    rt.workload_changed(a, None)
    rt.flush()
    stray = learned("100.64.7.0/26", "198.18.0.7")
    kernel.routes = {stray.prefix: stray}  # ours deleted by hand, a stale one left
    result = rt.resync()
    assert kernel.routes == {r.prefix: r for r in workload_routes(a)}
    assert result.by_kind() == {"replace_route_local": 1, "delete_route": 1}


def test_a_rewired_workload_gets_its_routes_again(kernel: FakeKernel) -> None:
    """A new veth has no routes (the kernel dropped the old one's): an add
    rewrites them even though this table wrote them before."""
    rt, _ = table(kernel)
    a = wl("a", "100.64.0.1")
    kernel.attach(a)
    rt.workload_changed(a, None)
    rt.flush()
    kernel.detach(a.host_iface)
    kernel.attach(a)
    rt.workload_changed(a, None)
    rt.flush()
    assert set(kernel.routes) == {net("100.64.0.1/32")}


def test_unknown_learned_routes_are_kept_until_synced(kernel: FakeKernel) -> None:
    before = learned("100.64.3.0/26", "198.18.0.2")
    kernel.routes = {before.prefix: before}
    rt, _ = table(kernel)
    rt.keep_unknown_learned = True
    rt.resync()
    assert before.prefix in kernel.routes
    rt.keep_unknown_learned = False
    rt.resync()
    assert kernel.routes == {}


gateways = st.sampled_from(["198.18.0.2", "198.18.0.3", "198.18.0.4"])


@st.composite
def routes(draw: st.DrawFn) -> Route:
    return learned(f"100.64.{draw(st.integers(1, 50))}.0/26", *draw(st.lists(gateways, min_size=1)))


@settings(deadline=None)
@given(st.lists(routes(), max_size=20), st.lists(routes(), max_size=20), st.lists(routes()))
def test_deltas_then_resync_converge(
    in_kernel: list[Route], first: list[Route], second: list[Route]
) -> None:
    """Whatever the kernel held, deltas plus one resync reach the desired
    state, after which neither a flush nor a resync writes anything."""
    kernel = FakeKernel(in_kernel)
    rt, _ = table(kernel)
    rt.resync()
    rt.learned_changed(first, [])
    rt.flush()
    rt.learned_changed(second, [r.prefix for r in first[::2]])
    rt.flush()
    assert kernel.routes == rt.desired()
    kernel.program_calls.clear()
    rt.flush()
    rt.resync()
    assert kernel.program_calls == []
