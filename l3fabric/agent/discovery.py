"""Service-discovery registration: this node's workloads as DNS records.

Every workload's name in its namespace (its pod name when CNI gave one) and
its addresses go into the datastore in the SkyDNS layout (datastore/skydns.py)
with a PTR per address; they go when the workload is deleted or found
orphaned. Of every service definition (datastore/services.py) this node
writes the records of its own ready workloads the selector matches, under
the node's lease: a node whose lease expires takes its endpoints with it.

The datastore is never allowed to fail a workload add: an error is logged and
counted, and the resync of the next reconcile pass puts back whatever is
missing or different (plan_update), so records converge without a
separate retry path. Runs on the work loop, like everything that changes
state; only the service watch has a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from l3fabric.agent.node_watch import PrefixWatcher
from l3fabric.config import DiscoveryConfig
from l3fabric.datastore.base import Datastore, DatastoreError, KeyValue, VersionConflict
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceError, ServiceSpec
from l3fabric.datastore.skydns import (
    Endpoint,
    RecordError,
    check_label,
    plan_update,
    ptr_records,
    service_prefix,
    service_records,
    workload_prefix,
    workload_records,
)
from l3fabric.model import Workload

log = logging.getLogger(__name__)

Pairs = list[tuple[str, bytes]]


class ErrorCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


def dns_label(workload: Workload) -> str:
    """The workload's name in DNS: the pod name CNI gave, else its own."""
    return workload.pod or workload.name


@dataclass
class SyncReport:
    written: int = 0
    deleted: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: SyncReport) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.errors += other.errors


class Listing:
    """One listing of the record prefix, indexed so that a pass over 10k
    workloads does not scan it 10k times."""

    def __init__(self, items: Iterable[KeyValue]) -> None:
        self._by_key = {kv.key: kv for kv in items}
        self._children: dict[str, list[KeyValue]] = {}
        for kv in self._by_key.values():
            self._children.setdefault(kv.key.rpartition("/")[0] + "/", []).append(kv)

    def get(self, key: str) -> KeyValue | None:
        return self._by_key.get(key)

    def children(self, prefix: str) -> list[KeyValue]:
        """The keys directly below prefix (which ends in '/')."""
        return self._children.get(prefix, [])

    def under(self, prefix: str) -> dict[str, KeyValue]:
        return {k: kv for k, kv in self._by_key.items() if k.startswith(prefix)}


