"""The agent's BGP side: neighbours, advertisements, learned routes.

ExaBGP is the speaker; this service owns everything ExaBGP forgets:
- the neighbour set (configured peers plus, in full mesh, every node
  registered in the datastore), rendered into ExaBGP's config and reloaded;
- the advertisements, replayed to a peer whenever its session comes up and to
  everyone after ExaBGP restarts, followed by our own End-of-RIB (ExaBGP runs
  with manual-eor, so a peer never sweeps our routes before the replay);
- the RIB-in: events from ExaBGP go through the import policy and best-path
  selection, and the changes are programmed into the kernel at once.

All methods except the two reader threads run on the agent's work loop.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from l3fabric.agent.advertise import Advertisements
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.peers import PeerMetrics, PeerStatus, peer_row
from l3fabric.bgp import api
from l3fabric.bgp.events import (
    BgpEvent,
    EndOfRibEvent,
    NotificationEvent,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.exabgp import NeighborSpec
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib import Rib, TearDown
from l3fabric.config import Config, PeerConfig
from l3fabric.dataplane import Dataplane
from l3fabric.dataplane.netstat import md5_counters
from l3fabric.datastore.base import Datastore, WatchCompacted
from l3fabric.model import IPAddress, IPNetwork, NodeRecord, Route, Workload

log = logging.getLogger(__name__)

# A peer torn down for exceeding max-prefix stays down this long.
TEARDOWN_HOLD_DOWN = 60.0
WATCH_TIMEOUT = 1.0
# How often to look again for the node's addresses before starting ExaBGP.
ADDRESS_RETRY = 1.0
# How long to wait before trying again to start an ExaBGP that failed to start.
SPEAKER_RETRY = 10.0


class Speaker(Protocol):
    """What the service needs of ExaBGP (ExabgpSpeaker; fakes in unit tests)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool: ...
    def send(self, lines: Sequence[str]) -> bool: ...
    def events(self, timeout: float = 0.0) -> list[BgpEvent]: ...
    @property
    def pid(self) -> int | None: ...


