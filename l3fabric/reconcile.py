"""Reconcile kernel state with desired state, as an explicit diff.

`plan_links()` and `plan_routes()` are pure: they compare what should exist
with what the kernel has and return the operations that close the gap.
`apply_links()` is the thin layer that wires and unwires workloads; routes are
written only by the agent's route table (agent/routetable.py), which plans
with `plan_routes()`. Only objects l3fabric owns are ever passed in as actual
state (the data plane filters by route protocol and interface prefix), so
nothing here can touch a foreign route or link.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from l3fabric.model import IPNetwork, Route, Workload

log = logging.getLogger(__name__)


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


LinkOp = WireWorkload | DeleteLink | Orphan
RouteOp = ReplaceRoute | DeleteRoute


def plan_links(
    workloads: Iterable[Workload], links: frozenset[str], present_netns: frozenset[str]
) -> list[LinkOp]:
    """The workloads to wire and the owned links to remove.

    `links` are the owned host interfaces present; `present_netns` the
    workload namespaces that still exist (and are still the same ones).
    """
    ops: list[LinkOp] = []
    wanted: set[str] = set()
    for workload in workloads:
        iface = workload.host_iface
        wanted.add(iface)
        if iface in links:
            continue
        if workload.netns in present_netns:
            ops.append(WireWorkload(workload))
        else:
            ops.append(Orphan(workload))
    ops.extend(DeleteLink(ifname) for ifname in sorted(links - wanted))
    return ops


def plan_routes(
    desired: Mapping[IPNetwork, Route],
    actual: Mapping[IPNetwork, Route],
    *,
    keep_unknown_learned: bool = False,
) -> list[RouteOp]:
    """The route writes that turn `actual` into `desired`, in prefix order.

    With keep_unknown_learned (after a restart, before the peers have resent
    their routes) a route via a gateway that nothing desires is kept.
    """
    ops: list[RouteOp] = [
        ReplaceRoute(route)
        for prefix, route in sorted(desired.items(), key=_prefix_key)
        if actual.get(prefix) != route
    ]
    ops.extend(
        DeleteRoute(prefix)
        for prefix in sorted(actual, key=_net_key)
        if prefix not in desired and not (keep_unknown_learned and _via_gateway(actual[prefix]))
    )
    return ops


def _via_gateway(route: Route) -> bool:
    return any(nh.gateway is not None for nh in route.nexthops)


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def _prefix_key(item: tuple[IPNetwork, Route]) -> tuple[int, int, int]:
    return _net_key(item[0])


class LinkWriter(Protocol):
    """The part of the Dataplane that wires and unwires workloads."""

    def attach(self, workload: Workload) -> None: ...
    def detach(self, host_iface: str) -> None: ...


@dataclass
class ApplyResult:
    applied: int = 0
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, n: int = 1) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n


def apply_links(ops: Iterable[LinkOp], dataplane: LinkWriter) -> ApplyResult:
    """Perform planned link operations; one failure never stops the others.
    Routes are written by the agent's route table, never here."""
    result = ApplyResult()
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
        elif isinstance(op, Orphan):
            result.orphans.append(op.workload.name)
    return result
