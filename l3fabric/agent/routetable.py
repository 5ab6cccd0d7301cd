"""The one owner of the kernel's l3fabric routes (route protocol 76).

As Felix's route table: it holds the desired routes — the host routes of the
node's workloads and the best paths the RIB chose — with one rule when both
name a prefix: the local workload wins. Workload changes and RIB changes
arrive as deltas and mark prefixes dirty; flush() plans just those prefixes
against what this table last wrote and programs the difference in one batch.
resync() is the same code over every prefix, against a fresh dump of the
kernel (start-up, the periodic pass, after an error).

Nothing else in the agent calls the data plane's route programming.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from l3fabric.agent.metrics import Metrics
from l3fabric.dataplane.base import Dataplane, RouteFailure
from l3fabric.model import IPNetwork, Route, RouteKind, Workload, workload_routes
from l3fabric.reconcile import DeleteRoute, ReplaceRoute, plan_routes

log = logging.getLogger(__name__)


@dataclass
class FlushResult:
    replaced: dict[str, int] = field(default_factory=dict)  # by route kind
    deleted: int = 0
    failures: list[RouteFailure] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return sum(self.replaced.values()) + self.deleted

    def by_kind(self) -> dict[str, int]:
        counts = {f"replace_route_{kind}": n for kind, n in self.replaced.items() if n}
        if self.deleted:
            counts["delete_route"] = self.deleted
        return counts


class RouteTable:
    def __init__(
        self,
        writer: Dataplane,
        *,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._writer = writer
        self._metrics = metrics
        self._clock = clock
        self._local: dict[IPNetwork, Route] = {}
        self._learned: dict[IPNetwork, Route] = {}
        # What this table last wrote (or found in the last dump), per prefix.
        self._programmed: dict[IPNetwork, Route] = {}
        self._counts = {kind: 0 for kind in RouteKind}
        self._dirty: set[IPNetwork] = set()
        # After a restart, until the peers have resent their routes: routes in
        # the kernel via a gateway that no peer claims yet are kept.
        self.keep_unknown_learned = False

    # -- deltas ------------------------------------------------------------------

    def set_workloads(self, workloads: Iterable[Workload]) -> None:
        """The full set of the node's workloads (start-up, reconcile)."""
        wanted = {r.prefix: r for w in workloads for r in workload_routes(w)}
        self._dirty.update(p for p in self._local if p not in wanted)
        self._dirty.update(p for p, r in wanted.items() if self._local.get(p) != r)
        self._local = wanted

    def workload_changed(self, added: Workload | None, removed: Workload | None) -> None:
        """One workload came or went. An added workload's veth is new, and the
        kernel dropped the routes of any veth it replaced: its routes are
        written again even if this table wrote them before."""
        if removed is not None:
            for route in workload_routes(removed):
                self._local.pop(route.prefix, None)
                self._dirty.add(route.prefix)
        if added is not None:
            for route in workload_routes(added):
                self._local[route.prefix] = route
                self._forget(route.prefix)
                self._dirty.add(route.prefix)

    def learned_changed(self, replace: Iterable[Route], delete: Iterable[IPNetwork]) -> None:
        for prefix in delete:
            self._learned.pop(prefix, None)
            self._dirty.add(prefix)
        for route in replace:
            self._learned[route.prefix] = route
            self._dirty.add(route.prefix)

    # -- views -------------------------------------------------------------------------

    def desired(self) -> dict[IPNetwork, Route]:
        """Every route that should be in the kernel: a local workload's host
        route owns its prefix over any peer's path for it."""
        wanted = dict(self._learned)
        wanted.update(self._local)
        return wanted

    def learned_count(self) -> int:
        """Learned routes in the kernel's desired set (not hidden by a local one)."""
        return sum(1 for p in self._learned if p not in self._local)

    def local_count(self) -> int:
        return len(self._local)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def programmed_counts(self) -> dict[RouteKind, int]:
        return dict(self._counts)

    def _export_counts(self) -> None:
        # Gauges follow every write, not only the periodic pass.
        for kind, count in self._counts.items():
            self._metrics.routes_programmed.labels(kind.value).set(count)

    def _remember(self, route: Route) -> None:
        old = self._programmed.get(route.prefix)
        if old is not None:
            self._counts[old.kind] -= 1
        self._programmed[route.prefix] = route
        self._counts[route.kind] += 1

    def _forget(self, prefix: IPNetwork) -> None:
        old = self._programmed.pop(prefix, None)
        if old is not None:
            self._counts[old.kind] -= 1

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> FlushResult:
        """Program the dirty prefixes, planned against what was last written."""
        if not self._dirty:
            return FlushResult()
        dirty, self._dirty = self._dirty, set()
        desired = {p: r for p in dirty if (r := self._route_for(p)) is not None}
        actual = {p: self._programmed[p] for p in dirty if p in self._programmed}
        return self._write(desired, actual, keep_unknown=False)

    def resync(self, links: Mapping[str, int] | None = None) -> FlushResult:
        """Every prefix, against a fresh dump of the kernel's owned routes
        (`links`: the node's links, if the caller has just dumped them)."""
        actual = {r.prefix: r for r in self._writer.dump_routes(links)}
        self._programmed = {}
        self._counts = {kind: 0 for kind in RouteKind}
        for route in actual.values():
            self._remember(route)
        self._dirty.clear()
        result = self._write(self.desired(), actual, keep_unknown=self.keep_unknown_learned)
        self._export_counts()
        return result

    def _route_for(self, prefix: IPNetwork) -> Route | None:
        return self._local.get(prefix) or self._learned.get(prefix)

    def _write(
        self,
        desired: Mapping[IPNetwork, Route],
        actual: Mapping[IPNetwork, Route],
        *,
        keep_unknown: bool,
    ) -> FlushResult:
        ops = plan_routes(desired, actual, keep_unknown_learned=keep_unknown)
        replace = [op.route for op in ops if isinstance(op, ReplaceRoute)]
        delete = [op.prefix for op in ops if isinstance(op, DeleteRoute)]
        result = FlushResult()
        if not replace and not delete:
            return result
        started = self._clock()
        failures = self._writer.program(replace, delete)
        self._metrics.program_batch_seconds.observe(self._clock() - started)
        failed = {f.route_prefix for f in failures}
        for route in replace:
            if route.prefix in failed:
                # Unknown state: forget it, so the next flush writes it again.
                self._forget(route.prefix)
                self._dirty.add(route.prefix)
                continue
            self._remember(route)
            kind = "local" if route.kind is RouteKind.LOCAL_WORKLOAD else "learned"
            result.replaced[kind] = result.replaced.get(kind, 0) + 1
        for prefix in delete:
            if prefix in failed:
                self._dirty.add(prefix)
                continue
            self._forget(prefix)
            result.deleted += 1
        result.failures = list(failures)
        self._export_counts()
        for failure in failures:
            log.warning(
                "route programming failed",
                extra={
                    "prefix": str(failure.route_prefix),
                    "op": failure.op,
                    "error": failure.message,
                },
            )
        return result
