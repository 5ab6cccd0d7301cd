"""The RIB's output side: the best route per prefix, kept up to date lazily
(once per changed prefix, when routes or changes are read), and the changes
since the agent last took them, so it programs only what moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from l3fabric.bgp.rib_paths import PathStore, PeerPaths
from l3fabric.bgp.rib_select import select_route
from l3fabric.bgp.rib_types import RouteChanges, net_key
from l3fabric.model import IPNetwork, Route


class BestRoutes:
    def __init__(self, store: PathStore, ecmp_max: int) -> None:
        self._store = store
        self._ecmp_max = ecmp_max
        self._best: dict[IPNetwork, Route] = {}
        self._selected: dict[IPNetwork, frozenset[PeerPaths]] = {}
        self._changed: set[IPNetwork] = set()
        self._taken: dict[IPNetwork, Route] = {}

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
            route, selected = select_route(prefix, self._store.holders(prefix), self._ecmp_max)
            if route is None:
                if self._best.pop(prefix, None) is not None:
                    self._changed.add(prefix)
                self._selected.pop(prefix, None)
                continue
            if self._best.get(prefix) != route:
                self._best[prefix] = route
                self._changed.add(prefix)
            self._selected[prefix] = selected
