"""Best-path selection and ECMP for one prefix: the BGP decision process
(RFC 4271 9.1.2.2, steps 1-5) over the accepted paths, then one next hop per
distinct address, lowest first, up to the ECMP limit. Long-lived stale paths
(RFC 9494 4.3) take part only when no other accepted path is left.

Pure functions; the order paths arrived in never changes the result.
"""

from __future__ import annotations

from collections.abc import Mapping

from l3fabric.bgp.events import PathAttributes
from l3fabric.bgp.rib_paths import PeerPaths, StoredPath
from l3fabric.bgp.rib_types import addr_key
from l3fabric.model import IPNetwork, NextHop, Route, RouteKind

DEFAULT_LOCAL_PREF = 100
DEFAULT_ECMP_MAX = 16
_ORIGIN_RANK = {"igp": 0, "egp": 1, "incomplete": 2}
_UNKNOWN_ORIGIN_RANK = 3  # worse than incomplete: never preferred over a known origin

_Candidate = tuple[PeerPaths, PathAttributes, bool]  # (peer, attributes, learned over eBGP)


def select_route(
    prefix: IPNetwork, holders: Mapping[PeerPaths, StoredPath], ecmp_max: int
) -> tuple[Route | None, frozenset[PeerPaths]]:
    """The route to install for `prefix` and the peers whose paths give its
    next hops; (None, empty) when no path is accepted."""
    candidates: list[_Candidate] = []
    long_lived: list[_Candidate] = []
    for peer, path in holders.items():
        if path.reason is None:
            group = candidates if path.long_lived_since is None else long_lived
            group.append((peer, path.attrs, peer.info.external))
    # Least preferred before any other step: a long-lived stale path loses
    # to every path that is not, whatever its attributes.
    if not candidates:
        candidates = long_lived
    if len(candidates) > 1:
        candidates = _best_paths(candidates)
    if not candidates:
        return None, frozenset()
    next_hops = sorted({attrs.next_hop for _, attrs, _ in candidates}, key=addr_key)
    chosen = set(next_hops[:ecmp_max])
    route = Route(prefix, tuple(NextHop(gateway=nh) for nh in chosen), RouteKind.LEARNED)
    selected = frozenset(peer for peer, attrs, _ in candidates if attrs.next_hop in chosen)
    return route, selected


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
