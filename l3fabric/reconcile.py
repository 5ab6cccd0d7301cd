"""Reconcile kernel state with desired state, as an explicit diff.

`plan()` is pure: it compares what should exist with what the kernel has and
returns the operations that close the gap. `apply()` is the one thin layer that
performs them through a Dataplane. Only objects l3fabric owns ever appear in
`ActualState` (the data plane filters by route protocol and interface prefix),
so nothing here can touch a foreign route or link.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from l3fabric.model import IPNetwork, Route, RouteKind, Workload, workload_routes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DesiredState:
    workloads: tuple[Workload, ...] = ()  # the workloads of this node
    learned: Mapping[IPNetwork, Route] = field(default_factory=dict)
    # After a restart, before the peers have resent their routes: keep the
    # kernel's learned-looking routes (via a gateway) that nobody claims yet.
    keep_unknown_learned: bool = False


@dataclass(frozen=True)
class ActualState:
    links: frozenset[str] = frozenset()  # owned host interfaces present
    routes: Mapping[IPNetwork, Route] = field(default_factory=dict)  # owned routes
    present_netns: frozenset[str] = frozenset()  # workload netns paths that exist


@dataclass(frozen=True)
class WireWorkload:
    """The workload's host link is missing but its namespace exists."""

    workload: Workload


@dataclass(frozen=True)
class DeleteLink:
    """An owned link that belongs to no workload of this node."""

    ifname: str


@dataclass(frozen=True)
class ReplaceRoute:
    route: Route


@dataclass(frozen=True)
class DeleteRoute:
    prefix: IPNetwork


@dataclass(frozen=True)
class Orphan:
    """A workload whose namespace is gone; reported, never wired. Its record
    stays until the orchestrator deletes the workload (CNI DEL)."""

    workload: Workload


Op = WireWorkload | DeleteLink | ReplaceRoute | DeleteRoute | Orphan


def plan(desired: DesiredState, actual: ActualState) -> list[Op]:
    """The operations that turn `actual` into `desired`.

    Order matters to the applier: links are made before routes point at them,
    and routes are removed before nothing else depends on them.
    """
    ops: list[Op] = []
    wanted_routes: dict[IPNetwork, Route] = {}
    # Learned routes first, so that a local workload route for the same
    # prefix overrides it: a local workload always wins over a peer's claim.
    wanted_routes.update(desired.learned)

    wanted_links: set[str] = set()
    for workload in desired.workloads:
        iface = workload.host_iface
        wanted_links.add(iface)
        if iface not in actual.links:
            if workload.netns not in actual.present_netns:
                ops.append(Orphan(workload))
                continue
            ops.append(WireWorkload(workload))
        for route in workload_routes(workload):
            wanted_routes[route.prefix] = route

    ops.extend(DeleteLink(ifname) for ifname in sorted(actual.links - wanted_links))

    for prefix, route in sorted(wanted_routes.items(), key=_prefix_key):
        if actual.routes.get(prefix) != route:
            ops.append(ReplaceRoute(route))
    ops.extend(
        DeleteRoute(prefix)
        for prefix in sorted(actual.routes, key=_net_key)
        if prefix not in wanted_routes
        and not (desired.keep_unknown_learned and _via_gateway(actual.routes[prefix]))
    )
    return ops


def _via_gateway(route: Route) -> bool:
    return any(nh.gateway is not None for nh in route.nexthops)


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def _prefix_key(item: tuple[IPNetwork, Route]) -> tuple[int, int, int]:
    return _net_key(item[0])


class RouteFailureLike(Protocol):
    @property
    def route_prefix(self) -> IPNetwork: ...
    @property
    def message(self) -> str: ...


class DataplaneLike(Protocol):
    def attach(self, workload: Workload) -> None: ...
    def detach(self, host_iface: str) -> None: ...
    def program(
        self, replace: Sequence[Route], delete: Sequence[IPNetwork]
    ) -> Sequence[RouteFailureLike]: ...


@dataclass
class ApplyResult:
    applied: int = 0
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, n: int = 1) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n


def apply(ops: Iterable[Op], dataplane: DataplaneLike) -> ApplyResult:
    """Perform planned operations; one failure never stops the others."""
    result = ApplyResult()
    replace: list[Route] = []
    delete: list[IPNetwork] = []
    for op in ops:
        if isinstance(op, WireWorkload):
            try:
                dataplane.attach(op.workload)
                result.applied += 1
                result.count("wire_workload")
            except Exception as exc:
                result.errors.append(f"wire {op.workload.name}: {exc}")
        elif isinstance(op, DeleteLink):
            try:
                dataplane.detach(op.ifname)
                result.applied += 1
                result.count("delete_link")
            except Exception as exc:
                result.errors.append(f"delete link {op.ifname}: {exc}")
        elif isinstance(op, ReplaceRoute):
            replace.append(op.route)
        elif isinstance(op, DeleteRoute):
            delete.append(op.prefix)
        elif isinstance(op, Orphan):
            result.orphans.append(op.workload.name)
    if replace or delete:
        failures = dataplane.program(replace, delete)
        failed = {f.route_prefix for f in failures}
        for failure in failures:
            result.errors.append(f"route {failure.route_prefix}: {failure.message}")
        for route in replace:
            if route.prefix not in failed:
                result.applied += 1
                kind = "local" if route.kind is RouteKind.LOCAL_WORKLOAD else "learned"
                result.count(f"replace_route_{kind}")
        done_deletes = sum(1 for prefix in delete if prefix not in failed)
        result.applied += done_deletes
        if done_deletes:
            result.count("delete_route", done_deletes)
    return result