class Discovery:
    def __init__(
        self,
        store: Datastore,
        config: DiscoveryConfig,
        keys: KeyLayout,
        *,
        workloads: Callable[[], Sequence[Workload]],
        lease: Callable[[], int],
        errors: ErrorCounter,
        present: Callable[[Workload], bool],
    ) -> None:
        self._store = store
        self._workloads = workloads
        self._config = config
        self._keys = keys
        self._lease = lease
        self._errors = errors
        self._present = present
        # Workloads whose records could not be removed: tried again each pass.
        self._unremoved: dict[str, Workload] = {}
        self._orphans: frozenset[str] = frozenset()
        self._services: dict[tuple[str, str], ServiceSpec] | None = None  # None: read again
        self._holding: set[tuple[str, str]] = set()  # services we may have records under
        self._lease_written = 0  # the lease our endpoint records were written under
        self._warned: set[str] = set()
        # What the last clean pass saw (the store's revision and every input
        # of the records): an identical one finds the same records, so it is
        # skipped instead of listing every record again.
        self._clean: tuple[object, ...] | None = None

    # -- records of one workload ----------------------------------------------

    def name_records(self, workload: Workload) -> tuple[str, Pairs, Pairs] | None:
        """(prefix, A/AAAA pairs, PTR pairs), or None when the workload's
        name is not a DNS label (warned once)."""
        cfg = self._config
        label = dns_label(workload)
        try:
            check_label(label, "workload name")
            prefix = workload_prefix(label, workload.namespace, zone=cfg.zone, prefix=cfg.prefix)
            names = workload_records(
                label,
                workload.namespace,
                workload.addresses,
                ttl=cfg.ttl,
                zone=cfg.zone,
                prefix=cfg.prefix,
            )
            ptrs = ptr_records(
                label,
                workload.namespace,
                workload.addresses,
                ttl=cfg.ttl,
                zone=cfg.zone,
                prefix=cfg.prefix,
            )
        except RecordError as exc:
            if workload.name not in self._warned:
                self._warned.add(workload.name)
                log.warning(
                    "workload not registered in DNS: its name is not a DNS name",
                    extra={"workload": workload.name, "error": str(exc)},
                )
            return None
        return prefix, names, ptrs

    # -- entry points -------------------------------------------------------------

    def workload_changed(self, added: Workload | None, removed: Workload | None) -> None:
        """After an add or delete: its names, then the services it is in."""
        report = SyncReport()
        if removed is not None:
            self._unremoved[removed.name] = removed
            self._guard(report, "unregister", lambda: self._unregister(removed, report))
        if added is not None:
            self._unremoved.pop(added.name, None)
            self._guard(report, "register", lambda: self._register(added, None, report))
        changed = [w for w in (added, removed) if w is not None]
        self._guard(
            report, "services", lambda: self._sync_services(self._workloads(), changed, report)
        )

    def resync(self, workloads: Sequence[Workload], orphans: Collection[str]) -> SyncReport:
        """The periodic pass: every record of this node as it should be, from
        one listing of the record prefix."""
        report = SyncReport()
        self._orphans = frozenset(orphans)
        for workload in workloads:
            if workload.name in self._orphans:
                self._unremoved[workload.name] = workload
        try:
            seen = self._inputs(workloads)
            if seen == self._clean and not self._unremoved:
                return report
            listing = Listing(self._store.list(self._config.prefix + "/"))
        except DatastoreError as exc:
            self._count(report, "resync", exc)
            return report
        for gone in list(self._unremoved.values()):
            self._guard(report, "unregister", partial(self._unregister, gone, report, listing))
        for workload in workloads:
            if workload.name not in self._orphans:
                self._guard(report, "register", partial(self._register, workload, listing, report))
        self._guard(
            report, "services", partial(self._sync_services, workloads, None, report, listing)
        )
        if report.written or report.deleted:
            log.info(
                "discovery records repaired",
                extra={"written": report.written, "deleted": report.deleted},
            )
        # Clean: nothing written (a write moves the revision) and no error.
        clean = not (report.written or report.deleted or report.errors or self._unremoved)
        self._clean = seen if clean else None
        return report

    def _inputs(self, workloads: Sequence[Workload]) -> tuple[object, ...]:
        return (
            self._store.revision(),
            self._lease(),
            self._orphans,
            tuple(workloads),
            tuple(self._present(w) for w in workloads),
        )

    def services_changed(self) -> None:
        """The service definitions changed (the watch said so): read them
        again and recompute this node's endpoints of every service."""
        self._services = None
        report = SyncReport()
        self._guard(
            report, "services", lambda: self._sync_services(self._workloads(), None, report)
        )

    def lease_changed(self) -> None:
        """The node's lease was granted again: our endpoint records went with
        the old one, so write them all under the new one."""
        report = SyncReport()
        self._guard(
            report, "services", lambda: self._sync_services(self._workloads(), None, report)
        )

    def watch_services(
        self, submit: Callable[[Callable[[], None]], None], stopping: threading.Event
    ) -> threading.Thread:
        """Follow the service definitions on a thread of its own; every
        change is handed to the work loop through `submit`."""
        revision = self._store.revision()
        watcher = PrefixWatcher(
            self._store,
            self._keys.services,
            on_change=lambda: submit(self.services_changed),
            stopping=stopping,
        )
        thread = threading.Thread(
            target=watcher.run, args=(revision,), name="discovery-services", daemon=True
        )
        thread.start()
        return thread

    # -- names ------------------------------------------------------------------

    def _register(self, workload: Workload, listing: Listing | None, report: SyncReport) -> None:
        """Put what is missing or different. Other addresses under the same
        name are left alone: they belong to another workload of that name
        (a pod started again elsewhere), whose own delete removes them, and
        two live ones must not take turns deleting each other."""
        records = self.name_records(workload)
        if records is None:
            return
        prefix, names, ptrs = records
        existing = listing.children(prefix) if listing is not None else self._store.list(prefix)
        puts, _ = plan_update(existing, names)
        for key, value in ptrs:
            current = listing.get(key) if listing is not None else self._store.get(key)
            if current is None or current.value != value:
                puts.append((key, value))
        for key, value in puts:
            self._store.put(key, value)
            report.written += 1

    def _unregister(
        self, workload: Workload, report: SyncReport, listing: Listing | None = None
    ) -> None:
        """Delete the workload's records, each only while it still holds what
        this workload wrote: its name or address may belong to another
        workload by the time a retry gets here."""
        records = self.name_records(workload)
        if records is not None:
            _, names, ptrs = records
            for key, value in names + ptrs:
                current = listing.get(key) if listing is not None else self._store.get(key)
                if current is not None and current.value == value:
                    try:
                        self._store.delete(key, expect_version=current.version)
                        report.deleted += 1
                    except VersionConflict:
                        pass  # rewritten meanwhile: no longer ours
        self._unremoved.pop(workload.name, None)

    # -- services ---------------------------------------------------------------

    def _definitions(self) -> dict[tuple[str, str], ServiceSpec]:
        if self._services is None:
            found: dict[tuple[str, str], ServiceSpec] = {}
            for kv in self._store.list(self._keys.services):
                try:
                    spec = ServiceSpec.decode(kv.value, kv.key)
                except ServiceError as exc:
                    log.warning(
                        "ignoring an invalid service definition",
                        extra={"key": kv.key, "error": str(exc)},
                    )
                    continue
                found[(spec.namespace, spec.name)] = spec
            self._services = found
        return self._services

    def _sync_services(
        self,
        workloads: Sequence[Workload],
        changed: Sequence[Workload] | None,
        report: SyncReport,
        listing: Listing | None = None,
    ) -> None:
        """This node's endpoint records of each service: of every service, or
        (`changed`) of those that select one of the changed workloads."""
        lease = self._lease()
        if not lease:
            return  # not registered: the lease's return brings lease_changed
        definitions = self._definitions()
        if lease != self._lease_written:
            changed = None  # everything goes under the new lease
        todo = [
            spec
            for spec in definitions.values()
            if changed is None or any(spec.selects(w.namespace, w.labels) for w in changed)
        ]
        gone = [k for k in self._holding if k not in definitions] if changed is None else []
        for spec in todo:
            self._sync_service(spec, workloads, lease, report, listing)
            self._holding.add((spec.namespace, spec.name))
        for namespace, name in gone:
            self._sync_service(ServiceSpec(name, namespace), workloads, lease, report, listing)
            self._holding.discard((namespace, name))
        if changed is None:
            self._lease_written = lease

    def _sync_service(
        self,
        spec: ServiceSpec,
        workloads: Sequence[Workload],
        lease: int,
        report: SyncReport,
        listing: Listing | None,
    ) -> None:
        cfg = self._config
        ours = [w for w in workloads if w.namespace == spec.namespace]
        labelled = [(w, self.name_records(w)) for w in ours]
        mine = [Endpoint(dns_label(w), w.addresses) for w, r in labelled if r is not None]
        ready = [
            Endpoint(dns_label(w), w.addresses)
            for w, r in labelled
            if r is not None
            and spec.selects(w.namespace, w.labels)
            and w.name not in self._orphans
            and self._present(w)
        ]
        desired = dict(self._service_records(spec, ready))
        # Every key this node could write for the service, matching or not:
        # ours even when a previous run of the agent wrote it under its lease.
        possible = {key for key, _ in self._service_records(spec, mine)}
        prefix = service_prefix(spec.name, spec.namespace, zone=cfg.zone, prefix=cfg.prefix)
        if listing is not None:
            existing = listing.under(prefix)
        else:
            existing = {kv.key: kv for kv in self._store.list(prefix)}
        for key, value in desired.items():
            current = existing.get(key)
            if current is None or current.value != value or current.lease != lease:
                self._store.put(key, value, lease=lease)
                report.written += 1
        for key, kv in existing.items():
            if key not in desired and (kv.lease == lease or key in possible):
                try:
                    self._store.delete(key, expect_version=kv.version)
                    report.deleted += 1
                except VersionConflict:
                    pass  # rewritten meanwhile by whoever owns it now

    def _service_records(self, spec: ServiceSpec, endpoints: Sequence[Endpoint]) -> Pairs:
        cfg = self._config
        return service_records(
            spec.name,
            spec.namespace,
            endpoints,
            spec.ports,
            ttl=cfg.ttl,
            zone=cfg.zone,
            prefix=cfg.prefix,
        )

    # -- errors -----------------------------------------------------------------

    def _guard(self, report: SyncReport, what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except (DatastoreError, RecordError, ServiceError) as exc:
            self._count(report, what, exc)

    def _count(self, report: SyncReport, what: str, exc: Exception) -> None:
        self._errors.inc()
        report.errors.append(f"{what}: {exc}")
        log.warning(
            "discovery records not written; the next pass tries again",
            extra={"step": what, "error": str(exc)},
        )
