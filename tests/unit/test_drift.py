"""workload_drift: each drifted piece of a workload's wiring is named."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from l3fabric.dataplane.base import Observed
from l3fabric.drift import workload_drift
from l3fabric.model import GATEWAY_V4, NextHop, Route, RouteKind, Workload, workload_routes

V4 = ipaddress.ip_address("100.64.0.5")
V6 = ipaddress.ip_address("fd00:64::5")
LL = ipaddress.IPv6Address("fe80::1")
HOST_MAC = "ee:ee:ee:ee:ee:ee"
NS = "/run/netns/pod"
WORKLOAD = Workload("cni-0123456789abcdef", "node1", NS, (V4, V6), ifname="eth0")
HEALTHY = Observed(
    netns_present=True,
    host_present=True,
    host_mac=HOST_MAC,
    host_link_local=LL,
    container_present=True,
    container_mac="02:00:00:00:00:01",
    container_addresses=(ipaddress.ip_network("100.64.0.5/32"), ipaddress.ip_network(V6)),
    neighbours=((GATEWAY_V4, HOST_MAC), (LL, HOST_MAC)),
    default_routes=((GATEWAY_V4, "eth0"), (LL, "eth0")),
)
ROUTES = workload_routes(WORKLOAD)


def test_a_healthy_workload_has_no_drift() -> None:
    assert workload_drift(WORKLOAD, HEALTHY, ROUTES) == []


def test_a_missing_default_route_is_named() -> None:
    observed = replace(HEALTHY, default_routes=((LL, "eth0"),))
    assert workload_drift(WORKLOAD, observed, ROUTES) == [
        f"default route via 169.254.1.1 dev eth0 missing in {NS}"
    ]


def test_a_missing_host_route_is_named() -> None:
    routes = [r for r in ROUTES if r.prefix.version == 6]
    assert workload_drift(WORKLOAD, HEALTHY, routes) == [
        f"host route 100.64.0.5/32 via {WORKLOAD.host_iface} missing"
    ]


def test_a_host_route_to_elsewhere_is_named() -> None:
    elsewhere = Route(
        ipaddress.ip_network("100.64.0.5/32"),
        (NextHop(gateway=ipaddress.ip_address("198.18.0.2")),),
        RouteKind.LEARNED,
    )
    routes = [elsewhere, *[r for r in ROUTES if r.prefix.version == 6]]
    (problem,) = workload_drift(WORKLOAD, HEALTHY, routes)
    assert problem.startswith("host route 100.64.0.5/32 goes via 198.18.0.2")


def test_a_gone_namespace_is_the_only_problem() -> None:
    assert workload_drift(WORKLOAD, Observed(netns_present=False), []) == [
        f"network namespace {NS} missing"
    ]


def test_missing_interfaces_and_addresses_are_named() -> None:
    gone = Observed(netns_present=True)
    problems = workload_drift(WORKLOAD, gone, ROUTES)
    assert problems == [
        f"host interface {WORKLOAD.host_iface} missing",
        f"interface eth0 missing in {NS}",
    ]
    stale = replace(
        HEALTHY,
        container_addresses=(ipaddress.ip_network(V6), ipaddress.ip_network("10.9.9.9/32")),
    )
    assert workload_drift(WORKLOAD, stale, ROUTES) == [
        f"address 100.64.0.5/32 missing on eth0 in {NS}",
        f"unexpected address 10.9.9.9/32 on eth0 in {NS}",
    ]


def test_a_wrong_gateway_neighbour_is_named() -> None:
    observed = replace(HEALTHY, neighbours=((GATEWAY_V4, "aa:aa:aa:aa:aa:aa"),))
    assert workload_drift(WORKLOAD, observed, ROUTES) == [
        f"gateway neighbour 169.254.1.1 on eth0 in {NS} is aa:aa:aa:aa:aa:aa, "
        f"not {WORKLOAD.host_iface}'s {HOST_MAC}",
        f"gateway neighbour fe80::1 missing on eth0 in {NS}",
    ]


def test_prev_result_expectations_are_checked() -> None:
    assert workload_drift(WORKLOAD, HEALTHY, ROUTES, expected_mac="02:00:00:00:00:01") == []
    problems = workload_drift(
        WORKLOAD,
        HEALTHY,
        ROUTES,
        expected_mac="02:00:00:00:00:99",
        expected_addresses=[ipaddress.ip_network("100.64.0.9/32")],
    )
    assert problems == [
        f"address 100.64.0.9/32 of prevResult missing on eth0 in {NS}",
        f"interface eth0 in {NS} has MAC 02:00:00:00:00:01, not 02:00:00:00:00:99 as in prevResult",
    ]


def test_a_v4_only_workload_needs_no_v6_gateway() -> None:
    v4_only = replace(WORKLOAD, addresses=(V4,))
    observed = replace(
        HEALTHY,
        container_addresses=(ipaddress.ip_network("100.64.0.5/32"),),
        host_link_local=None,
        neighbours=((GATEWAY_V4, HOST_MAC),),
        default_routes=((GATEWAY_V4, "eth0"),),
    )
    assert workload_drift(v4_only, observed, workload_routes(v4_only)) == []
