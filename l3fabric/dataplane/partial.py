"""Keeping an ECMP route with the next hops the kernel still reaches.

When an uplink is deleted (or set down), the kernel takes it out of every
ECMP route, and an IPv4 route through a deleted link goes as a whole. Until
BGP drops the paths learned over that link, a hold time later, the learned
route still names the dead gateway, and the kernel refuses the whole route
for that one next hop (IPv4: ENETUNREACH, "Nexthop has invalid gateway";
IPv6: EHOSTUNREACH). Writing it again with only the next hops whose gateway
is still on a link keeps the node forwarding over the other uplinks. The
write is still reported as failed, so the caller retries the full route and
gets it back once the link returns or BGP changes the route.

retry_reachable() is pure: the caller gives it the kernel's answers
(gateway_on_link) and the write.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import RouteFailure
from l3fabric.model import IPAddress, Route

# What the kernel answers for a next hop whose gateway is on no link.
UNREACHABLE_GATEWAY = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


@dataclass(frozen=True)
class Fallback:
    """A refused replace, and the route with the reachable next hops only."""

    failure: RouteFailure
    route: Route
    wanted_hops: int  # how many next hops the refused route had

    def installed(self) -> RouteFailure:
        """The failure as reported once the fallback route is in the kernel."""
        kept = len(self.route.nexthops)
        return RouteFailure(
            self.failure.route_prefix,
            self.failure.op,
            self.failure.errno,
            f"{self.failure.message}; installed {kept} of {self.wanted_hops} next hops"
            " (those with a reachable gateway)",
        )


def fallbacks(
    replace: Sequence[Route],
    failures: Sequence[RouteFailure],
    reachable: Callable[[IPAddress], bool],
) -> list[Fallback]:
    """For each ECMP replace refused for an unreachable gateway, the route
    with only the next hops `reachable` accepts, when some but not all are."""
    wanted = {route.prefix: route for route in replace}
    result = []
    for failure in failures:
        route = wanted.get(failure.route_prefix)
        if (
            failure.op != "replace"
            or failure.errno not in UNREACHABLE_GATEWAY
            or route is None
            or len(route.nexthops) < 2
        ):
            continue
        kept = tuple(
            hop for hop in route.nexthops if hop.gateway is not None and reachable(hop.gateway)
        )
        if 0 < len(kept) < len(route.nexthops):
            result.append(
                Fallback(failure, Route(route.prefix, kept, route.kind), len(route.nexthops))
            )
    return result


def retry_reachable(
    replace: Sequence[Route],
    failures: list[RouteFailure],
    *,
    reachable: Callable[[IPAddress], bool],
    program: Callable[[list[Route]], list[RouteFailure]],
) -> list[RouteFailure]:
    """Write the fallbacks of `failures`; the failures, those whose fallback
    went in saying how many next hops did."""
    found = fallbacks(replace, failures, reachable)
    if not found:
        return failures
    refused = {f.route_prefix for f in program([f.route for f in found])}
    done = {
        (f.failure.route_prefix, f.failure.op): f.installed()
        for f in found
        if f.route.prefix not in refused
    }
    return [done.get((f.route_prefix, f.op), f) for f in failures]


def gateway_on_link(ipr: IPRoute) -> Callable[[IPAddress], bool]:
    """Whether the kernel reaches a gateway directly, as a next hop must be
    (asked of the namespace ipr is in; only after a refused write)."""

    def reachable(gateway: IPAddress) -> bool:
        try:
            answer = ipr.route("get", dst=str(gateway))
        except NetlinkError:
            return False
        return bool(answer) and all(
            msg["type"] == codec.RTN_UNICAST and msg.get_attr("RTA_GATEWAY") is None
            for msg in answer
        )

    return reachable
