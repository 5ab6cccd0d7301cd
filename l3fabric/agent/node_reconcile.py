"""One reconcile pass over the node: workload wiring, then every route.

The links are planned from the workload records against the kernel's owned
links; the routes are resynced by the route table from a fresh dump, the same
code that flushes deltas. Start-up, the periodic pass, `l3fabric reconcile`
and the retry after an error all run this.

A periodic pass reads the kernel only when something may have changed: the
kernel notified a change of a link, address or route since the last pass
(dataplane/kernel_watch.py), the workloads or the learned-route rule
changed, the route table has writes pending, or the last full read was
long ago. Otherwise the links and routes are as the last full pass left
them, and the pass only looks inside its share of the workloads' namespaces,
which the node's notifications cannot see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.routetable import RouteTable
from l3fabric.dataplane.base import Observed
from l3fabric.dataplane.netns import netns_identity, netns_present
from l3fabric.drift import workload_drift
from l3fabric.model import Workload, is_owned_iface, workload_routes
from l3fabric.reconcile import ApplyResult, LinkWriter, Orphan, apply_links, plan_links

log = logging.getLogger(__name__)

# After a failed pass the next one comes sooner than the interval.
RETRY_AFTER_ERROR = 1.0


class LinkDataplane(LinkWriter, Protocol):
    def node_links(self) -> dict[str, int]: ...
    def kernel_changed(self) -> bool: ...
    def inspect(self, workload: Workload) -> Observed: ...


# How many wired workloads a periodic pass looks inside (round robin): one
# netlink conversation in each namespace is cheap, 10k of them every 30 s
# is not (each look also reads the node's addresses). An explicit
# `l3fabric reconcile` looks inside every one.
WORKLOAD_CHECKS_PER_PASS = 64

# However quiet the kernel, a pass reads everything at least this often: a
# change no notification told of (a bug of ours or the kernel's) must not
# last for ever. At 10k workloads a full read costs the node seconds of CPU.
FULL_PASS_AT_LEAST_EVERY = 600.0


@dataclass
class PassReport:
    seconds: float = 0.0
    repaired: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    # Why the pass read the kernel's links and routes; empty: nothing may
    # have changed, they were not read.
    read_because: tuple[str, ...] = ("asked",)

    @property
    def changed(self) -> bool:
        return bool(self.repaired or self.orphans)

    @property
    def kernel_read(self) -> bool:
        return bool(self.read_because)


def still_there(workload: Workload) -> bool:
    """The workload's namespace still exists and is still the same one."""
    if not netns_present(workload.netns):
        return False
    return not workload.netns_id or netns_identity(workload.netns) == workload.netns_id


