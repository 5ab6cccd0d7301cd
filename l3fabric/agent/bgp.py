"""The agent's BGP side: ExaBGP's neighbours, our announcements, the RIB-in.

ExaBGP is the speaker; this service owns everything ExaBGP forgets:
- the neighbour set (agent/neighbors.py computes it from the config and, in
  full mesh, the datastore's node records), rendered into ExaBGP's config;
- the advertisements, replayed to a peer whenever its session comes up and to
  everyone after ExaBGP restarts, followed by our own End-of-RIB (ExaBGP runs
  with manual-eor, so a peer never sweeps our routes before the replay);
- the RIB-in: events from ExaBGP go through the import policy and best-path
  selection, and the changes go to the route table, the kernel's one writer.

All methods except the two reader threads run on the agent's work loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from l3fabric.agent.advertise import Advertisements
from l3fabric.agent.learned import LearnedRoutes
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.neighbors import (
    DesiredNeighbor,
    NeighborPlan,
    decode_node_records,
    desired_neighbors,
)
from l3fabric.agent.node_watch import PrefixWatcher
from l3fabric.agent.peers import PeerMetrics
from l3fabric.agent.routetable import RouteTable
from l3fabric.agent.sessions import Sessions
from l3fabric.agent.startup_sync import StartupSync
from l3fabric.bgp import api
from l3fabric.bgp.events import (
    BgpEvent,
    EndOfRibEvent,
    NegotiatedEvent,
    NotificationEvent,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.exabgp_config import NeighborSpec
from l3fabric.bgp.rib_types import TearDown
from l3fabric.config import Config, GracefulRestartConfig
from l3fabric.dataplane.netstat import md5_counters
from l3fabric.datastore.base import Datastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.model import IPAddress, IPNetwork, NodeRecord, Workload

log = logging.getLogger(__name__)

# A peer torn down for exceeding max-prefix stays down this long.
TEARDOWN_HOLD_DOWN = 60.0
# How often to look again for the node's addresses before starting ExaBGP.
ADDRESS_RETRY = 1.0
# How long to wait before trying again to start an ExaBGP that failed to start.
SPEAKER_RETRY = 10.0
# The l3fabric_bgp_prefixes direction that counts long-lived stale routes.
LONG_LIVED_STALE = "long_lived_stale"


def with_long_lived_stale(
    neighbors: Mapping[IPAddress, DesiredNeighbor], gr: GracefulRestartConfig
) -> dict[IPAddress, DesiredNeighbor]:
    """Each neighbour's RIB view with bgp.graceful_restart.long_lived_stale_time.
    It extends graceful restart, so a peer without it (bgp.graceful_restart
    .enabled false, or its own graceful_restart false) has none either."""
    seconds = gr.long_lived_stale_time
    if not seconds:
        return dict(neighbors)
    return {
        address: dataclasses.replace(
            desired, info=dataclasses.replace(desired.info, long_lived_stale_time=seconds)
        )
        if desired.info.graceful_restart_time is not None
        else desired
        for address, desired in neighbors.items()
    }


class Speaker(Protocol):
    """What the service needs of ExaBGP (ExabgpSpeaker; fakes in unit tests)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool: ...
    def send(self, lines: Sequence[str]) -> bool: ...
    def events(self, timeout: float = 0.0) -> list[BgpEvent]: ...
    @property
    def pid(self) -> int | None: ...


