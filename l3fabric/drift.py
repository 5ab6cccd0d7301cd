"""Pure: what of a workload's wiring has drifted from what the agent made.

`workload_drift` compares one workload with what the kernel has of it
(`Dataplane.inspect`) and with the node's routes; each problem is a sentence
naming the thing, so CNI CHECK can hand them to the runtime as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from l3fabric.dataplane.base import Observed
from l3fabric.model import GATEWAY_V4, IPAddress, IPNetwork, Route, Workload, host_prefix


def workload_drift(
    workload: Workload,
    observed: Observed,
    host_routes: Iterable[Route],
    *,
    expected_mac: str | None = None,
    expected_addresses: Sequence[IPNetwork] = (),
) -> list[str]:
    """Every difference, in a stable order; empty when nothing drifted.

    host_routes are the node's routes (a dump of the kernel, or what the
    route table last wrote). expected_mac and expected_addresses come from
    the runtime's prevResult: they must match as well as the record.
    """
    ns, ifname, host = workload.netns, workload.ifname, workload.host_iface
    if not observed.netns_present:
        return [f"network namespace {ns} missing"]
    problems: list[str] = []
    if not observed.host_present:
        problems.append(f"host interface {host} missing")
    if not observed.container_present:
        problems.append(f"interface {ifname} missing in {ns}")
    else:
        problems += _addresses(workload, observed, expected_addresses)
        if expected_mac and (observed.container_mac or "").lower() != expected_mac.lower():
            problems.append(
                f"interface {ifname} in {ns} has MAC {observed.container_mac}, "
                f"not {expected_mac} as in prevResult"
            )
        problems += _gateways(workload, observed)
    problems += _host_routes(workload, host_routes)
    return problems


def _addresses(workload: Workload, observed: Observed, expected: Sequence[IPNetwork]) -> list[str]:
    ifname, ns = workload.ifname, workload.netns
    present = set(observed.container_addresses)
    wanted = [host_prefix(a) for a in workload.addresses]
    problems = [f"address {p} missing on {ifname} in {ns}" for p in wanted if p not in present]
    problems += [
        f"address {p} of prevResult missing on {ifname} in {ns}"
        for p in expected
        if p not in present and p not in wanted
    ]
    problems += [
        f"unexpected address {p} on {ifname} in {ns}"
        for p in observed.container_addresses
        if p not in wanted
    ]
    return problems


def _gateways(workload: Workload, observed: Observed) -> list[str]:
    ifname, ns = workload.ifname, workload.netns
    problems: list[str] = []
    gateways: list[IPAddress] = []
    if any(a.version == 4 for a in workload.addresses):
        gateways.append(GATEWAY_V4)
    if any(a.version == 6 for a in workload.addresses):
        if observed.host_link_local is None:
            if observed.host_present:
                problems.append(f"host interface {workload.host_iface} has no IPv6 link-local")
        else:
            gateways.append(observed.host_link_local)
    neighbours = dict(observed.neighbours)
    for gateway in gateways:
        if (gateway, ifname) not in observed.default_routes:
            problems.append(f"default route via {gateway} dev {ifname} missing in {ns}")
        lladdr = neighbours.get(gateway)
        if lladdr is None:
            problems.append(f"gateway neighbour {gateway} missing on {ifname} in {ns}")
        elif observed.host_mac and lladdr.lower() != observed.host_mac.lower():
            problems.append(
                f"gateway neighbour {gateway} on {ifname} in {ns} is {lladdr}, "
                f"not {workload.host_iface}'s {observed.host_mac}"
            )
    return problems


def _host_routes(workload: Workload, host_routes: Iterable[Route]) -> list[str]:
    by_prefix = {r.prefix: r for r in host_routes}
    problems = []
    for address in workload.addresses:
        prefix = host_prefix(address)
        route = by_prefix.get(prefix)
        if route is None:
            problems.append(f"host route {prefix} via {workload.host_iface} missing")
        elif [h.ifname for h in route.nexthops] != [workload.host_iface]:
            problems.append(
                f"host route {prefix} goes {', '.join(map(str, route.nexthops))}, "
                f"not dev {workload.host_iface}"
            )
    return problems
