"""The RIB's output side: the best route per prefix, kept up to date lazily
(once per changed prefix, when routes or changes are read), and the changes
since the agent last took them, so it programs only what moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from l3fabric.bgp.rib_paths import PathStore, PeerPaths, StoredPath
from l3fabric.bgp.rib_select import select_route
from l3fabric.bgp.rib_types import RouteChanges, net_key
from l3fabric.model import IPAddress, IPNetwork, NextHop, Route, RouteKind

_MAX_SHARED_HOPS = 4096


class BestRoutes:
    def __init__(self, store: PathStore, ecmp_max: int) -> None:
        self._store = store
        self._ecmp_max = ecmp_max
        self._best: dict[IPNetwork, Route] = {}
        self._selected: dict[IPNetwork, frozenset[PeerPaths]] = {}
        self._changed: set[IPNetwork] = set()
        self._taken: dict[IPNetwork, Route] = {}
        # Routes through one next hop share its next-hop tuple, and paths
        # from one peer share its selection: at 100k routes from a peer
        # these were a third of the memory the RIB held per route.
        self._hops: dict[IPAddress, tuple[NextHop, ...]] = {}
        self._alone: dict[PeerPaths, frozenset[PeerPaths]] = {}
        self._last_hop: tuple[IPAddress | None, tuple[NextHop, ...] | None] = (None, None)

    def routes(self) -> dict[IPNetwork, Route]:
        self._refresh()
        return dict(self._best)

    def selections(self) -> Mapping[IPNetwork, frozenset[PeerPaths]]:
        """For each installed prefix, the peers whose paths give it a next hop."""
        self._refresh()
        return MappingProxyType(self._selected)

    def take_changes(self) -> RouteChanges:
        """Routes to replace and prefixes to delete since the previous call."""
        self._refresh()
        replace: list[Route] = []
        delete: list[IPNetwork] = []
        for prefix in sorted(self._changed, key=net_key):
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

    def _refresh(self) -> None:
        for prefix in self._store.take_dirty():
            holders = self._store.holders(prefix)
            if len(holders) == 1:
                route, selected = self._one_holder(prefix, holders)
            else:
                route, selected = select_route(prefix, holders, self._ecmp_max)
            if route is None:
                if self._best.pop(prefix, None) is not None:
                    self._changed.add(prefix)
                self._selected.pop(prefix, None)
                continue
            if self._best.get(prefix) != route:
                self._best[prefix] = route
                self._changed.add(prefix)
            self._selected[prefix] = selected

    def _one_holder(
        self, prefix: IPNetwork, holders: Mapping[PeerPaths, StoredPath]
    ) -> tuple[Route | None, frozenset[PeerPaths]]:
        """select_route when one peer holds the prefix: its path, if accepted,
        with the shared next hops and selection."""
        ((peer, path),) = holders.items()
        if path.reason is not None:
            return None, frozenset()
        next_hop = path.attrs.next_hop
        # The prefixes of an UPDATE come in a row with one next-hop object:
        # asking the dict (an address hashes through its hex text) is for
        # when it changes.
        last_hop, last_hops = self._last_hop
        hops = last_hops if next_hop is last_hop else self._hops.get(next_hop)
        if hops is None:
            if len(self._hops) >= _MAX_SHARED_HOPS:
                self._hops.clear()  # a peer churning next hops
            hops = self._hops[next_hop] = (NextHop(gateway=next_hop),)
        self._last_hop = (next_hop, hops)
        selected = self._alone.get(peer)
        if selected is None:
            if len(self._alone) >= _MAX_SHARED_HOPS:
                self._alone.clear()
            selected = self._alone[peer] = frozenset((peer,))
        return Route(prefix, hops, RouteKind.LEARNED), selected
