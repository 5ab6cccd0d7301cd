"""An ECMP route the kernel refuses for a dead gateway goes in with the next
hops still on a link, and stays reported as failed (l3fabric/dataplane/partial.py)."""

from __future__ import annotations

import errno
import ipaddress

from l3fabric.dataplane.base import RouteFailure
from l3fabric.dataplane.partial import fallbacks, retry_reachable
from l3fabric.model import IPAddress, NextHop, Route

ip, net = ipaddress.ip_address, ipaddress.ip_network
DEAD, LIVE, LIVE2 = ip("198.18.11.254"), ip("198.18.21.254"), ip("198.18.31.254")
PREFIX, OTHER = net("100.64.0.65/32"), net("100.64.0.66/32")


def route(prefix: object, *gateways: IPAddress) -> Route:
    return Route(prefix, tuple(NextHop(gateway=g) for g in gateways))  # type: ignore[arg-type]


def refused(
    prefix: object = PREFIX, code: int = errno.ENETUNREACH, op: str = "replace"
) -> RouteFailure:
    return RouteFailure(prefix, op, code, "Network is unreachable: Nexthop has invalid gateway")  # type: ignore[arg-type]


def live(gateway: IPAddress) -> bool:
    return gateway != DEAD


class Writer:
    def __init__(self, refuse: bool = False) -> None:
        self.written: list[list[Route]] = []
        self.refuse = refuse

    def __call__(self, routes: list[Route]) -> list[RouteFailure]:
        self.written.append(routes)
        return [refused(r.prefix) for r in routes] if self.refuse else []


def test_the_route_goes_in_with_the_live_next_hops_and_stays_failed() -> None:
    writer = Writer()
    failures = retry_reachable(
        [route(PREFIX, DEAD, LIVE, LIVE2)], [refused()], reachable=live, program=writer
    )
    assert writer.written == [[route(PREFIX, LIVE, LIVE2)]]
    (failure,) = failures
    assert (failure.route_prefix, failure.op, failure.errno) == (
        PREFIX,
        "replace",
        errno.ENETUNREACH,
    )
    assert failure.message.endswith("; installed 2 of 3 next hops (those with a reachable gateway)")


def test_ipv6_answer_counts_too() -> None:
    v6 = net("fd00:64::65/128")
    dead, alive = ip("fd00:198:18:11::fe"), ip("fd00:198:18:21::fe")
    found = fallbacks(
        [route(v6, dead, alive)], [refused(v6, errno.EHOSTUNREACH)], lambda g: g == alive
    )
    assert [f.route for f in found] == [route(v6, alive)]


def test_nothing_is_written_when_no_or_every_gateway_is_live() -> None:
    writer = Writer()
    for reachable in (lambda g: False, lambda g: True):
        failures = [refused()]
        got = retry_reachable(
            [route(PREFIX, DEAD, LIVE)], failures, reachable=reachable, program=writer
        )
        assert got == failures
    assert writer.written == []


def test_other_failures_are_left_alone() -> None:
    replace = [route(PREFIX, DEAD, LIVE), route(OTHER, LIVE)]
    failures = [
        refused(code=errno.EEXIST),  # not a gateway problem
        refused(op="delete"),
        refused(OTHER),  # one next hop: nothing to fall back to
        refused(net("100.64.0.99/32")),  # not in this write
    ]
    assert fallbacks(replace, failures, live) == []


def test_a_refused_fallback_keeps_the_first_failure() -> None:
    writer = Writer(refuse=True)
    failures = [refused(), refused(OTHER, errno.EEXIST)]
    got = retry_reachable(
        [route(PREFIX, DEAD, LIVE), route(OTHER, LIVE)], failures, reachable=live, program=writer
    )
    assert got == failures
    assert writer.written == [[route(PREFIX, LIVE)]]
