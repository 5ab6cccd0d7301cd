"""What BGP sessions do to the RIB's stored paths: speaker events (updates,
session up/down, End-of-RIB, notifications), graceful restart (RFC 4724:
keep a restarting peer's routes as stale, sweep them on End-of-RIB or when
the restart time runs out), long-lived stale routes (RFC 9494 applied
locally: when the restart time runs out, keep them longer but least
preferred) and the max-prefix limit (tear the session down).

Pure logic on a PathStore; the import policy is passed in by the Rib, which
owns it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from l3fabric.bgp.events import (
    BgpEvent,
    EndOfRibEvent,
    NotificationEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib_paths import PathStore, PeerPaths, StoredPath
from l3fabric.bgp.rib_types import Action, TearDown
from l3fabric.model import IPAddress

HOLD_TIMER_EXPIRED = 4  # NOTIFICATION error code (RFC 4271 4.5)


class PeerSessions:
    def __init__(self, store: PathStore) -> None:
        self._store = store
        self._ignored: Counter[str] = Counter()

    # ----- configuration ---------------------------------------------------

    def configure(self, peers: Sequence[PeerInfo], policy: ImportPolicy) -> list[Action]:
        """Make `peers` the configured set. A removed peer's routes go at once;
        a changed peer's routes are judged again."""
        wanted: dict[IPAddress, PeerInfo] = {}
        for info in peers:
            if info.address in wanted:
                raise ValueError(f"peer {info.address} is configured twice")
            wanted[info.address] = info
        for address in [a for a in self._store.addresses() if a not in wanted]:
            self._store.remove_peer(address)
        actions: list[Action] = []
        for info in wanted.values():
            peer = self._store.peer(info.address)
            if peer is None:
                self._store.add_peer(info)
                continue
            old, peer.info = peer.info, info
            if (old.kind, old.asn, old.local_asn) != (info.kind, info.asn, info.local_asn):
                # kind and ASNs feed both the policy (as-loop) and selection.
                self._store.rejudge(policy, peer, list(peer.routes), force_dirty=True)
            if info.graceful_restart_time is None and peer.stale:
                self._sweep_stale(peer, None)
            elif not info.long_lived_stale_time and peer.long_lived:
                self._sweep_long_lived(peer, None)
            actions.extend(self.enforce_limit(peer, policy))
        return actions

    def reset_peer(self, address: IPAddress) -> None:
        """Allow a torn-down peer again (the agent re-enables its session)."""
        peer = self._store.require_peer(address)
        if peer.state == "torn-down":
            peer.state = "down"

    # ----- events ------------------------------------------------------------

    def apply(self, event: BgpEvent, now: float, policy: ImportPolicy) -> list[Action]:
        if isinstance(event, SpeakerRestarted):
            for each in self._store.peers():
                self._session_down(each, now, "speaker restarted")
            return []
        peer = self._store.peer(event.peer)
        if peer is None:
            self._ignored["unknown-peer"] += 1
            return []
        if isinstance(event, UpdateEvent):
            if peer.state == "torn-down":
                self._ignored["torn-down"] += 1
                return []
            return self._update(peer, event, now, policy)
        if isinstance(event, PeerStateEvent):
            if event.state is PeerState.UP:
                self._session_up(peer, now)
            elif event.state is PeerState.DOWN:
                self._session_down(peer, now, event.reason or "session down")
            return []
        if isinstance(event, EndOfRibEvent):
            if event.afi not in (4, 6):
                raise ValueError(
                    f"End-of-RIB from {event.peer}: afi must be 4 or 6, got {event.afi}"
                )
            self._sweep_stale(peer, event.afi)
            return []
        if isinstance(event, NotificationEvent):
            # The session-down event that follows carries the state change;
            # keep the text so the peer table can say why, and remember that
            # this session ends with a NOTIFICATION.
            peer.last_down_reason = f"notification {event.direction}: {event.message}"
            if event.direction == "sent" and event.code == HOLD_TIMER_EXPIRED:
                # Not a goodbye: the peer went silent and we gave up on it.
                peer.went_silent = True
            else:
                peer.notified = True
            return []
        raise TypeError(f"not a BGP event: {event!r}")

    def expire(self, now: float) -> None:
        """The restart time of peers whose time ran out is over: their stale
        routes are swept, or become long-lived stale; then long-lived stale
        routes whose time ran out are swept. In that order, so a late call
        does both to a route whose two times both ran out."""
        for peer in self._store.peers():
            if peer.gr_deadline is not None and now >= peer.gr_deadline:
                self._restart_time_over(peer)
            deadline = self._long_lived_deadline(peer)
            if deadline is not None and now >= deadline:
                self._sweep_long_lived(peer, now)

    def next_deadline(self) -> float | None:
        """When expire() next has work to do, or None."""
        deadlines = []
        for peer in self._store.peers():
            if peer.gr_deadline is not None:
                deadlines.append(peer.gr_deadline)
            long_lived = self._long_lived_deadline(peer)
            if long_lived is not None:
                deadlines.append(long_lived)
        return min(deadlines, default=None)

    def ignored_events(self) -> dict[str, int]:
        """Events that were dropped: from unconfigured peers, or updates from a
        torn-down peer that arrived before the agent disabled its session."""
        return dict(self._ignored)

    def _update(
        self, peer: PeerPaths, event: UpdateEvent, now: float, policy: ImportPolicy
    ) -> list[Action]:
        if peer.state != "up":
            # Updates only flow on an established session; a missed "up" is implied.
            self._session_up(peer, now)
        # In an UPDATE message withdrawals come first, so a prefix that is both
        # withdrawn and announced ends up announced.
        for prefix in event.withdrawn:
            peer.withdrawals += 1
            self._store.put(peer, prefix, None)
        limit = self.limit(peer, policy)
        # The prefixes of one UPDATE share one attributes object: the checks
        # on the attributes, and the stored path itself, are made once per
        # attributes and family rather than once per prefix.
        judged: dict[tuple[int, int], tuple[PathAttributes, str | None, StoredPath]] = {}
        for prefix, attrs in event.announced:
            peer.announcements += 1
            if prefix not in peer.routes and len(peer.routes) >= limit:
                return [self._tear_down(peer, limit)]
            key = (id(attrs), prefix.version)
            seen = judged.get(key)
            if seen is None:
                verdict = policy.judge_attributes(attrs, prefix.version, peer.info)
                # attrs is kept in the entry so its id cannot be reused.
                seen = judged[key] = (attrs, verdict, StoredPath(attrs, verdict))
            reason = policy.judge_prefix(prefix)
            path = seen[2] if reason is None else StoredPath(attrs, reason)
            self._store.put(peer, prefix, path)
        return []

    # ----- session state and graceful restart --------------------------------

    def _session_up(self, peer: PeerPaths, now: float) -> None:
        if peer.state in ("up", "torn-down"):
            return
        peer.state = "up"
        peer.since = now
        peer.notified = peer.went_silent = False

    def _session_down(self, peer: PeerPaths, now: float, reason: str) -> None:
        if peer.state != "up":
            return
        peer.state = "down"
        peer.since = now
        peer.last_down_reason = reason
        restart_time = peer.info.graceful_restart_time
        notified, peer.notified = peer.notified, False
        went_silent, peer.went_silent = peer.went_silent, False
        if went_silent and not peer.info.long_lived_stale_time:
            notified = True
        if restart_time is None or notified:
            # RFC 4724: routes are kept as stale only when the session ended
            # without a NOTIFICATION (a restarting peer just drops TCP). A
            # Cease (administrative shutdown, `birdc disable`) or any other
            # NOTIFICATION is a goodbye: its routes go now, not after the
            # restart time. ExaBGP negotiates no RFC 8538 N-bit, so no
            # NOTIFICATION keeps them, except where the operator asked for
            # long-lived stale routes: then our own Hold Timer Expired (a
            # peer whose host died or was cut off says nothing) is treated
            # like a dropped connection, as RFC 8538 does.
            self._store.drop_all(peer)
            peer.gr_deadline = None
            return
        # RFC 4724 4.2: routes still stale from an earlier restart are deleted
        # (consecutive restarts); everything else is kept, marked stale.
        # Long-lived stale routes stay as they are, with their time: a flap
        # must not make a route the peer never sent again live longer.
        for prefix, path in list(peer.routes.items()):
            if path.long_lived_since is not None:
                continue
            if path.stale:
                self._store.put(peer, prefix, None)
            else:
                self._store.put(peer, prefix, StoredPath(path.attrs, path.reason, stale=True))
        peer.gr_deadline = now + restart_time if peer.stale > peer.long_lived else None

    def _restart_time_over(self, peer: PeerPaths) -> None:
        """The restart time ran out (the peer is back or not): without a
        long-lived stale time its stale routes go; with one they become
        long-lived stale from the moment the restart time ended."""
        since = peer.gr_deadline
        peer.gr_deadline = None
        if not peer.info.long_lived_stale_time or since is None:
            self._sweep_stale(peer, None)
            return
        for prefix, path in list(peer.routes.items()):
            if path.stale and path.long_lived_since is None:
                self._store.put(peer, prefix, replace(path, long_lived_since=since))
        first = peer.long_lived_first
        peer.long_lived_first = since if first is None else min(first, since)

    @staticmethod
    def _long_lived_deadline(peer: PeerPaths) -> float | None:
        llst = peer.info.long_lived_stale_time
        if not peer.long_lived or not llst or peer.long_lived_first is None:
            return None
        return peer.long_lived_first + llst

    def _sweep_long_lived(self, peer: PeerPaths, now: float | None) -> None:
        """Sweep the long-lived stale routes whose time ran out at `now`
        (all of them when None)."""
        llst = peer.info.long_lived_stale_time or 0
        for prefix, path in list(peer.routes.items()):
            since = path.long_lived_since
            if since is not None and (now is None or now >= since + llst):
                self._store.put(peer, prefix, None)
        self._find_long_lived_first(peer)

    @staticmethod
    def _find_long_lived_first(peer: PeerPaths) -> None:
        if not peer.long_lived:
            peer.long_lived_first = None
            return
        peer.long_lived_first = min(
            p.long_lived_since for p in peer.routes.values() if p.long_lived_since is not None
        )

    def _sweep_stale(self, peer: PeerPaths, version: int | None) -> None:
        """End-of-RIB for `version` (every family when None): whatever is still
        stale, long-lived or not, was not sent again and goes."""
        if peer.stale:
            for prefix, path in list(peer.routes.items()):
                if path.stale and (version is None or prefix.version == version):
                    self._store.put(peer, prefix, None)
        if peer.stale == peer.long_lived:
            peer.gr_deadline = None
        self._find_long_lived_first(peer)

    # ----- max-prefix ----------------------------------------------------------

    @staticmethod
    def limit(peer: PeerPaths, policy: ImportPolicy) -> int:
        own = peer.info.max_prefixes
        return own if own is not None else policy.max_prefixes

    def enforce_limit(self, peer: PeerPaths, policy: ImportPolicy) -> list[Action]:
        limit = self.limit(peer, policy)
        if len(peer.routes) > limit and peer.state != "torn-down":
            return [self._tear_down(peer, limit)]
        return []

    def _tear_down(self, peer: PeerPaths, limit: int) -> TearDown:
        self._store.drop_all(peer)
        peer.state = "torn-down"
        peer.teardowns += 1
        reason = f"max-prefix {limit} exceeded"
        peer.last_down_reason = reason
        return TearDown(peer.info.address, reason)