class NodeReconciler:
    def __init__(
        self,
        dataplane: LinkDataplane,
        route_table: RouteTable,
        *,
        clock: Callable[[], float],
        present: Callable[[Workload], bool] = still_there,
    ) -> None:
        self._dataplane = dataplane
        self._routes = route_table
        self._clock = clock
        self._present = present
        self._next_check = 0
        # What the last full pass without errors ran on, and found wired.
        self._clean_inputs: tuple[tuple[Workload, ...], bool] | None = None
        self._wired: list[Workload] = []
        self._read_at: float | None = None

    def run(
        self,
        workloads: Sequence[Workload],
        *,
        keep_unknown_learned: bool,
        look_inside_all: bool = False,
        read_kernel: bool = False,
    ) -> PassReport:
        """`read_kernel`: read the links and routes even if nothing seems to
        have changed (start-up, a reload, an operator's reconcile)."""
        started = self._clock()
        # Asked every pass, so the watch starts afresh before any dump below.
        kernel_changed = self._dataplane.kernel_changed()
        inputs = (tuple(workloads), keep_unknown_learned)
        because = [
            reason
            for reason, holds in (
                ("asked", read_kernel or look_inside_all),
                ("kernel changed", kernel_changed),
                ("route writes pending", self._routes.dirty),
                ("inputs changed", inputs != self._clean_inputs),
                (
                    "not read for long",
                    self._read_at is None or started - self._read_at >= FULL_PASS_AT_LEAST_EVERY,
                ),
            )
            if holds
        ]
        if not because:
            applied = ApplyResult()
            self._repair_workload_sides(self._to_check(self._wired, False), applied)
            if applied.errors:
                self._clean_inputs = None  # the retry reads everything
            return PassReport(
                seconds=self._clock() - started,
                repaired=dict(applied.by_kind),
                errors=applied.errors,
                read_because=(),
            )
        log.debug("reconcile reads the kernel", extra={"because": because})
        report = self._full_pass(workloads, keep_unknown_learned, look_inside_all)
        report.read_because = tuple(because)
        self._read_at = started
        self._clean_inputs = None if report.errors else inputs
        return report

    def _full_pass(
        self, workloads: Sequence[Workload], keep_unknown_learned: bool, look_inside_all: bool
    ) -> PassReport:
        started = self._clock()
        # One link dump a pass: at 10k workloads it is the pass's largest cost.
        every_link = self._dataplane.node_links()
        links = frozenset(name for name in every_link if is_owned_iface(name))
        present = frozenset(
            w.netns for w in workloads if w.host_iface not in links and self._present(w)
        )
        ops = plan_links(workloads, links, present)
        applied = apply_links(ops, self._dataplane)
        wired = [w for w in workloads if w.host_iface in links]
        self._wired = wired
        self._repair_workload_sides(self._to_check(wired, look_inside_all), applied)
        orphaned = {op.workload.name for op in ops if isinstance(op, Orphan)}
        # An orphan's veth is gone with its namespace: it has no routes to own.
        self._routes.set_workloads(w for w in workloads if w.name not in orphaned)
        self._routes.keep_unknown_learned = keep_unknown_learned
        # The dump names the routes' interfaces from the same link dump unless
        # this pass made or replaced links.
        written = self._routes.resync(links=None if applied.applied else every_link)
        repaired = dict(applied.by_kind)
        for kind, count in written.by_kind().items():
            repaired[kind] = repaired.get(kind, 0) + count
        errors = applied.errors + [f"route {f.route_prefix}: {f.message}" for f in written.failures]
        return PassReport(
            seconds=self._clock() - started,
            repaired=repaired,
            errors=errors,
            orphans=applied.orphans,
        )

    def _to_check(self, wired: list[Workload], everyone: bool) -> list[Workload]:
        if everyone or len(wired) <= WORKLOAD_CHECKS_PER_PASS:
            return wired
        start = self._next_check % len(wired)
        picked = (wired + wired)[start : start + WORKLOAD_CHECKS_PER_PASS]
        self._next_check = start + WORKLOAD_CHECKS_PER_PASS
        return picked

    def _repair_workload_sides(self, workloads: list[Workload], result: ApplyResult) -> None:
        """Inside each workload's namespace: its addresses, gateway neighbours
        and default routes. What drifted is put back by attaching again
        (idempotent); host routes are the route table's, checked by resync."""
        for workload in workloads:
            try:
                observed = self._dataplane.inspect(workload)
                problems = workload_drift(workload, observed, workload_routes(workload))
                if not problems or not observed.netns_present:
                    continue
                log.warning(
                    "workload wiring drifted, repairing",
                    extra={"workload": workload.name, "problems": problems},
                )
                self._dataplane.attach(workload)
                result.applied += 1
                result.count("workload_side")
            except Exception as exc:
                result.errors.append(f"repair {workload.name}: {exc}")


class ReconcilePasses:
    """When passes run (periodically, on demand, soon after an error), and
    what each one reports: metrics, a log line when something was repaired,
    and the summary `status` shows."""

    def __init__(
        self,
        reconciler: NodeReconciler,
        *,
        loop: WorkLoop,
        metrics: Metrics,
        wall_clock: Callable[[], float],
        workloads: Callable[[], tuple[Workload, ...]],
        keep_learned: Callable[[], bool],
        after_pass: Callable[[tuple[Workload, ...], bool], None],
    ) -> None:
        self._reconciler = reconciler
        self._loop = loop
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._workloads = workloads
        self._keep_learned = keep_learned
        self._after_pass = after_pass
        self._retry_pending = False
        self.last: dict[str, Any] = {}

    def every(self, interval: Callable[[], float]) -> None:
        def periodic() -> None:
            try:
                self.run()
            finally:
                self._loop.call_later(interval(), periodic)

        self._loop.call_later(interval(), periodic)

    def retry_soon(self) -> None:
        if self._retry_pending:
            return
        self._retry_pending = True

        def retry() -> None:
            self._retry_pending = False
            self.run()

        self._loop.call_later(RETRY_AFTER_ERROR, retry)

    def run(self, *, look_inside_all: bool = False, read_kernel: bool = False) -> dict[str, Any]:
        workloads = self._workloads()
        report = self._reconciler.run(
            workloads,
            keep_unknown_learned=self._keep_learned(),
            look_inside_all=look_inside_all,
            read_kernel=read_kernel,
        )
        m = self._metrics
        m.reconcile_duration.observe(report.seconds)
        for kind, count in report.repaired.items():
            m.drift_repaired.labels(kind).inc(count)
        if report.errors:
            m.reconcile_errors.inc(len(report.errors))
            log.warning("reconcile had errors", extra={"errors": report.errors[:20]})
            self.retry_soon()
        if report.changed:
            log.info(
                "reconciled",
                extra={
                    "repaired": report.repaired,
                    "orphans": report.orphans,
                    "seconds": report.seconds,
                },
            )
        self._after_pass(workloads, report.kernel_read)
        self.last = {
            "at": self._wall_clock(),
            "seconds": round(report.seconds, 6),
            "repaired": report.repaired,
            "errors": report.errors,
            "orphans": report.orphans,
            "read_because": list(report.read_because),
        }
        return self.last
