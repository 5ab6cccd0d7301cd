"""The node agent: wires config, datastore, IPAM and data plane together.

Everything that changes state runs on one WorkLoop thread. Signal handlers
only set flags; the loop acts on them between work items.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from l3fabric import logs
from l3fabric.agent.bgp import BgpService, Speaker
from l3fabric.agent.http import HealthServer
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.server import ControlServer, Handler, RequestError
from l3fabric.agent.workloads import WorkloadManager
from l3fabric.bgp.exabgp import ExabgpSpeaker
from l3fabric.config import Config, ConfigError, load_config, restart_required
from l3fabric.dataplane import Dataplane
from l3fabric.dataplane.netns import netns_identity, netns_present
from l3fabric.datastore.base import Datastore
from l3fabric.ipam import Ipam
from l3fabric.model import NodeRecord, RouteKind, Workload
from l3fabric.reconcile import ActualState, DesiredState, apply, plan

log = logging.getLogger(__name__)

# After a failed reconcile the next pass comes sooner than the interval.
RETRY_AFTER_ERROR = 1.0
# How long after start readiness waits for every peer (then: at least one).
READINESS_GRACE = 60.0
# How often per-peer gauges are refreshed from the BGP state.
METRICS_INTERVAL = 2.0
# How long an HTTP readiness probe waits for the work loop.
PROBE_TIMEOUT = 5.0


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        store: Datastore,
        dataplane: Dataplane,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config_loader: Callable[[str], Config] = load_config,
        speaker_factory: Callable[[Config], Speaker] | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._dataplane = dataplane
        self._metrics = metrics
        self._clock = clock
        self._wall_clock = wall_clock
        self._load_config = config_loader
        self._flags = _Flags()
        self._loop = WorkLoop(clock)
        self._started_at = clock()
        self._control: ControlServer | None = None
        self._http: HealthServer | None = None
        self._last_reconcile: dict[str, Any] = {}
        self._reconcile_pending = False
        self.ipam = self._make_ipam(config)
        self.workloads = self._make_workloads(config)
        self.bgp: BgpService | None = None
        if config.bgp.enabled:
            factory = speaker_factory or _exabgp_speaker
            self.bgp = BgpService(
                config,
                speaker=factory(config),
                store=store,
                dataplane=dataplane,
                loop=self._loop,
                metrics=metrics,
                clock=clock,
                wall_clock=wall_clock,
                on_synced=lambda: self._loop.submit(self.reconcile),
            )

    # -- construction helpers (no I/O) --------------------------------------

    def _make_ipam(self, config: Config) -> Ipam:
        return Ipam(
            self._store,
            config.node.name,
            config.pools,
            strict_affinity=config.ipam.strict_affinity,
            prefix=config.datastore.prefix,
        )

    def _make_workloads(self, config: Config) -> WorkloadManager:
        return WorkloadManager(
            node=config.node.name,
            store=self._store,
            ipam=self.ipam,
            dataplane=self._dataplane,
            key_prefix=config.datastore.prefix,
            on_change=self._after_workload_change,
        )

    # -- lifecycle -----------------------------------------------------------

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Kernel routes stay in place."""
        self._install_signal_handlers()
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
        control = ControlServer(cfg.socket_path, self._loop, self._handlers())
        control.start()
        self._control = control
        self._register_node()
        self._dataplane.ensure_sysctls()
        self._metrics.config_last_reload.set(self._wall_clock())
        if cfg.metrics.enabled:
            self._http = HealthServer(
                cfg.metrics.listen_host,
                cfg.metrics.listen_port,
                self._metrics.registry,
                self.liveness,
                self._readiness_from_http,
            )
            self._http.start()
        self.reconcile()
        if self.bgp is not None:
            self.bgp.start()
            self._advertise_all()
        self._loop.call_later(cfg.reconcile.interval, self._periodic_reconcile)
        self._loop.call_later(METRICS_INTERVAL, self._periodic_metrics)
        log.info(
            "agent started",
            extra={"node": cfg.node.name, "socket": str(cfg.socket_path), "pid": os.getpid()},
        )

    def stop(self) -> None:
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
        self._store.close()
        log.info("agent stopped", extra={"node": self.config.node.name})

    def _install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self._flags.stop = True

        def on_reload(signum: int, _frame: FrameType | None) -> None:
            self._flags.reload = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)

    def _between(self) -> None:
        if self._flags.reload:
            self._flags.reload = False
            try:
                self.reload()
            except Exception:
                self._metrics.config_reload_errors.inc()
                log.exception("config reload failed half-way; run `l3fabric reconcile` or restart")

    def _register_node(self) -> None:
        node = self.config.node
        record = NodeRecord(node.name, node.asn, node.ipv4, node.ipv6)
        key = f"{self.config.datastore.prefix}/nodes/{node.name}"
        self._store.put(key, json.dumps(record.to_dict(), sort_keys=True).encode())

    # -- config reload ---------------------------------------------------------

    def reload(self) -> bool:
        """Load the config file again; a bad file keeps the running config."""
        try:
            new = self._load_config(self.config.source)
            changed = restart_required(self.config, new)
            if changed:
                raise ConfigError(
                    [
                        f"{new.source}: {key}: changed; takes effect only on restart"
                        for key in changed
                    ]
                )
        except ConfigError as exc:
            self._metrics.config_reload_errors.inc()
            log.error(
                "config reload rejected, keeping the running config", extra={"errors": exc.errors}
            )
            return False
        if self.bgp is not None:
            self.bgp.reconfigure(new)  # the part that can fail: before anything is swapped
        self.config = new
        self.ipam = self._make_ipam(new)
        self.workloads = self._make_workloads(new)
        logs.setup(new.log.level, new.log.format)
        self._metrics.config_last_reload.set(self._wall_clock())
        log.info("config reloaded", extra={"source": new.source})
        self.reconcile()
        return True

    # -- reconcile -------------------------------------------------------------

    def _periodic_reconcile(self) -> None:
        try:
            self.reconcile()
        finally:
            self._loop.call_later(self.config.reconcile.interval, self._periodic_reconcile)

    def reconcile(self) -> dict[str, Any]:
        """One pass: desired (datastore + learned routes) against the kernel."""
        started = self._clock()
        workloads = tuple(self.workloads.list())
        actual = ActualState(
            links=frozenset(self._dataplane.owned_links()),
            routes={r.prefix: r for r in self._dataplane.dump_routes()},
            present_netns=frozenset(w.netns for w in workloads if _still_there(w)),
        )
        learned = self.bgp.learned_routes() if self.bgp is not None else {}
        # Until the peers have resent their routes after a restart, the
        # kernel's learned routes are better than none: keep them.
        keep_learned = self.bgp is not None and not self.bgp.synced()
        ops = plan(DesiredState(workloads, learned, keep_unknown_learned=keep_learned), actual)
        result = apply(ops, self._dataplane)
        duration = self._clock() - started
        self._metrics.reconcile_duration.observe(duration)
        for kind, count in result.by_kind.items():
            self._metrics.drift_repaired.labels(kind).inc(count)
        if result.errors:
            self._metrics.reconcile_errors.inc(len(result.errors))
            log.warning("reconcile had errors", extra={"errors": result.errors[:20]})
            if not self._reconcile_pending:
                self._reconcile_pending = True
                self._loop.call_later(RETRY_AFTER_ERROR, self._retry_reconcile)
        if result.applied or result.orphans:
            log.info(
                "reconciled",
                extra={"repaired": result.by_kind, "orphans": result.orphans, "seconds": duration},
            )
        self._update_gauges(workloads, len(learned))
        self._export_ipam()
        if self.bgp is not None:
            self._advertise_all(workloads)
        self._last_reconcile = {
            "at": self._wall_clock(),
            "seconds": round(duration, 6),
            "repaired": result.by_kind,
            "errors": result.errors,
            "orphans": result.orphans,
        }
        return self._last_reconcile

    def _periodic_metrics(self) -> None:
        try:
            if self.bgp is not None:
                self.bgp.export_metrics()
        finally:
            self._loop.call_later(METRICS_INTERVAL, self._periodic_metrics)

    def _export_ipam(self) -> None:
        m = self._metrics
        report = self.ipam.show()
        for pool in report.get("pools", []):
            m.ipam_pool_size.labels(pool["cidr"]).set(pool["size"])
            m.ipam_in_use.labels(pool["cidr"]).set(pool["used"])
        m.ipam_blocks_owned.set(len(self.ipam.owned_blocks()))
        m.ipam_borrowed.set(len(self.ipam.borrowed()))

    def _retry_reconcile(self) -> None:
        self._reconcile_pending = False
        self.reconcile()

    def _update_gauges(self, workloads: Sequence[Workload], learned: int) -> None:
        m = self._metrics
        m.workloads.set(len(workloads))
        local = sum(len(w.addresses) for w in workloads)
        m.routes_programmed.labels(RouteKind.LOCAL_WORKLOAD.value).set(local)
        m.routes_programmed.labels(RouteKind.LEARNED.value).set(learned)

    def _advertise_all(self, workloads: Sequence[Workload] | None = None) -> None:
        assert self.bgp is not None
        if workloads is None:
            workloads = self.workloads.list()
        blocks = self.ipam.owned_blocks() if self.config.bgp.advertise == "blocks" else []
        self.bgp.set_advertisements(workloads, blocks)

    def _after_workload_change(self, added: Workload | None, removed: Workload | None) -> None:
        if self.bgp is not None:
            self.bgp.workload_changed(added, removed, self.workloads.list, self.ipam.owned_blocks)
        delta = (len(added.addresses) if added else 0) - (len(removed.addresses) if removed else 0)
        self._metrics.workloads.inc(1 if added else -1)
        self._metrics.routes_programmed.labels(RouteKind.LOCAL_WORKLOAD.value).inc(delta)

    # -- probes ------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        stalled = self._clock() - self._loop.last_iteration
        if stalled > 30:
            return False, f"work loop stalled for {stalled:.0f}s"
        return True, "ok"

    def _readiness_from_http(self) -> tuple[bool, str]:
        """Readiness reads the loop's state, so it is computed on the loop."""
        try:
            return self._loop.call(self.readiness, timeout=PROBE_TIMEOUT)
        except TimeoutError:
            return False, f"work loop did not answer within {PROBE_TIMEOUT:.0f}s"
        except RuntimeError as exc:
            return False, str(exc)

    def readiness(self) -> tuple[bool, str]:
        """calico-node's rule for BIRD: within a grace period after start all
        configured peers must be Established; after it, at least one."""
        if not self._last_reconcile:
            return False, "no reconcile pass yet"
        bgp = self.bgp
        if bgp is None or bgp.neighbor_count == 0:
            return True, "ok"
        if bgp.speaker_pid is None:
            return False, "ExaBGP is not running"
        in_grace = self._clock() - self._started_at < READINESS_GRACE
        if in_grace and not bgp.all_established():
            return False, "not all BGP peers are Established yet"
        if not bgp.any_established():
            return False, "no BGP peer is Established"
        return True, "ok"

    # -- control API -------------------------------------------------------------

    def _handlers(self) -> dict[str, Handler]:
        return {
            "workload.add": self._workload_add,
            "workload.del": self._workload_del,
            "workload.list": lambda p: [w.to_dict() for w in self.workloads.list()],
            "ipam.show": lambda p: self.ipam.show(),
            "ipam.check": self._ipam_check,
            "reconcile": lambda p: self.reconcile(),
            "status": lambda p: self.status(),
            "routes": self._routes,
            "health": lambda p: self.health(),
        }

    def health(self) -> dict[str, Any]:
        live, live_reason = self.liveness()
        ready, ready_reason = self.readiness()
        return {
            "live": live,
            "live_reason": live_reason,
            "ready": ready,
            "ready_reason": ready_reason,
        }

    def _routes(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view", "programmed")
        if view == "programmed":
            routes = sorted(
                self._dataplane.dump_routes(),
                key=lambda r: (r.family, int(r.prefix.network_address), r.prefix.prefixlen),
            )
            return {
                "view": view,
                "routes": [
                    {
                        "prefix": str(r.prefix),
                        "nexthops": [str(nh) for nh in r.nexthops],
                        "kind": "local"
                        if all(nh.gateway is None for nh in r.nexthops)
                        else "learned",
                    }
                    for r in routes
                ],
            }
        if self.bgp is None:
            raise RequestError("invalid", "BGP is disabled on this node")
        if view == "advertised":
            return {"view": view, "routes": self.bgp.advertised()}
        if view == "received":
            peer = params.get("peer")
            if peer is not None and not isinstance(peer, str):
                raise RequestError("invalid", "peer must be an address")
            try:
                address = ipaddress.ip_address(peer) if peer is not None else None
            except ValueError:
                raise RequestError("invalid", f"--peer {peer!r} is not an IP address") from None
            if address is not None and not self.bgp.is_peer(address):
                raise RequestError("not-found", f"--peer {peer} is not a configured BGP peer")
            return {"view": view, "routes": self.bgp.received(peer)}
        raise RequestError("invalid", f"unknown routes view {view!r}")

    def _workload_add(self, params: dict[str, Any]) -> dict[str, Any]:
        name = _str_param(params, "name")
        netns = _str_param(params, "netns")
        ips = params.get("ips") or []
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise RequestError("invalid", "ips must be a list of strings")
        return self.workloads.add(name, netns, ips).to_dict()

    def _workload_del(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.workloads.delete(_str_param(params, "name")).to_dict()

    def _ipam_check(self, params: dict[str, Any]) -> dict[str, Any]:
        prefix = self.config.datastore.prefix
        live: dict[str, set[str]] = {}
        for kv in self._store.list(f"{prefix}/workloads/"):
            node, _, name = kv.key[len(prefix) + len("/workloads/") :].partition("/")
            live.setdefault(node, set()).add(name)
        nodes = {kv.key.rsplit("/", 1)[-1] for kv in self._store.list(f"{prefix}/nodes/")}
        repair = params.get("repair", False)
        if not isinstance(repair, bool):
            raise RequestError("invalid", "repair must be true or false")
        return self.ipam.check(live, nodes, repair=repair)

    def status(self) -> dict[str, Any]:
        cfg = self.config
        ready, why = self.readiness()
        http_url = self._http.url if self._http else None
        return {
            "node": cfg.node.name,
            "asn": cfg.node.asn,
            "addresses": [str(a) for a in (cfg.node.ipv4, cfg.node.ipv6) if a],
            "state": "ready" if ready else "starting",
            "reason": why,
            "pid": os.getpid(),
            "uptime_seconds": round(self._clock() - self._started_at, 3),
            "workloads": len(self.workloads.list()),
            "last_reconcile": self._last_reconcile,
            "metrics_url": f"{http_url}/metrics" if http_url else None,
            "health_urls": {"livez": f"{http_url}/livez", "readyz": f"{http_url}/readyz"}
            if http_url
            else None,
            "peers": self.bgp.peer_table() if self.bgp is not None else [],
            "exabgp_pid": self.bgp.speaker_pid if self.bgp is not None else None,
        }


def _str_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError("invalid", f"missing or invalid parameter {name!r}")
    return value


def _still_there(workload: Workload) -> bool:
    """The workload's namespace still exists and is still the same one."""
    if not netns_present(workload.netns):
        return False
    return not workload.netns_id or netns_identity(workload.netns) == workload.netns_id


def _exabgp_speaker(config: Config) -> Speaker:
    return ExabgpSpeaker(
        workdir=config.state_dir / "exabgp",
        router_id=config.node.router_id,
        local_as=config.node.asn,
        command=config.bgp.exabgp.command if config.bgp.exabgp.command != "exabgp" else None,
        port=config.bgp.port,
        # ExaBGP logs a line per route at INFO: at 10k routes that is most of
        # its work. Only an agent debugging its own logs gets them.
        log_level="INFO" if config.log.level == "debug" else "WARNING",
    )
