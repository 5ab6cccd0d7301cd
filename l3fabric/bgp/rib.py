"""The RIB: routes learned from BGP peers, their import verdicts, best path
and ECMP, and the incremental changes the agent programs into the kernel.

Pure logic: no I/O, no threads, no clock reads (callers pass `now`). The
agent feeds speaker events in with apply(), executes the actions it returns
(TearDown), calls expire() when next_deadline() passes, and programs what
take_changes() reports. docs/routing-policy.md describes the rules.

Cost: an update touches only the prefixes it names; best paths are recomputed
lazily, once per changed prefix, when routes or changes are read.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
from l3fabric.bgp.policy import REJECT_REASONS, ImportPolicy, PeerInfo
from l3fabric.bgp.rib_types import (
    Action,
    PeerStats,
    ReceivedRoute,
    RouteChanges,
    SessionState,
    TearDown,
)
from l3fabric.model import IPAddress, IPNetwork, NextHop, Route, RouteKind

# Re-exported: callers import the RIB's values from here.
__all__ = [
    "DEFAULT_ECMP_MAX",
    "DEFAULT_LOCAL_PREF",
    "Action",
    "PeerStats",
    "ReceivedRoute",
    "Rib",
    "RouteChanges",
    "SessionState",
    "TearDown",
]

DEFAULT_LOCAL_PREF = 100
DEFAULT_ECMP_MAX = 16
_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}
_UNKNOWN_ORIGIN_RANK = 3  # worse than incomplete: never preferred over a known origin


@dataclass(frozen=True)
class _Path:
    attrs: PathAttributes
    reason: str | None
    stale: bool = False


def _usable(path: _Path | None) -> PathAttributes | None:
    """What best-path selection sees of a stored path (staleness does not count)."""
    return path.attrs if path is not None and path.reason is None else None


class _Peer:
    """Mutable per-peer state, private to the Rib."""

    __slots__ = (
        "accepted",
        "announcements",
        "gr_deadline",
        "info",
        "last_down_reason",
        "rejected",
        "routes",
        "since",
        "stale",
        "state",
        "teardowns",
        "withdrawals",
    )

    def __init__(self, info: PeerInfo) -> None:
        self.info = info
        self.routes: dict[IPNetwork, _Path] = {}
        self.state: SessionState = "idle"
        self.since: float | None = None
        self.gr_deadline: float | None = None
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.stale = 0
        self.announcements = 0
        self.withdrawals = 0
        self.teardowns = 0
        self.last_down_reason = ""


def _net_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def _addr_key(addr: IPAddress) -> tuple[int, int]:
    return (addr.version, int(addr))


class Rib:
    def __init__(self, policy: ImportPolicy, *, ecmp_max: int = DEFAULT_ECMP_MAX) -> None:
        if isinstance(ecmp_max, bool) or not isinstance(ecmp_max, int) or ecmp_max < 1:
            raise ValueError(f"ecmp_max must be a positive integer, got {ecmp_max!r}")
        self._policy = policy
        self._ecmp_max = ecmp_max
        self._peers: dict[IPAddress, _Peer] = {}
        # Every stored path (accepted or not) by prefix, then by peer. Keyed by
        # the _Peer object: identity hashing is much cheaper than an address's.
        self._by_prefix: dict[IPNetwork, dict[_Peer, _Path]] = {}
        # How many stored prefixes have each (version, prefixlen): to find the
        # stored prefixes covering an address without scanning them all.
        self._prefix_lengths: Counter[tuple[int, int]] = Counter()
        self._dirty: set[IPNetwork] = set()
        self._best: dict[IPNetwork, Route] = {}
        self._selected: dict[IPNetwork, frozenset[_Peer]] = {}
        self._changed: set[IPNetwork] = set()
        self._taken: dict[IPNetwork, Route] = {}
        self._ignored: Counter[str] = Counter()

    # ----- configuration -------------------------------------------------

    @property
    def policy(self) -> ImportPolicy:
        return self._policy

    def set_peers(self, peers: Sequence[PeerInfo]) -> list[Action]:
        """Make `peers` the configured set. A removed peer's routes go at once;
        a changed peer's routes are judged again."""
        wanted: dict[IPAddress, PeerInfo] = {}
        for info in peers:
            if info.address in wanted:
                raise ValueError(f"peer {info.address} is configured twice")
            wanted[info.address] = info
        for address in [a for a in self._peers if a not in wanted]:
            self._drop_all(self._peers.pop(address))
        actions: list[Action] = []
        for address, info in wanted.items():
            peer = self._peers.get(address)
            if peer is None:
                self._peers[address] = _Peer(info)
                continue
            old, peer.info = peer.info, info
            if (old.kind, old.asn, old.local_asn) != (info.kind, info.asn, info.local_asn):
                # kind and ASNs feed both the policy (as-loop) and selection.
                self._rejudge(peer, list(peer.routes), force_dirty=True)
            if info.graceful_restart_time is None and peer.stale:
                self._sweep_stale(peer, None)
            actions.extend(self._enforce_limit(peer))
        return actions

    def set_policy(self, policy: ImportPolicy) -> list[Action]:
        """Replace the import policy and judge every stored route again."""
        self._policy = policy
        actions: list[Action] = []
        for peer in self._peers.values():
            self._rejudge(peer, list(peer.routes))
            actions.extend(self._enforce_limit(peer))
        return actions

    def set_local_addresses(
        self, addresses: Iterable[IPAddress], borrowed: Iterable[IPAddress] = ()
    ) -> None:
        """This node's workload addresses changed: judge again only the stored
        prefixes that cover an address that came or went. `borrowed` ones
        (in other nodes' blocks) may be covered by a peer, not announced."""
        new_policy = self._policy.with_local_addresses(addresses, borrowed)
        changed = (new_policy.local_addresses ^ self._policy.local_addresses) | (
            new_policy.borrowed_addresses ^ self._policy.borrowed_addresses
        )
        self._policy = new_policy
        for prefix in self._covering_prefixes(changed):
            for holder in list(self._by_prefix.get(prefix, {})):
                self._rejudge(holder, [prefix])

    def change_local_addresses(
        self, added: Iterable[IPAddress], removed: Iterable[IPAddress]
    ) -> None:
        """set_local_addresses for one workload's worth of change, in time
        proportional to the change."""
        plus, minus = set(added), set(removed)
        self._policy = self._policy.with_local_delta(plus, minus)
        for prefix in self._covering_prefixes(plus | minus):
            for holder in list(self._by_prefix.get(prefix, {})):
                self._rejudge(holder, [prefix])

    def reset_peer(self, peer: IPAddress) -> None:
        """Allow a torn-down peer again (the agent re-enables its session)."""
        state = self._peer(peer)
        if state.state == "torn-down":
            state.state = "down"

    # ----- events ----------------------------------------------------------

    def apply(self, event: BgpEvent, now: float) -> list[Action]:
        if isinstance(event, SpeakerRestarted):
            for each in self._peers.values():
                self._session_down(each, now, "speaker restarted")
            return []
        peer = self._peers.get(event.peer)
        if peer is None:
            self._ignored["unknown-peer"] += 1
            return []
        if isinstance(event, UpdateEvent):
            if peer.state == "torn-down":
                self._ignored["torn-down"] += 1
                return []
            return self._update(peer, event, now)
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
            # keep the text so the peer table can say why.
            peer.last_down_reason = f"notification {event.direction}: {event.message}"
            return []
        raise TypeError(f"not a BGP event: {event!r}")

    def expire(self, now: float) -> None:
        """Sweep the stale routes of peers whose graceful-restart time ran out."""
        for peer in self._peers.values():
            if peer.gr_deadline is not None and now >= peer.gr_deadline:
                self._sweep_stale(peer, None)

    def next_deadline(self) -> float | None:
        """When expire() next has work to do, or None."""
        deadlines = [p.gr_deadline for p in self._peers.values() if p.gr_deadline is not None]
        return min(deadlines, default=None)

    def _update(self, peer: _Peer, event: UpdateEvent, now: float) -> list[Action]:
        if peer.state != "up":
            # Updates only flow on an established session; a missed "up" is implied.
            self._session_up(peer, now)
        # In an UPDATE message withdrawals come first, so a prefix that is both
        # withdrawn and announced ends up announced.
        for prefix in event.withdrawn:
            peer.withdrawals += 1
            self._put(peer, prefix, None)
        limit = self._limit(peer)
        for prefix, attrs in event.announced:
            peer.announcements += 1
            if prefix not in peer.routes and len(peer.routes) >= limit:
                return [self._tear_down(peer, limit)]
            reason = self._policy.evaluate(prefix, attrs, peer.info)
            self._put(peer, prefix, _Path(attrs, reason))
        return []

    def _session_up(self, peer: _Peer, now: float) -> None:
        if peer.state in ("up", "torn-down"):
            return
        peer.state = "up"
        peer.since = now

    def _session_down(self, peer: _Peer, now: float, reason: str) -> None:
        if peer.state != "up":
            return
        peer.state = "down"
        peer.since = now
        peer.last_down_reason = reason
        restart_time = peer.info.graceful_restart_time
        if restart_time is None:
            self._drop_all(peer)
            return
        # RFC 4724 4.2: routes still stale from an earlier restart are deleted
        # (consecutive restarts); everything else is kept, marked stale.
        for prefix, path in list(peer.routes.items()):
            if path.stale:
                self._put(peer, prefix, None)
            else:
                self._put(peer, prefix, _Path(path.attrs, path.reason, stale=True))
        peer.gr_deadline = now + restart_time if peer.stale else None

    def _sweep_stale(self, peer: _Peer, version: int | None) -> None:
        if peer.stale:
            for prefix, path in list(peer.routes.items()):
                if path.stale and (version is None or prefix.version == version):
                    self._put(peer, prefix, None)
        if not peer.stale:
            peer.gr_deadline = None

    # ----- max-prefix ------------------------------------------------------

    def _limit(self, peer: _Peer) -> int:
        own = peer.info.max_prefixes
        return own if own is not None else self._policy.max_prefixes

    def _enforce_limit(self, peer: _Peer) -> list[Action]:
        limit = self._limit(peer)
        if len(peer.routes) > limit and peer.state != "torn-down":
            return [self._tear_down(peer, limit)]
        return []

    def _tear_down(self, peer: _Peer, limit: int) -> TearDown:
        self._drop_all(peer)
        peer.state = "torn-down"
        peer.teardowns += 1
        reason = f"max-prefix {limit} exceeded"
        peer.last_down_reason = reason
        return TearDown(peer.info.address, reason)

    # ----- storage ---------------------------------------------------------

    def _put(self, peer: _Peer, prefix: IPNetwork, new: _Path | None) -> None:
        """The one place paths are stored or removed: keeps the per-peer and
        per-prefix views, the counters and the dirty set in step."""
        old = peer.routes.get(prefix)
        if old is not None:
            self._count(peer, old, -1)
        if _usable(old) != _usable(new):
            self._dirty.add(prefix)
        if new is None:
            if old is None:
                return
            del peer.routes[prefix]
            remaining = self._by_prefix[prefix]
            del remaining[peer]
            if not remaining:
                del self._by_prefix[prefix]
                self._prefix_lengths[(prefix.version, prefix.prefixlen)] -= 1
            return
        self._count(peer, new, +1)
        peer.routes[prefix] = new
        holders = self._by_prefix.get(prefix)
        if holders is None:
            holders = self._by_prefix[prefix] = {}
            self._prefix_lengths[(prefix.version, prefix.prefixlen)] += 1
        holders[peer] = new

    @staticmethod
    def _count(peer: _Peer, path: _Path, delta: int) -> None:
        if path.reason is None:
            peer.accepted += delta
        else:
            peer.rejected[path.reason] += delta
        if path.stale:
            peer.stale += delta

    def _drop_all(self, peer: _Peer) -> None:
        for prefix in list(peer.routes):
            self._put(peer, prefix, None)
        peer.gr_deadline = None

    def _rejudge(
        self, peer: _Peer, prefixes: Iterable[IPNetwork], force_dirty: bool = False
    ) -> None:
        for prefix in prefixes:
            path = peer.routes[prefix]
            reason = self._policy.evaluate(prefix, path.attrs, peer.info)
            if reason != path.reason:
                self._put(peer, prefix, _Path(path.attrs, reason, path.stale))
            if force_dirty:
                self._dirty.add(prefix)

    def _covering_prefixes(self, addresses: Iterable[IPAddress]) -> set[IPNetwork]:
        found: set[IPNetwork] = set()
        lengths = [key for key, count in self._prefix_lengths.items() if count > 0]
        for address in addresses:
            bits = address.max_prefixlen
            value = int(address)
            for version, length in lengths:
                if version != address.version:
                    continue
                base = value >> (bits - length) << (bits - length) if length else 0
                net: IPNetwork
                if version == 4:
                    net = ipaddress.IPv4Network((base, length))
                else:
                    net = ipaddress.IPv6Network((base, length))
                if net in self._by_prefix:
                    found.add(net)
        return found

    # ----- best path -------------------------------------------------------

    def _flush(self) -> None:
        for prefix in self._dirty:
            route, selected = self._select(prefix)
            if route is None:
                if self._best.pop(prefix, None) is not None:
                    self._changed.add(prefix)
                self._selected.pop(prefix, None)
                continue
            if self._best.get(prefix) != route:
                self._best[prefix] = route
                self._changed.add(prefix)
            self._selected[prefix] = selected
        self._dirty.clear()

    def _select(self, prefix: IPNetwork) -> tuple[Route | None, frozenset[_Peer]]:
        holders = self._by_prefix.get(prefix)
        candidates = [
            (peer, path.attrs, peer.info.external)
            for peer, path in (holders.items() if holders else ())
            if path.reason is None
        ]
        if len(candidates) > 1:
            candidates = _best_paths(candidates)
        if not candidates:
            return None, frozenset()
        # ECMP over what is left: one next hop per distinct address, lowest first.
        next_hops = sorted({attrs.next_hop for _, attrs, _ in candidates}, key=_addr_key)
        chosen = set(next_hops[: self._ecmp_max])
        route = Route(prefix, tuple(NextHop(gateway=nh) for nh in chosen), RouteKind.LEARNED)
        selected = frozenset(peer for peer, attrs, _ in candidates if attrs.next_hop in chosen)
        return route, selected

    # ----- output ----------------------------------------------------------

    def best_routes(self) -> dict[IPNetwork, Route]:
        self._flush()
        return dict(self._best)

    def take_changes(self) -> RouteChanges:
        """Routes to replace and prefixes to delete since the previous call."""
        self._flush()
        replace: list[Route] = []
        delete: list[IPNetwork] = []
        for prefix in sorted(self._changed, key=_net_key):
            new = self._best.get(prefix)
            old = self._taken.get(prefix)
            if new == old:
                continue  # changed and changed back between two calls
            if new is None:
                del self._taken[prefix]
                delete.append(prefix)
            else:
                self._taken[prefix] = new
                replace.append(new)
        self._changed.clear()
        return RouteChanges(replace=replace, delete=delete)

    def received(self, peer: IPAddress | None = None) -> list[ReceivedRoute]:
        """Everything peers sent and we hold, accepted or not, sorted by prefix
        then peer; only `peer`'s when given."""
        self._flush()
        peers = [self._peer(peer)] if peer is not None else list(self._peers.values())
        rows = []
        for state in peers:
            address = state.info.address
            for prefix, path in state.routes.items():
                rows.append(
                    ReceivedRoute(
                        prefix=prefix,
                        peer=address,
                        attrs=path.attrs,
                        accepted=path.reason is None,
                        reason=path.reason,
                        stale=path.stale,
                        best=state in self._selected.get(prefix, ()),
                    )
                )
        rows.sort(key=lambda r: (_net_key(r.prefix), _addr_key(r.peer)))
        return rows

    def stats(self) -> dict[IPAddress, PeerStats]:
        result = {}
        for address, peer in sorted(self._peers.items(), key=lambda item: _addr_key(item[0])):
            result[address] = PeerStats(
                address=address,
                kind=peer.info.kind,
                asn=peer.info.asn,
                state=peer.state,
                since=peer.since,
                max_prefixes=self._limit(peer),
                received=len(peer.routes),
                accepted=peer.accepted,
                rejected={r: peer.rejected[r] for r in REJECT_REASONS if peer.rejected[r]},
                stale=peer.stale,
                announcements=peer.announcements,
                withdrawals=peer.withdrawals,
                teardowns=peer.teardowns,
                last_down_reason=peer.last_down_reason,
            )
        return result

    def ignored_events(self) -> dict[str, int]:
        """Events that were dropped: from unconfigured peers, or updates from a
        torn-down peer that arrived before the agent disabled its session."""
        return dict(self._ignored)

    def _peer(self, address: IPAddress) -> _Peer:
        peer = self._peers.get(address)
        if peer is None:
            raise ValueError(f"{address} is not a configured peer")
        return peer


