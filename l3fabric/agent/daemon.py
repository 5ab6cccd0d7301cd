"""The node agent's lifecycle: start, serve, reload, reconcile, stop.

Everything that changes state runs on one WorkLoop thread. Signal handlers
only set flags; the loop acts on them between work items. The parts are
passed in (agent/main.py builds the real ones), so the constructor does no I/O.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from l3fabric import logs
from l3fabric.agent import health
from l3fabric.agent.bgp import BgpService, Speaker
from l3fabric.agent.discovery import Discovery
from l3fabric.agent.handlers import handlers
from l3fabric.agent.http import HealthServer
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.node_reconcile import NodeReconciler, ReconcilePasses, still_there
from l3fabric.agent.registry import DatastoreHealth, NodeRegistration
from l3fabric.agent.reload import ReloadHistory, config_changes, reload_problems
from l3fabric.agent.routetable import RouteTable
from l3fabric.agent.server import ControlServer
from l3fabric.agent.status import node_status
from l3fabric.agent.workloads import WorkloadManager
from l3fabric.config import Config, ConfigError, load_config
from l3fabric.dataplane import Dataplane, DataplaneError
from l3fabric.datastore.base import Datastore, DatastoreError
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.allocator import Ipam
from l3fabric.model import NodeRecord, Route, Workload

log = logging.getLogger(__name__)

# How often per-peer gauges are refreshed from the BGP state.
METRICS_INTERVAL = 2.0


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False


def _install_signal_handlers(flags: _Flags) -> None:
    """Handlers only set flags; the loop acts on them between work items."""

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        flags.stop = True

    def on_reload(signum: int, _frame: FrameType | None) -> None:
        flags.reload = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        store: Datastore,
        dataplane: Dataplane,
        metrics: Metrics,
        speaker_factory: Callable[[Config], Speaker],
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config_loader: Callable[[str], Config] = load_config,
    ) -> None:
        self.config = config
        self.store = store
        self.keys = KeyLayout(config.datastore.prefix)
        self._dataplane = dataplane
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._load_config = config_loader
        self._flags = _Flags()
        self._reloads = ReloadHistory()
        self._loop = WorkLoop(clock)
        self._started_at = clock()
        self._control: ControlServer | None = None
        self._stopping = threading.Event()
        self._registration: NodeRegistration | None = None
        self._store_health = DatastoreHealth(
            metrics.datastore_up, on_back=lambda: self._on_datastore_back()
        )
        self._http: HealthServer | None = None
        self._ipam_exported_at: int | None = None  # the store's revision then
        self.route_table = RouteTable(dataplane, metrics=metrics, clock=clock)
        self._passes = ReconcilePasses(
            NodeReconciler(dataplane, self.route_table, clock=clock),
            loop=self._loop,
            metrics=metrics,
            wall_clock=wall_clock,
            workloads=lambda: tuple(self.workloads.list()),
            # Until the peers have resent their routes after a restart, the
            # kernel's learned routes are better than none: keep them.
            keep_learned=lambda: self.bgp is not None and not self.bgp.synced(),
            after_pass=self._after_pass,
        )
        self._probes = health.Probes(
            self._loop,
            clock=clock,
            reconciled=lambda: bool(self._passes.last),
            datastore_error=lambda: self.datastore_error,
            bgp=lambda: self.bgp,
        )
        self.ipam = self._make_ipam(config)
        self.workloads = self._make_workloads(config)
        self.discovery = (
            Discovery(
                store,
                config.discovery,
                self.keys,
                workloads=lambda: self.workloads.list(),
                lease=lambda: self._registration.lease if self._registration else 0,
                errors=metrics.discovery_errors,
                present=still_there,
            )
            if config.discovery.enabled
            else None
        )
        self.bgp = (
            BgpService(
                config,
                speaker=speaker_factory(config),
                store=store,
                route_table=self.route_table,
                local_addresses=dataplane.local_addresses,
                loop=self._loop,
                metrics=metrics,
                clock=clock,
                wall_clock=wall_clock,
                on_synced=lambda: self._loop.submit(self.reconcile),
            )
            if config.bgp.enabled
            else None
        )

    def _make_ipam(self, config: Config) -> Ipam:
        return Ipam(
            self.store,
            config.node.name,
            config.pools,
            strict_affinity=config.ipam.strict_affinity,
            prefix=config.datastore.prefix,
        )

    def _make_workloads(self, config: Config) -> WorkloadManager:
        return WorkloadManager(
            node=config.node.name,
            store=self.store,
            ipam=self.ipam,
            dataplane=self._dataplane,
            keys=self.keys,
            on_change=self._after_workload_change,
        )

    # -- lifecycle -----------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Kernel routes stay in place."""
        _install_signal_handlers(self._flags)
        try:
            self.start()
            self._loop.run(lambda: not self._flags.stop, self._between)
        finally:
            self.stop()
        return 0

    def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        # The socket first: a second agent for the same node must stop here,
        # before it touches the node record, the sysctls or the kernel.
        control = ControlServer(
            cfg.socket_path, self._loop, handlers(self), group=cfg.control.group
        )
        control.start()
        self._control = control
        node = cfg.node
        self._registration = NodeRegistration(
            self.store,
            self.keys,
            NodeRecord(node.name, node.asn, node.ipv4, node.ipv6),
            ttl=cfg.datastore.node_ttl,
            on_state=lambda up, why: self._loop.submit(lambda: self._store_health.set(up, why)),
            stopping=self._stopping,
            on_lease=lambda lease: self._loop.submit(
                lambda: self.discovery.lease_changed() if self.discovery else None
            ),
        )
        self._registration.register()
        self._registration.start()
        if self.discovery is not None:
            self.discovery.watch_services(self._loop.submit, self._stopping)
        self._dataplane.ensure_sysctls()
        self._protect_host()
        self._metrics.config_last_reload.set(self._wall_clock())
        if cfg.metrics.enabled:
            self._http = HealthServer(
                cfg.metrics.listen_host,
                cfg.metrics.listen_port,
                self._metrics.registry,
                self._probes.liveness,
                self._probes.readiness_from_http,
            )
            self._http.start()
        self.reconcile()
        if self.bgp is not None:
            self.bgp.start()
            self._advertise_all()
        self._passes.every(lambda: self.config.reconcile.interval)
        self._loop.call_later(METRICS_INTERVAL, self._periodic_metrics)
        log.info(
            "agent started",
            extra={"node": cfg.node.name, "socket": str(cfg.socket_path), "pid": os.getpid()},
        )

    def stop(self) -> None:
        # The node's lease is left to expire: a restarting agent registers
        # again before it does, and its peers keep its routes meanwhile.
        self._stopping.set()
        if self._registration is not None:
            self._registration.join(timeout=5)
        if self.bgp is not None:
            self.bgp.stop()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._http is not None:
            self._http.close()
            self._http = None
        self._loop.drain()
        self._dataplane.close()
        self.store.close()
        log.info("agent stopped", extra={"node": self.config.node.name})

    def _between(self) -> None:
        if self._flags.reload:
            self._flags.reload = False
            try:
                self.reload()  # its outcome is logged, counted and in `status`
            except Exception:
                self._metrics.config_reload_errors.inc()
                log.exception("config reload failed; run `l3fabric reconcile` or restart")

    def _on_datastore_back(self) -> None:
        # Whatever changed meanwhile (mesh members, records) is read again.
        log.info("datastore back, resyncing")
        if self.bgp is not None:
            self.bgp.refresh_neighbors()
        self.reconcile()

    @property
    def datastore_error(self) -> str | None:
        """None while the datastore answers."""
        return self._store_health.error

    # -- config reload ---------------------------------------------------------

    def reload(self) -> dict[str, Any]:
        """Load the config file again; a bad file keeps the running config,
        and nothing is swapped until every part has accepted the new one."""
        checks = [("bgp", self.bgp.check_config)] if self.bgp is not None else []
        try:
            new = self._load_config(self.config.source)
            errors = reload_problems(self.config, new, checks)
        except ConfigError as exc:
            errors = list(exc.errors)
        if errors:
            self._metrics.config_reload_errors.inc()
            self._reloads.rejected(errors, self._wall_clock())
            log.error(
                "config reload rejected, keeping the running config", extra={"errors": errors}
            )
            return {"reloaded": False, "changed": [], "errors": errors, **self._reloads.as_dict()}
        changed = config_changes(self.config, new)
        if self.bgp is not None:
            self.bgp.reconfigure(new)
        self.config = new
        self.ipam = self._make_ipam(new)
        self.workloads = self._make_workloads(new)
        logs.setup(new.log.level, new.log.format)
        self._metrics.config_last_reload.set(self._wall_clock())
        self._reloads.taken(self._wall_clock())
        log.info("config reloaded", extra={"source": new.source, "changed": changed})
        self.reconcile()
        return {"reloaded": True, "changed": changed, "errors": [], **self._reloads.as_dict()}

    # -- reconcile -------------------------------------------------------------

    def reconcile(self, *, look_inside_all: bool = False) -> dict[str, Any]:
        """One pass now (start-up, after a reload, `l3fabric reconcile`).
        A pass looks inside a share of the workloads' namespaces in turn;
        only an operator's `l3fabric reconcile` looks inside every one, as
        that costs a netlink conversation per workload. Unlike a periodic
        pass, this one reads the kernel even if it notified no change."""
        return self._passes.run(look_inside_all=look_inside_all, read_kernel=True)

    def _protect_host(self) -> None:
        cfg = self.config
        ports: list[int] | None = None
        if cfg.host_protection.enabled:
            ports = [cfg.bgp.port] if cfg.bgp.enabled else []
            if cfg.metrics.enabled:
                ports.append(cfg.metrics.listen_port)
        try:
            self._dataplane.ensure_host_protection(ports, [p.cidr for p in cfg.pools])
        except DataplaneError as exc:
            self._metrics.reconcile_errors.inc()
            log.error("workload-to-host protection not applied", extra={"error": str(exc)})

    def _after_pass(self, workloads: tuple[Workload, ...], kernel_read: bool) -> None:
        self._protect_host()
        self._metrics.workloads.set(len(workloads))
        self._export_ipam()
        # A pass that did not read the kernel found the workloads as the last
        # full pass did, which advertised them, and the kernel notified no
        # change of the addresses and routes the on-link networks come from.
        if self.bgp is not None and kernel_read:
            self._refresh_on_link(self.bgp)
            self._advertise_all(workloads)
        if self.discovery is not None:
            # Once the pass has recorded its report, which names the orphans.
            self._loop.submit(lambda: self._resync_discovery(workloads))

    def _export_ipam(self) -> None:
        """IPAM's gauges, read from the whole store: only when the store has
        changed since the last export (its revision), not on every pass."""
        try:
            revision = self.store.revision()
            if revision == self._ipam_exported_at:
                return
            self._metrics.export_ipam(self.ipam)
            self._ipam_exported_at = revision
        except DatastoreError as exc:
            log.warning("exporting IPAM metrics failed", extra={"error": str(exc)})

    def _refresh_on_link(self, bgp: BgpService) -> None:
        try:
            networks = self._dataplane.on_link_networks()
        except (DataplaneError, OSError) as exc:
            # Keep judging next hops by the networks last read.
            log.warning("reading the on-link networks failed", extra={"error": str(exc)})
            return
        bgp.set_on_link(networks)

    def _resync_discovery(self, workloads: tuple[Workload, ...]) -> None:
        if self.discovery is not None:
            self.discovery.resync(workloads, self._passes.last.get("orphans", ()))

    def _periodic_metrics(self) -> None:
        try:
            if self.bgp is not None:
                self.bgp.export_metrics()
        finally:
            self._loop.call_later(METRICS_INTERVAL, self._periodic_metrics)

    def _advertise_all(self, workloads: tuple[Workload, ...] | None = None) -> None:
        assert self.bgp is not None
        if workloads is None:
            workloads = tuple(self.workloads.list())
        blocks = self.ipam.owned_blocks() if self.config.bgp.advertise == "blocks" else []
        self.bgp.set_advertisements(workloads, blocks)

    def _after_workload_change(self, added: Workload | None, removed: Workload | None) -> None:
        # The host route first, then the announcement: a peer never learns a
        # route to a workload this node cannot yet deliver to.
        self.route_table.workload_changed(added, removed)
        result = self.route_table.flush()
        if result.failures:
            self._metrics.reconcile_errors.inc(len(result.failures))
            self._passes.retry_soon()
        if self.bgp is not None:
            self.bgp.workload_changed(added, removed, self.workloads.list, self.ipam.owned_blocks)
        # Names last: a name never resolves before its address is routed.
        if self.discovery is not None:
            self.discovery.workload_changed(added, removed)
        self._metrics.workloads.inc(1 if added else -1)

    # -- probes and views ----------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        return self._probes.liveness()

    def readiness(self) -> tuple[bool, str]:
        return self._probes.readiness()

    def health(self) -> dict[str, Any]:
        return self._probes.health()

    def programmed_routes(self) -> list[Route]:
        return self._dataplane.dump_routes()

    def status(self) -> dict[str, Any]:
        ready, why = self.readiness()
        return node_status(
            self.config,
            ready=ready,
            reason=why,
            uptime_seconds=self._clock() - self._started_at,
            workloads=len(self.workloads.list()),
            last_reconcile=self._passes.last,
            http_url=self._http.url if self._http else None,
            bgp=self.bgp,
            datastore_error=self.datastore_error,
            reloads=self._reloads.as_dict(),
        )
