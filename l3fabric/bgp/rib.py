"""The RIB: routes learned from BGP peers, their import verdicts, best path
and ECMP, and the incremental changes the agent programs into the kernel.

Pure logic: no I/O, no threads, no clock reads (callers pass `now`). The
agent feeds speaker events in with apply(), executes the actions it returns
(TearDown), calls expire() when next_deadline() passes, and programs what
take_changes() reports. docs/routing-policy.md describes the rules.

Rib is the front the agent uses; the work is done by its parts:
rib_paths (storage and counters), rib_sessions (events, graceful restart,
long-lived stale routes, max-prefix), rib_select (decision process, ECMP) and rib_best (best routes
and changes). The values it hands out live in rib_types.

Cost: an update touches only the prefixes it names; best paths are recomputed
lazily, once per changed prefix, when routes or changes are read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from l3fabric.bgp.events import BgpEvent
from l3fabric.bgp.policy import REJECT_REASONS, ImportPolicy, PeerInfo
from l3fabric.bgp.rib_best import BestRoutes
from l3fabric.bgp.rib_paths import PathStore
from l3fabric.bgp.rib_select import DEFAULT_ECMP_MAX
from l3fabric.bgp.rib_sessions import PeerSessions
from l3fabric.bgp.rib_types import (
    Action,
    PeerStats,
    ReceivedRoute,
    RouteChanges,
    addr_key,
    net_key,
)
from l3fabric.model import IPAddress, IPNetwork, Route


class Rib:
    def __init__(self, policy: ImportPolicy, *, ecmp_max: int = DEFAULT_ECMP_MAX) -> None:
        if isinstance(ecmp_max, bool) or not isinstance(ecmp_max, int) or ecmp_max < 1:
            raise ValueError(f"ecmp_max must be a positive integer, got {ecmp_max!r}")
        self._policy = policy
        self._store = PathStore()
        self._sessions = PeerSessions(self._store)
        self._best = BestRoutes(self._store, ecmp_max)

    # ----- configuration -------------------------------------------------

    @property
    def policy(self) -> ImportPolicy:
        return self._policy

    def set_peers(self, peers: Sequence[PeerInfo]) -> list[Action]:
        """Make `peers` the configured set. A removed peer's routes go at once;
        a changed peer's routes are judged again."""
        return self._sessions.configure(peers, self._policy)

    def set_policy(self, policy: ImportPolicy) -> list[Action]:
        """Replace the import policy and judge every stored route again."""
        self._policy = policy
        actions: list[Action] = []
        for peer in self._store.peers():
            self._store.rejudge(policy, peer, list(peer.routes))
            actions.extend(self._sessions.enforce_limit(peer, policy))
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
        self._store.rejudge_covering(new_policy, changed)

    def change_local_addresses(
        self, added: Iterable[IPAddress], removed: Iterable[IPAddress]
    ) -> None:
        """set_local_addresses for one workload's worth of change, in time
        proportional to the change."""
        plus, minus = set(added), set(removed)
        self._policy = self._policy.with_local_delta(plus, minus)
        self._store.rejudge_covering(self._policy, plus | minus)

    def reset_peer(self, peer: IPAddress) -> None:
        """Allow a torn-down peer again (the agent re-enables its session)."""
        self._sessions.reset_peer(peer)

    # ----- events ----------------------------------------------------------

    def apply(self, event: BgpEvent, now: float) -> list[Action]:
        return self._sessions.apply(event, now, self._policy)

    def expire(self, now: float) -> None:
        """Sweep (or, with a long-lived stale time, keep as long-lived stale)
        the stale routes of peers whose graceful-restart time ran out, and
        sweep the long-lived stale routes whose time ran out."""
        self._sessions.expire(now)

    def next_deadline(self) -> float | None:
        """When expire() next has work to do, or None."""
        return self._sessions.next_deadline()

    # ----- output ----------------------------------------------------------

    def best_routes(self) -> dict[IPNetwork, Route]:
        return self._best.routes()

    def take_changes(self) -> RouteChanges:
        """Routes to replace and prefixes to delete since the previous call."""
        return self._best.take_changes()

    def received(self, peer: IPAddress | None = None) -> list[ReceivedRoute]:
        """Everything peers sent and we hold, accepted or not, sorted by prefix
        then peer; only `peer`'s when given."""
        selections = self._best.selections()
        peers = [self._store.require_peer(peer)] if peer is not None else self._store.peers()
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
                        best=state in selections.get(prefix, ()),
                        long_lived_stale=path.long_lived_since is not None,
                    )
                )
        rows.sort(key=lambda r: (net_key(r.prefix), addr_key(r.peer)))
        return rows

    def stats(self) -> dict[IPAddress, PeerStats]:
        result = {}
        for peer in sorted(self._store.peers(), key=lambda p: addr_key(p.info.address)):
            address = peer.info.address
            result[address] = PeerStats(
                address=address,
                kind=peer.info.kind,
                asn=peer.info.asn,
                state=peer.state,
                since=peer.since,
                max_prefixes=self._sessions.limit(peer, self._policy),
                received=len(peer.routes),
                accepted=peer.accepted,
                rejected={r: peer.rejected[r] for r in REJECT_REASONS if peer.rejected[r]},
                stale=peer.stale,
                announcements=peer.announcements,
                withdrawals=peer.withdrawals,
                teardowns=peer.teardowns,
                last_down_reason=peer.last_down_reason,
                long_lived_stale=peer.long_lived,
            )
        return result

    def ignored_events(self) -> dict[str, int]:
        """Events that were dropped: from unconfigured peers, or updates from a
        torn-down peer that arrived before the agent disabled its session."""
        return self._sessions.ignored_events()