class SpeakerStart:
    """Starts ExaBGP once the node's addresses exist, retrying until it runs.

    ExaBGP binds its listening socket to the local addresses once, at start:
    a container runtime may configure the node's interfaces after starting
    the agent."""

    def __init__(
        self,
        speaker: Speaker,
        loop: WorkLoop,
        *,
        wanted: Callable[[], set[IPAddress]],
        present: Callable[[], set[IPAddress]],
    ) -> None:
        self._speaker = speaker
        self._loop = loop
        self._wanted = wanted
        self._present = present
        self._waiting = False

    def attempt(self) -> None:
        missing = self._wanted() - self._present()
        if missing:
            if not self._waiting:
                log.warning(
                    "waiting for local addresses before starting BGP",
                    extra={"missing": sorted(map(str, missing))},
                )
            self._waiting = True
            self._loop.call_later(ADDRESS_RETRY, self.attempt)
            return
        if self._waiting:
            log.info("local addresses present, starting BGP")
        self._waiting = False
        try:
            self._speaker.start()
        except Exception as exc:
            # Readiness says "ExaBGP is not running" meanwhile.
            log.error(
                "starting ExaBGP failed, retrying",
                extra={"retry_seconds": SPEAKER_RETRY, "error": str(exc)},
            )
            self._loop.call_later(SPEAKER_RETRY, self.attempt)


