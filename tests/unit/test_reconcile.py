from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from l3fabric.model import IPNetwork, NextHop, Route, RouteKind, Workload, workload_routes
from l3fabric.reconcile import (
    ActualState,
    DeleteLink,
    DeleteRoute,
    DesiredState,
    Orphan,
    ReplaceRoute,
    WireWorkload,
    apply,
    plan,
)

NS = "/run/netns/w1"


def wl(name: str, *addrs: str, netns: str = NS) -> Workload:
    return Workload(name, "node1", netns, tuple(ipaddress.ip_address(a) for a in addrs))


def learned(prefix: str, *gateways: str) -> Route:
    return Route(
        ipaddress.ip_network(prefix),
        tuple(NextHop(gateway=ipaddress.ip_address(g)) for g in gateways),
        RouteKind.LEARNED,
    )


def actual_for(workloads: Sequence[Workload], extra_routes: Sequence[Route] = ()) -> ActualState:
    routes = {r.prefix: r for w in workloads for r in workload_routes(w)}
    routes.update({r.prefix: r for r in extra_routes})
    return ActualState(
        links=frozenset(w.host_iface for w in workloads),
        routes=routes,
        present_netns=frozenset(w.netns for w in workloads),
    )


def test_converged_state_plans_nothing() -> None:
    workloads = (wl("a", "100.64.0.1", "fd00:64::1"), wl("b", "100.64.0.2"))
    route = learned("100.64.1.0/26", "198.18.0.2")
    desired = DesiredState(workloads, {route.prefix: route})
    assert plan(desired, actual_for(workloads, [route])) == []


def test_missing_owned_route_is_restored_and_stale_one_removed() -> None:
    a = wl("a", "100.64.0.1")
    stale = learned("100.64.9.9/32", "198.18.0.9")
    actual = ActualState(links=frozenset({a.host_iface}), routes={stale.prefix: stale})
    ops = plan(DesiredState((a,)), actual)
    assert ops == [ReplaceRoute(workload_routes(a)[0]), DeleteRoute(stale.prefix)]


def test_missing_link_is_rewired_when_netns_exists() -> None:
    a = wl("a", "100.64.0.1")
    actual = ActualState(present_netns=frozenset({NS}))
    ops = plan(DesiredState((a,)), actual)
    assert ops[0] == WireWorkload(a)
    assert ReplaceRoute(workload_routes(a)[0]) in ops


def test_workload_whose_netns_is_gone_is_an_orphan_without_routes() -> None:
    a = wl("a", "100.64.0.1")
    ops = plan(DesiredState((a,)), ActualState())
    assert ops == [Orphan(a)]


def test_link_without_workload_is_deleted() -> None:
    a = wl("a", "100.64.0.1")
    ops = plan(DesiredState(), actual_for([a]))
    assert DeleteLink(a.host_iface) in ops
    assert DeleteRoute(ipaddress.ip_network("100.64.0.1/32")) in ops


def test_local_workload_wins_over_learned_route_for_same_prefix() -> None:
    a = wl("a", "100.64.0.1")
    hijack = learned("100.64.0.1/32", "198.18.0.66")
    desired = DesiredState((a,), {hijack.prefix: hijack})
    ops = plan(desired, actual_for([a]))
    assert ops == []


def test_changed_nexthops_are_replaced() -> None:
    old = learned("100.64.1.0/26", "198.18.0.2")
    new = learned("100.64.1.0/26", "198.18.0.2", "198.18.0.3")
    ops = plan(DesiredState((), {new.prefix: new}), actual_for([], [old]))
    assert ops == [ReplaceRoute(new)]


addresses = st.integers(min_value=1, max_value=250).map(lambda i: f"100.64.0.{i}")
gateways = st.sampled_from(["198.18.0.2", "198.18.0.3", "198.18.0.4"])


@st.composite
def routes(draw: st.DrawFn) -> Route:
    return learned(f"100.64.{draw(st.integers(1, 50))}.0/26", *draw(st.lists(gateways, min_size=1)))


@given(
    st.lists(routes(), max_size=20),
    st.lists(routes(), max_size=20),
)
def test_applying_the_plan_converges(
    desired_routes: list[Route], actual_routes: list[Route]
) -> None:
    """Whatever the kernel holds, one plan applied to it reaches the desired
    state, after which the plan is empty."""
    desired = DesiredState((), {r.prefix: r for r in desired_routes})
    kernel = FakeKernel({r.prefix: r for r in actual_routes})
    result = apply(plan(desired, kernel.state()), kernel)
    assert result.errors == []
    assert kernel.routes == dict(desired.learned)
    assert plan(desired, kernel.state()) == []


@dataclass(frozen=True)
class Failure:
    route_prefix: IPNetwork
    message: str


class FakeKernel:
    def __init__(self, routes: dict[IPNetwork, Route]) -> None:
        self.routes = dict(routes)
        self.links: set[str] = set()
        self.fail: set[IPNetwork] = set()

    def state(self) -> ActualState:
        return ActualState(links=frozenset(self.links), routes=dict(self.routes))

    def attach(self, workload: Workload) -> None:
        self.links.add(workload.host_iface)

    def detach(self, host_iface: str) -> None:
        self.links.discard(host_iface)

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[Failure]:
        failures = []
        for route in replace:
            if route.prefix in self.fail:
                failures.append(Failure(route.prefix, "EINVAL"))
            else:
                self.routes[route.prefix] = route
        for prefix in delete:
            self.routes.pop(prefix, None)
        return failures


def test_one_failing_route_does_not_stop_the_others() -> None:
    good, bad = learned("100.64.1.0/26", "198.18.0.2"), learned("100.64.2.0/26", "198.18.0.2")
    kernel = FakeKernel({})
    kernel.fail.add(bad.prefix)
    result = apply(
        plan(DesiredState((), {good.prefix: good, bad.prefix: bad}), kernel.state()), kernel
    )
    assert kernel.routes == {good.prefix: good}
    assert len(result.errors) == 1 and "100.64.2.0/26" in result.errors[0]
