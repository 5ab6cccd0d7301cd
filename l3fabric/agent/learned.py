"""The RIB-in on its way to the kernel: import policy, best path, stale
routes expiring, and each change handed to the route table.

Runs on the agent's work loop. Max-prefix teardowns the RIB asks for go to
`on_teardown` (the BGP service holds the session down).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.neighbors import import_policy
from l3fabric.agent.routetable import RouteTable
from l3fabric.bgp.events import BgpEvent
from l3fabric.bgp.policy import PeerInfo
from l3fabric.bgp.rib import Rib
from l3fabric.bgp.rib_types import PeerStats, ReceivedRoute, TearDown
from l3fabric.config import Config
from l3fabric.model import IPAddress, IPNetwork


class LearnedRoutes:
    def __init__(
        self,
        config: Config,
        *,
        route_table: RouteTable,
        loop: WorkLoop,
        metrics: Metrics,
        clock: Callable[[], float],
        on_teardown: Callable[[TearDown], None],
    ) -> None:
        self._rib = Rib(import_policy(config))
        self._routes = route_table
        self._loop = loop
        self._metrics = metrics
        self._clock = clock
        self._on_teardown = on_teardown
        # When the pending expiry timer fires (None: none is pending). The
        # loop's timers cannot be cancelled: a deadline earlier than this arms
        # another, and a timer that finds itself superseded still only calls
        # expire(), which does nothing before a deadline.
        self._expiry_at: float | None = None

    def reconfigure(self, config: Config) -> None:
        current = self._rib.policy
        policy = replace(
            import_policy(config).with_local_addresses(
                current.local_addresses, current.borrowed_addresses
            ),
            on_link=current.on_link,
        )
        self._act(self._rib.set_policy(policy))
        self.to_kernel()

    def set_on_link(self, networks: frozenset[IPNetwork] | None) -> None:
        """The node's on-link networks as the kernel has them now: a next hop
        outside them is refused. Every route is judged again only when they
        changed (an uplink came, went or was renumbered)."""
        wanted = None if networks is None else tuple(sorted(networks, key=_network_order))
        current = self._rib.policy
        if wanted == current.on_link:
            return
        self._act(self._rib.set_policy(replace(current, on_link=wanted)))
        self.to_kernel()

    def set_local_addresses(
        self, local: Iterable[IPAddress], borrowed: Iterable[IPAddress] = ()
    ) -> None:
        self._rib.set_local_addresses(set(local), set(borrowed))
        self.to_kernel()

    def change_local_addresses(self, added: set[IPAddress], removed: set[IPAddress]) -> None:
        self._rib.change_local_addresses(added, removed)
        self.to_kernel()

    def set_peers(self, peers: Sequence[PeerInfo]) -> None:
        self._act(self._rib.set_peers(peers))
        self.to_kernel()

    def reset_peer(self, peer: IPAddress) -> None:
        self._rib.reset_peer(peer)

    def apply(self, event: BgpEvent, now: float) -> None:
        """One event into the RIB; settle() once the batch is in."""
        self._act(self._rib.apply(event, now))

    def settle(self) -> None:
        self.to_kernel()
        self._schedule_expiry()

    def check_config(self, config: Config) -> None:
        import_policy(config)

    def to_kernel(self) -> None:
        changes = self._rib.take_changes()
        if not changes:
            return
        self._routes.learned_changed(changes.replace, changes.delete)
        result = self._routes.flush()
        if result.failures:
            # Still dirty in the route table: the next flush or pass retries.
            self._metrics.reconcile_errors.inc(len(result.failures))

    def _act(self, actions: Sequence[TearDown]) -> None:
        for action in actions:
            self._on_teardown(action)

    def _schedule_expiry(self) -> None:
        deadline = self._rib.next_deadline()
        if deadline is None:
            return
        if self._expiry_at is not None and self._expiry_at <= deadline:
            return
        self._expiry_at = deadline

        def expire() -> None:
            if self._expiry_at == deadline:
                self._expiry_at = None
            self._rib.expire(self._clock())
            self.to_kernel()
            self._schedule_expiry()

        self._loop.call_later(max(0.0, deadline - self._clock()), expire)

    # -- views -----------------------------------------------------------------

    def stats(self) -> dict[IPAddress, PeerStats]:
        return self._rib.stats()

    def received(self, peer: IPAddress | None) -> list[ReceivedRoute]:
        return self._rib.received(peer)


def _network_order(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)