_Candidate = tuple[_Peer, PathAttributes, bool]  # (peer, attributes, learned over eBGP)


def _best_paths(candidates: list[_Candidate]) -> list[_Candidate]:
    """The candidates that tie through step 5 of the decision process."""
    # (1) local_pref, (2) AS path length, (3) origin: one rank, lowest wins.
    ranked = [(_rank(c[1], c[2]), c) for c in candidates]
    top = min(rank for rank, _ in ranked)
    survivors = [c for rank, c in ranked if rank == top]
    # (4) MED, only between paths from the same neighbouring AS. Keeping the
    # lowest MED within each group (rather than comparing pairwise in arrival
    # order) makes the result independent of the order paths arrived in.
    best_med: dict[int | None, int] = {}
    for _, attrs, _ext in survivors:
        group = _neighbour_as(attrs)
        med = attrs.med or 0
        if group not in best_med or med < best_med[group]:
            best_med[group] = med
    survivors = [c for c in survivors if (c[1].med or 0) == best_med[_neighbour_as(c[1])]]
    # (5) eBGP over iBGP.
    if any(external for _, _, external in survivors):
        survivors = [c for c in survivors if c[2]]
    return survivors


def _rank(attrs: PathAttributes, external: bool) -> tuple[int, int, int]:
    # LOCAL_PREF is not meaningful across an AS boundary (RFC 4271 5.1.5): an
    # external peer's value is ignored and the default used.
    local_pref = DEFAULT_LOCAL_PREF if external or attrs.local_pref is None else attrs.local_pref
    origin = _ORIGIN_RANK.get(attrs.origin, _UNKNOWN_ORIGIN_RANK)
    return (-local_pref, len(attrs.as_path), origin)


def _neighbour_as(attrs: PathAttributes) -> int | None:
    """The AS a path entered through; None for routes originated inside our AS."""
    return attrs.as_path[0] if attrs.as_path else None