@dataclass
class _Neighbor:
    spec: NeighborSpec
    info: PeerInfo
    status: PeerStatus
    held_down_until: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class BgpService:
    def __init__(
        self,
        config: Config,
        *,
        speaker: Speaker,
        store: Datastore,
        dataplane: Dataplane,
        loop: WorkLoop,
        metrics: Metrics,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._speaker = speaker
        self._store = store
        self._dataplane = dataplane
        self._loop = loop
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._rib = Rib(self._policy(config, ()))
        self._neighbors: dict[IPAddress, _Neighbor] = {}
        self._local: set[IPAddress] = set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._expire_scheduled = False
        self._adverts = Advertisements(config, send=self._send, peers_of=self._peers_of)
        self._md5_baseline: dict[str, int] = {}
        self._peer_metrics = PeerMetrics(metrics)
        self._waiting_for_addresses = False
        self._on_synced = on_synced
        self._synced = False
        self._eor_seen: set[IPAddress] = set()
        # The neighbour definition ExaBGP had when we last replayed to it: while
        # that stands, ExaBGP itself resends our routes when the session
        # returns, and the replay would only double its work.
        self._replayed: dict[IPAddress, NeighborSpec] = {}

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        bgp = self._config.bgp
        if bgp.hold_time and bgp.keepalive != bgp.hold_time // 3:
            log.warning(
                "bgp.keepalive %ds is not used: ExaBGP sends keepalives every hold_time/3 (%ds)",
                bgp.keepalive,
                bgp.hold_time // 3,
            )
        self._md5_baseline = md5_counters()
        # Watch from the revision the first listing saw, so that a node
        # registering between the listing and the watch is not missed.
        revision = self._store.revision()
        self._refresh_neighbors()
        self._check_synced()  # nothing to wait for without peers
        threads = (
            (self._pump_events, "bgp-events", ()),
            (self._watch_nodes, "bgp-nodes", (revision,)),
        )
        for target, name, args in threads:
            thread = threading.Thread(target=target, name=name, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        gr = self._config.bgp.graceful_restart
        self._loop.call_later(gr.restart_time if gr.enabled else 0.0, self._sync_deadline)
        self._start_speaker()

    def _start_speaker(self) -> None:
        """ExaBGP binds its listening socket to the local addresses once, at
        start: wait until they exist (a container runtime may configure the
        node's interfaces after starting the agent)."""
        wanted = {n.spec.local_address for n in self._neighbors.values()}
        node = self._config.node
        wanted |= {a for a in (node.ipv4, node.ipv6) if a is not None}
        missing = wanted - self._dataplane.local_addresses()
        if missing:
            if not self._waiting_for_addresses:
                log.warning(
                    "waiting for local addresses before starting BGP",
                    extra={"missing": sorted(map(str, missing))},
                )
            self._waiting_for_addresses = True
            self._loop.call_later(ADDRESS_RETRY, self._start_speaker)
            return
        if self._waiting_for_addresses:
            log.info("local addresses present, starting BGP")
        self._waiting_for_addresses = False
        try:
            self._speaker.start()
        except Exception as exc:
            # Readiness says "ExaBGP is not running" meanwhile.
            log.error("starting ExaBGP failed, retrying in %.0fs: %s", SPEAKER_RETRY, exc)
            self._loop.call_later(SPEAKER_RETRY, self._start_speaker)

    # -- sync after start: have the peers resent their routes? ----------------------

    def synced(self) -> bool:
        """True once every peer has sent End-of-RIB since we started, or the
        graceful-restart time has passed: until then the kernel's learned
        routes from before a restart are kept rather than deleted."""
        return self._synced

    def _check_synced(self) -> None:
        if self._synced:
            return
        peers = set(self._neighbors)
        if peers <= self._eor_seen:
            self._mark_synced("every peer sent End-of-RIB")

    def _sync_deadline(self) -> None:
        if not self._synced:
            self._mark_synced("graceful-restart time passed")

    def _mark_synced(self, why: str) -> None:
        self._synced = True
        log.info("bgp routes synced after start", extra={"why": why})
        self._on_synced()

    def stop(self) -> None:
        self._stopping.set()
        self._speaker.stop()
        for thread in self._threads:
            thread.join(timeout=5)

    def reconfigure(self, config: Config) -> None:
        self._config = config
        self._adverts.reconfigure(config)
        current = self._rib.policy
        policy = self._policy(config, current.local_addresses)
        policy = policy.with_local_addresses(current.local_addresses, current.borrowed_addresses)
        self._run_actions(self._rib.set_policy(policy))
        self._refresh_neighbors()

    # -- what we announce --------------------------------------------------------------

    def set_advertisements(
        self, workloads: Sequence[Workload], blocks: Sequence[IPNetwork] = ()
    ) -> None:
        """The full set (start-up, reconcile, blocks mode)."""
        self._local = {a for w in workloads for a in w.addresses}
        if self._config.bgp.advertise == "blocks":
            # A peer's block may cover an address we borrowed from it.
            borrowed = {a for a in self._local if not any(a in b for b in blocks)}
            self._rib.set_local_addresses(self._local - borrowed, borrowed)
        else:
            self._rib.set_local_addresses(self._local)
        self._adverts.set_all(workloads, blocks)
        self._after_local_change()

    def workload_changed(
        self,
        added: Workload | None,
        removed: Workload | None,
        workloads: Callable[[], Sequence[Workload]],
        blocks: Callable[[], Sequence[IPNetwork]],
    ) -> None:
        """One workload came or went: in per-workload mode only its own
        prefixes change, so this stays O(1) in the number of workloads."""
        if self._config.bgp.advertise == "blocks":
            self.set_advertisements(workloads(), blocks())
            return
        gone = set(removed.addresses) if removed else set()
        new = set(added.addresses) if added else set()
        self._local = (self._local - gone) | new
        self._rib.change_local_addresses(new, gone - new)
        self._adverts.workload_changed(added, removed)
        self._after_local_change()

    def _after_local_change(self) -> None:
        self._program_learned()  # local addresses may have re-judged learned routes
        for neighbor in self._neighbors.values():
            neighbor.status.advertised = self._adverts.count(neighbor.status.address.version)

    def _send(self, lines: list[str]) -> None:
        if self._speaker.send(lines):
            self._metrics.bgp_updates_sent.inc(len(lines))
        else:
            # ExaBGP is not connected; SpeakerRestarted will trigger a replay.
            log.debug("speaker not connected, %d lines deferred to replay", len(lines))

    def _peers_of(self, version: int) -> list[IPAddress]:
        now = self._clock()
        return sorted(
            (
                a
                for a, n in self._neighbors.items()
                if a.version == version and n.held_down_until <= now
            ),
            key=int,
        )

    # -- neighbours --------------------------------------------------------------

    def _refresh_neighbors(self) -> None:
        cfg = self._config
        wanted: dict[IPAddress, tuple[NeighborSpec, PeerInfo, str]] = {}
        if cfg.bgp.mesh:
            for record in self._node_records():
                if record.name == cfg.node.name:
                    continue
                for peer_addr, local in (
                    (record.ipv4, cfg.node.ipv4),
                    (record.ipv6, cfg.node.ipv6),
                ):
                    if peer_addr is None or local is None:
                        continue
                    name = f"mesh-{record.name}-v{peer_addr.version}"
                    try:
                        wanted[peer_addr] = self._neighbor(
                            peer_addr, record.asn, local, name, "mesh"
                        )
                    except ValueError as exc:
                        # One bad record must not take the whole mesh down.
                        log.error("ignoring node %s for the mesh: %s", record.name, exc)
        for peer in cfg.bgp.peers:
            local = peer.local_address or (
                cfg.node.ipv4 if peer.address.version == 4 else cfg.node.ipv6
            )
            if local is None:
                log.error("no local address of the family of peer %s", peer.address)
                continue
            wanted[peer.address] = self._neighbor(
                peer.address, peer.asn, local, _peer_name(peer), peer.role, peer
            )
        now = self._clock()
        for address in list(self._neighbors):
            if address not in wanted:
                del self._neighbors[address]
                self._replayed.pop(address, None)
        for address, (spec, info, kind) in wanted.items():
            current = self._neighbors.get(address)
            if current is None:
                status = PeerStatus(address, kind, info.asn, spec.name, since=now)
                status.password = spec.md5_password is not None
                self._neighbors[address] = _Neighbor(spec, info, status)
                # Every configured peer has state series from the start, so
                # "not Established" alerts also catch peers never reached.
                self._set_state(self._neighbors[address], "Idle", "", now)
            else:
                current.spec, current.info = spec, info
        self._run_actions(self._rib.set_peers([n.info for n in self._neighbors.values()]))
        active = [n.spec for n in self._neighbors.values() if n.held_down_until <= now]
        if self._speaker.set_neighbors(active):
            log.info(
                "bgp neighbours changed", extra={"neighbors": [str(s.peer_address) for s in active]}
            )
        self._program_learned()

    def _neighbor(
        self,
        address: IPAddress,
        asn: int,
        local: IPAddress,
        name: str,
        kind: str,
        peer: PeerConfig | None = None,
    ) -> tuple[NeighborSpec, PeerInfo, str]:
        bgp = self._config.bgp
        gr_enabled = bgp.graceful_restart.enabled
        if peer is not None and peer.graceful_restart is not None:
            gr_enabled = peer.graceful_restart
        gr = bgp.graceful_restart.restart_time if gr_enabled else None
        spec = NeighborSpec(
            peer_address=address,
            peer_as=asn,
            local_address=local,
            name=name,
            local_as=self._config.node.asn,
            router_id=self._config.node.router_id,
            families=("ipv4",) if address.version == 4 else ("ipv6",),
            hold_time=(peer.hold_time if peer and peer.hold_time is not None else bgp.hold_time),
            passive=bool(peer and peer.passive),
            md5_password=peer.password if peer else None,
            multihop_ttl=peer.multihop if peer else None,
            graceful_restart=gr,
        )
        info = PeerInfo(
            address=address,
            kind=kind,  # type: ignore[arg-type]
            asn=asn,
            local_asn=self._config.node.asn,
            graceful_restart_time=float(gr) if gr else None,
        )
        return spec, info, kind

    def _node_records(self) -> list[NodeRecord]:
        records = []
        for kv in self._store.list(f"{self._config.datastore.prefix}/nodes/"):
            try:
                records.append(NodeRecord.from_dict(json.loads(kv.value)))
            except (ValueError, KeyError, AssertionError, TypeError) as exc:
                log.warning("ignoring bad node record %s: %s", kv.key, exc)
        return records

    def _watch_nodes(self, revision: int) -> None:
        """Mesh membership follows the datastore's node records."""
        prefix = f"{self._config.datastore.prefix}/nodes/"
        while not self._stopping.is_set():
            try:
                revision, events = self._store.watch(prefix, revision, WATCH_TIMEOUT)
                changed = bool(events)
            except WatchCompacted:
                # History is gone: relist everything, which refresh does.
                revision, changed = self._store.revision(), True
            except Exception as exc:
                # Never die silently: mesh membership would freeze.
                log.warning("node watch failed, retrying: %s", exc)
                self._stopping.wait(WATCH_TIMEOUT)
                continue
            if changed and self._config.bgp.mesh:
                self._loop.submit(self._refresh_neighbors)

    # -- events from ExaBGP ------------------------------------------------------------

    def _pump_events(self) -> None:
        """Hands ExaBGP's events to the loop in batches; never blocks on anything
        but the speaker's queue, so ExaBGP's output is always drained."""
        while not self._stopping.is_set():
            events = self._speaker.events(timeout=0.5)
            if events:
                self._loop.submit(functools.partial(self.handle_events, events))

    def handle_events(self, events: Sequence[BgpEvent]) -> None:
        now = self._clock()
        for event in events:
            if isinstance(event, SpeakerRestarted):
                if event.generation > 1:
                    self._metrics.exabgp_restarts.inc()
                # Every session died with the old process, and with it
                # everything we announced; each replay happens when its
                # session comes up again.
                self._replayed.clear()
                for each in self._neighbors.values():
                    self._set_state(each, "Active", "speaker restarted", now)
            elif isinstance(event, PeerStateEvent):
                self._on_peer_state(event, now)
            elif isinstance(event, NotificationEvent):
                peer = self._neighbors.get(event.peer)
                if peer is not None:
                    peer.status.info = f"notification {event.direction}: {event.message}"
            elif isinstance(event, UpdateEvent):
                self._metrics.bgp_updates_received.labels(str(event.peer)).inc()
            elif isinstance(event, EndOfRibEvent):
                self._eor_seen.add(event.peer)
            self._run_actions(self._rib.apply(event, now))
        self._program_learned()
        self._schedule_expiry()
        self._check_synced()

    def _run_actions(self, actions: Sequence[TearDown]) -> None:
        now = self._clock()
        for action in actions:
            if isinstance(action, TearDown):
                self._tear_down(action, now)

    def _on_peer_state(self, event: PeerStateEvent, now: float) -> None:
        neighbor = self._neighbors.get(event.peer)
        if neighbor is None:
            return
        if neighbor.held_down_until > now:
            return  # we took it down; keep saying why
        if event.state is PeerState.UP:
            self._set_state(neighbor, "Established", "", now)
            if self._replayed.get(event.peer) == neighbor.spec:
                self._send([api.eor([event.peer], event.peer.version)])
            else:
                self._adverts.replay([event.peer])
                self._replayed[event.peer] = neighbor.spec
        elif event.state is PeerState.CONNECTED:
            self._set_state(neighbor, "OpenSent", "", now)
        else:
            was_up = neighbor.status.state == "Established"
            self._set_state(neighbor, "Active", event.reason or "session down", now)
            if was_up:
                neighbor.status.flaps += 1
                self._metrics.bgp_session_flaps.labels(str(event.peer)).inc()

    def _set_state(self, neighbor: _Neighbor, state: str, info: str, now: float) -> None:
        status = neighbor.status
        if status.state != state:
            status.since = now
            status.state = state
        if info or state == "Established":
            status.info = info
        self._peer_metrics.state(str(status.address), state)

    def _tear_down(self, action: TearDown, now: float) -> None:
        neighbor = self._neighbors.get(action.peer)
        if neighbor is None:
            return
        log.warning(
            "tearing down bgp session", extra={"peer": str(action.peer), "reason": action.reason}
        )
        self._metrics.bgp_max_prefix_teardowns.labels(str(action.peer)).inc()
        neighbor.held_down_until = now + TEARDOWN_HOLD_DOWN
        self._replayed.pop(action.peer, None)
        self._set_state(
            neighbor, "Idle", f"{action.reason}; held down {TEARDOWN_HOLD_DOWN:.0f}s", now
        )
        # ExaBGP has no API to disable one neighbour: leave it out of the
        # config until the hold-down ends, then let it back in.
        self._speaker.set_neighbors(
            n.spec for n in self._neighbors.values() if n.held_down_until <= now
        )
        self._loop.call_later(TEARDOWN_HOLD_DOWN, lambda: self._release(action.peer))

    def _release(self, peer: IPAddress) -> None:
        neighbor = self._neighbors.get(peer)
        if neighbor is None:
            return
        neighbor.held_down_until = 0.0
        self._rib.reset_peer(peer)
        self._refresh_neighbors()

    def _schedule_expiry(self) -> None:
        deadline = self._rib.next_deadline()
        if deadline is None or self._expire_scheduled:
            return
        self._expire_scheduled = True

        def expire() -> None:
            self._expire_scheduled = False
            self._rib.expire(self._clock())
            self._program_learned()
            self._schedule_expiry()

        self._loop.call_later(max(0.0, deadline - self._clock()), expire)

    # -- learned routes -> kernel -----------------------------------------------------------

    def _program_learned(self) -> None:
        changes = self._rib.take_changes()
        if not changes:
            return
        # A local workload's host route owns its prefix: a learned path for it
        # coming or going (rejected once the workload is local) must not
        # replace or delete the local route.
        replace = [r for r in changes.replace if not self._is_local(r.prefix)]
        delete = [p for p in changes.delete if not self._is_local(p)]
        if not replace and not delete:
            return
        started = self._clock()
        failures = self._dataplane.program(replace, delete)
        self._metrics.program_batch_seconds.observe(self._clock() - started)
        for failure in failures:
            log.warning(
                "programming learned route failed",
                extra={"prefix": str(failure.route_prefix), "error": failure.message},
            )
        if failures:
            # The next reconcile pass retries them: learned routes are part
            # of its desired state.
            self._metrics.reconcile_errors.inc(len(failures))

    def _is_local(self, prefix: IPNetwork) -> bool:
        return prefix.prefixlen == prefix.max_prefixlen and prefix.network_address in self._local

    def is_peer(self, address: IPAddress) -> bool:
        return address in self._neighbors

    def learned_routes(self) -> dict[IPNetwork, Route]:
        return self._rib.best_routes()

    # -- views for the CLI and metrics ---------------------------------------------------------

    def peer_table(self) -> list[dict[str, Any]]:
        now = self._clock()
        stats = self._rib.stats()
        md5 = {k: v - self._md5_baseline.get(k, 0) for k, v in md5_counters().items()}
        return [
            peer_row(self._neighbors[a].status, stats.get(a), md5, now)
            for a in sorted(self._neighbors, key=lambda a: (a.version, int(a)))
        ]

    def export_metrics(self) -> None:
        """Per-peer gauges from the current state (called on the loop)."""
        offset = self._wall() - self._clock()
        changed_at = {str(a): n.status.since + offset for a, n in self._neighbors.items()}
        self._peer_metrics.export(self.peer_table(), changed_at)

    def advertised(self) -> list[dict[str, str]]:
        return self._adverts.listing()

    def received(self, peer: str | None = None) -> list[dict[str, object]]:
        address = ipaddress.ip_address(peer) if peer else None
        return [r.to_dict() for r in self._rib.received(address)]

    def all_established(self) -> bool:
        return all(n.status.state == "Established" for n in self._neighbors.values())

    def any_established(self) -> bool:
        return any(n.status.state == "Established" for n in self._neighbors.values())

    @property
    def neighbor_count(self) -> int:
        return len(self._neighbors)

    @property
    def speaker_pid(self) -> int | None:
        return self._speaker.pid

    @staticmethod
    def _policy(config: Config, local: Iterable[IPAddress]) -> ImportPolicy:
        imp = config.bgp.import_policy
        node = config.node
        return ImportPolicy(
            allow_default=imp.allow_default,
            allow_outside_pools=imp.allow_outside_pools,
            allowed_prefixes=imp.allowed_prefixes,
            max_prefixes=imp.max_prefixes,
            pools=tuple(p.cidr for p in config.pools),
            local_addresses=frozenset(local),
            node_addresses=tuple(a for a in (node.ipv4, node.ipv6) if a is not None),
        )


def _peer_name(peer: PeerConfig) -> str:
    return peer.name.replace(":", "-").replace(".", "-")