class BgpService:
    def __init__(
        self,
        config: Config,
        *,
        speaker: Speaker,
        store: Datastore,
        route_table: RouteTable,
        local_addresses: Callable[[], set[IPAddress]],
        loop: WorkLoop,
        metrics: Metrics,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config
        self._speaker = speaker
        self._store = store
        self._keys = KeyLayout(config.datastore.prefix)
        self._local_addresses = local_addresses
        self._loop = loop
        self._metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        self._learned = LearnedRoutes(
            config,
            route_table=route_table,
            loop=loop,
            metrics=metrics,
            clock=clock,
            on_teardown=lambda action: self._tear_down(action, self._clock()),
        )
        self._peer_metrics = PeerMetrics(metrics)
        self._sessions = Sessions(
            self._peer_metrics,
            on_flap=lambda peer: metrics.bgp_session_flaps.labels(peer).inc(),
        )
        self._adverts = Advertisements(config, send=self._send, peers_of=self._peers_of)
        self._sync = StartupSync(on_synced)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._md5_baseline: dict[str, int] = {}
        self._long_lived_series: set[str] = set()  # peers with a long-lived stale series

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._md5_baseline = md5_counters()
        # Watch from the revision the first listing saw, so that a node
        # registering between the listing and the watch is not missed.
        revision = self._store.revision()
        self.refresh_neighbors()
        self._sync.check(self._sessions.addresses())  # nothing to wait for without peers
        watcher = PrefixWatcher(
            self._store,
            self._keys.nodes,
            on_change=lambda: self._loop.submit(self._on_nodes_changed),
            stopping=self._stopping,
        )
        for target, name, args in (
            (self._pump_events, "bgp-events", ()),
            (watcher.run, "bgp-nodes", (revision,)),
        ):
            thread = threading.Thread(target=target, name=name, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        gr = self._config.bgp.graceful_restart
        self._loop.call_later(gr.restart_time if gr.enabled else 0.0, self._sync.deadline_passed)
        node = self._config.node
        SpeakerStart(
            self._speaker,
            self._loop,
            wanted=lambda: (
                {s.local_address for s in self._sessions.active_specs(self._clock())}
                | {a for a in (node.ipv4, node.ipv6) if a is not None}
            ),
            present=self._local_addresses,
        ).attempt()

    def stop(self) -> None:
        self._stopping.set()
        self._speaker.stop()
        for thread in self._threads:
            thread.join(timeout=5)

    def synced(self) -> bool:
        """Every peer has resent its routes since start (or the GR time passed)."""
        return self._sync.synced

    def check_config(self, config: Config) -> None:
        """Raise ValueError if the BGP side could not run `config`; changes nothing."""
        plan = desired_neighbors(config, self._node_records())
        with_long_lived_stale(plan.neighbors, config.bgp.graceful_restart)
        self._learned.check_config(config)

    def reconfigure(self, config: Config) -> None:
        """Take a new config; check_config() has accepted it."""
        self._config = config
        self._adverts.reconfigure(config)
        self._learned.reconfigure(config)
        self.refresh_neighbors()

    # -- what we announce --------------------------------------------------------------

    def set_on_link(self, networks: frozenset[IPNetwork] | None) -> None:
        """Where next hops may be (the dataplane reads it every pass)."""
        self._learned.set_on_link(networks)

    def set_advertisements(
        self, workloads: Sequence[Workload], blocks: Sequence[IPNetwork] = ()
    ) -> None:
        """The full set (start-up, reconcile, blocks mode)."""
        local = {a for w in workloads for a in w.addresses}
        if self._config.bgp.advertise == "blocks":
            # A peer's block may cover an address we borrowed from it.
            borrowed = {a for a in local if not any(a in b for b in blocks)}
            self._learned.set_local_addresses(local - borrowed, borrowed)
        else:
            self._learned.set_local_addresses(local)
        self._adverts.set_all(workloads, blocks)
        self._sessions.set_advertised(self._adverts.count)

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
        # Local addresses may re-judge learned routes (a peer's path for an
        # address that is now local is rejected).
        self._learned.change_local_addresses(new, gone - new)
        self._adverts.workload_changed(added, removed)
        self._sessions.set_advertised(self._adverts.count)

    def _send(self, lines: list[str]) -> None:
        if self._speaker.send(lines):
            self._metrics.bgp_updates_sent.inc(len(lines))
        else:
            # ExaBGP is not connected; SpeakerRestarted will trigger a replay.
            log.debug(
                "speaker not connected, lines deferred to replay", extra={"lines": len(lines)}
            )

    def _peers_of(self, version: int) -> list[IPAddress]:
        return self._sessions.peers_of(version, self._clock())

    # -- neighbours --------------------------------------------------------------

    def _on_nodes_changed(self) -> None:
        if self._config.bgp.mesh:
            self.refresh_neighbors()

    def refresh_neighbors(self) -> None:
        plan: NeighborPlan = desired_neighbors(self._config, self._node_records())
        for problem in plan.problems:
            log.error("bgp neighbour left out", extra={"problem": problem})
        now = self._clock()
        neighbors = with_long_lived_stale(plan.neighbors, self._config.bgp.graceful_restart)
        self._sessions.update(neighbors, now)
        self._learned.set_peers(self._sessions.infos())
        active = self._sessions.active_specs(now)
        if self._speaker.set_neighbors(active):
            log.info(
                "bgp neighbours changed", extra={"neighbors": [str(s.peer_address) for s in active]}
            )

    def _node_records(self) -> list[NodeRecord]:
        records, problems = decode_node_records(self._store.list(self._keys.nodes))
        for problem in problems:
            log.warning("bad node record", extra={"problem": problem})
        return records

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
                self._sessions.speaker_restarted(now)
            elif isinstance(event, PeerStateEvent):
                self._on_peer_state(event, now)
            elif isinstance(event, NotificationEvent):
                text = f"notification {event.direction}: {event.message}"
                self._sessions.notification(event.peer, text)
            elif isinstance(event, UpdateEvent):
                self._metrics.bgp_updates_received.labels(str(event.peer)).inc()
            elif isinstance(event, EndOfRibEvent):
                self._sync.end_of_rib(event.peer)
            elif isinstance(event, NegotiatedEvent):
                self._sessions.session_negotiated(event, now)
                continue  # nothing in it for the RIB
            self._learned.apply(event, now)
        self._learned.settle()
        self._sync.check(self._sessions.addresses())

    def _on_peer_state(self, event: PeerStateEvent, now: float) -> None:
        if event.state is PeerState.UP:
            replay = self._sessions.session_up(event.peer, now)
            if replay is True:
                self._adverts.replay([event.peer])
            elif replay is False:
                self._send([api.eor([event.peer], event.peer.version)])
        elif event.state is PeerState.CONNECTED:
            self._sessions.session_connected(event.peer, now)
        else:
            damp_for = self._sessions.session_down(event.peer, event.reason, now)
            if damp_for is not None:
                self._metrics.bgp_session_dampings.labels(str(event.peer)).inc()
                self._hold_down(event.peer, damp_for, "flapping", now)

    def _tear_down(self, action: TearDown, now: float) -> None:
        if self._hold_down(action.peer, TEARDOWN_HOLD_DOWN, action.reason, now):
            self._metrics.bgp_max_prefix_teardowns.labels(str(action.peer)).inc()

    def _hold_down(self, peer: IPAddress, seconds: float, why: str, now: float) -> bool:
        reason = f"{why}; held down {seconds:.0f}s"
        if not self._sessions.hold_down(peer, now + seconds, reason, now):
            return False
        log.warning("holding bgp session down", extra={"peer": str(peer), "reason": reason})
        # ExaBGP has no API to disable one neighbour: leave it out of the
        # config until the hold-down ends, then let it back in.
        self._speaker.set_neighbors(self._sessions.active_specs(now))
        self._loop.call_later(seconds, lambda: self._release(peer))
        return True

    def _release(self, peer: IPAddress) -> None:
        if self._sessions.release(peer):
            self._learned.reset_peer(peer)
            self.refresh_neighbors()

    # -- views for the CLI, metrics and readiness ------------------------------------------

    def is_peer(self, address: IPAddress) -> bool:
        return address in self._sessions

    def peer_table(self) -> list[dict[str, object]]:
        md5 = {k: v - self._md5_baseline.get(k, 0) for k, v in md5_counters().items()}
        return self._sessions.table(self._learned.stats(), md5, self._clock())

    def peer_detail(self, address: IPAddress) -> dict[str, Any] | None:
        """`status --peer`: None when `address` is not a neighbour."""
        md5 = {k: v - self._md5_baseline.get(k, 0) for k, v in md5_counters().items()}
        stats = self._learned.stats().get(address)
        return self._sessions.detail(address, stats, md5, self._clock())

    def advertised_to(self, address: IPAddress) -> list[dict[str, str]] | None:
        """What we send `address` now: the advertised routes of its family
        while its session is Established (every peer of a family gets the
        same set); none otherwise. None when it is not a neighbour."""
        sending = self._sessions.sending_to(address, self._clock())
        if sending is None:
            return None
        if not sending:
            return []
        return [
            r
            for r in self._adverts.listing()
            if ipaddress.ip_network(r["prefix"]).version == address.version
        ]

    def export_metrics(self) -> None:
        """Per-peer gauges from the current state (called on the loop)."""
        changed_at = self._sessions.changed_at(self._wall() - self._clock())
        self._peer_metrics.export(self.peer_table(), changed_at)
        self._export_long_lived_stale()

    def _export_long_lived_stale(self) -> None:
        """l3fabric_bgp_prefixes{direction="long_lived_stale"} per peer; a peer
        that is gone stops having the series."""
        gauge = self._metrics.bgp_prefixes
        stats = self._learned.stats()
        seen = {str(a) for a in self._sessions.addresses()}
        for address in self._sessions.addresses():
            peer = stats.get(address)
            gauge.labels(str(address), LONG_LIVED_STALE).set(peer.long_lived_stale if peer else 0)
        for gone in self._long_lived_series - seen:
            with contextlib.suppress(KeyError):
                gauge.remove(gone, LONG_LIVED_STALE)
        self._long_lived_series = seen

    def advertised(self) -> list[dict[str, str]]:
        return self._adverts.listing()

    def received(self, peer: str | None = None) -> list[dict[str, object]]:
        address = ipaddress.ip_address(peer) if peer else None
        return [r.to_dict() for r in self._learned.received(address)]

    def all_established(self) -> bool:
        return self._sessions.all_established()

    def any_established(self) -> bool:
        return self._sessions.any_established()

    @property
    def neighbor_count(self) -> int:
        return len(self._sessions)

    @property
    def speaker_pid(self) -> int | None:
        return self._speaker.pid
