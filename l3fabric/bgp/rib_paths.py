"""The RIB's path storage: every path each peer sent, with its import verdict
and staleness (stale, or long-lived stale), indexed by peer and by prefix, plus per-peer counters.

PathStore.put() is the one place paths change, so the two indexes, the
counters and the set of prefixes whose selection input changed ("dirty")
never drift apart. Best-path selection (rib_select) reads the per-prefix
index; the sessions logic (rib_sessions) decides what to put.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from l3fabric.bgp.events import PathAttributes
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib_types import SessionState
from l3fabric.model import IPAddress, IPNetwork


@dataclass(frozen=True)
class StoredPath:
    attrs: PathAttributes
    reason: str | None  # the policy that rejected it; None when accepted
    stale: bool = False
    # When the path became long-lived stale (RFC 9494), None while it is not;
    # a long-lived stale path is also stale. It is swept at this time plus the
    # peer's long_lived_stale_time, read then, so a reload that changes the
    # time applies to the paths already held.
    long_lived_since: float | None = None


def _usable(path: StoredPath | None) -> tuple[PathAttributes, bool] | None:
    """What best-path selection sees of a stored path: its attributes and
    whether it is long-lived stale (plain staleness does not count)."""
    if path is None or path.reason is not None:
        return None
    return path.attrs, path.long_lived_since is not None


class PeerPaths:
    """One configured peer: its paths, session state and counters.

    Mutable, shared between the RIB's parts; hashed by identity, which is much
    cheaper than hashing an address in the per-prefix index."""

    __slots__ = (
        "accepted",
        "announcements",
        "gr_deadline",
        "info",
        "last_down_reason",
        "long_lived",
        "long_lived_first",
        "notified",
        "rejected",
        "routes",
        "since",
        "stale",
        "state",
        "teardowns",
        "went_silent",
        "withdrawals",
    )

    def __init__(self, info: PeerInfo) -> None:
        self.info = info
        self.routes: dict[IPNetwork, StoredPath] = {}
        self.state: SessionState = "idle"
        self.since: float | None = None
        self.gr_deadline: float | None = None
        self.accepted = 0
        self.rejected: Counter[str] = Counter()
        self.stale = 0
        # Of the stale paths, how many are long-lived stale, and the earliest
        # long_lived_since among them (may be earlier than any path still held
        # after refreshes: expire() then finds nothing and looks again).
        self.long_lived = 0
        self.long_lived_first: float | None = None
        self.announcements = 0
        self.withdrawals = 0
        self.teardowns = 0
        self.last_down_reason = ""
        # A NOTIFICATION went either way on the current session: when it
        # ends, graceful restart does not apply (RFC 4724 section 4).
        self.notified = False
        # Our hold timer expired on the current session (we sent the
        # NOTIFICATION because the peer said nothing): not a goodbye.
        self.went_silent = False


class PathStore:
    def __init__(self) -> None:
        self._peers: dict[IPAddress, PeerPaths] = {}
        # Every stored path (accepted or not) by prefix, then by peer.
        self._by_prefix: dict[IPNetwork, dict[PeerPaths, StoredPath]] = {}
        # How many stored prefixes have each (version, prefixlen): to find the
        # stored prefixes covering an address without scanning them all.
        self._prefix_lengths: Counter[tuple[int, int]] = Counter()
        self._dirty: set[IPNetwork] = set()

    # ----- peers -------------------------------------------------------------

    def peer(self, address: IPAddress) -> PeerPaths | None:
        return self._peers.get(address)

    def require_peer(self, address: IPAddress) -> PeerPaths:
        peer = self._peers.get(address)
        if peer is None:
            raise ValueError(f"{address} is not a configured peer")
        return peer

    def peers(self) -> list[PeerPaths]:
        return list(self._peers.values())

    def addresses(self) -> list[IPAddress]:
        return list(self._peers)

    def add_peer(self, info: PeerInfo) -> None:
        self._peers[info.address] = PeerPaths(info)

    def remove_peer(self, address: IPAddress) -> None:
        self.drop_all(self._peers.pop(address))

    # ----- paths -------------------------------------------------------------

    def holders(self, prefix: IPNetwork) -> dict[PeerPaths, StoredPath]:
        """The paths stored for `prefix`, by peer (empty when none)."""
        return self._by_prefix.get(prefix, {})

    def put(self, peer: PeerPaths, prefix: IPNetwork, new: StoredPath | None) -> None:
        """Store `new` as `peer`'s path for `prefix`, or remove it (None)."""
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

    def drop_all(self, peer: PeerPaths) -> None:
        for prefix in list(peer.routes):
            self.put(peer, prefix, None)
        peer.gr_deadline = None
        peer.long_lived_first = None

    def rejudge(
        self,
        policy: ImportPolicy,
        peer: PeerPaths,
        prefixes: Iterable[IPNetwork],
        force_dirty: bool = False,
    ) -> None:
        """Evaluate `peer`'s stored paths for `prefixes` again under `policy`.
        `force_dirty` re-runs selection even when no verdict changed (the
        peer's kind or AS changed, which selection also reads)."""
        for prefix in prefixes:
            path = peer.routes[prefix]
            reason = policy.evaluate(prefix, path.attrs, peer.info)
            if reason != path.reason:
                self.put(peer, prefix, replace(path, reason=reason))
            if force_dirty:
                self._dirty.add(prefix)

    def rejudge_covering(self, policy: ImportPolicy, addresses: Iterable[IPAddress]) -> None:
        """Evaluate again every stored path whose prefix covers one of `addresses`."""
        for prefix in self._covering_prefixes(addresses):
            for holder in list(self._by_prefix.get(prefix, {})):
                self.rejudge(policy, holder, [prefix])

    def take_dirty(self) -> set[IPNetwork]:
        """The prefixes whose usable paths changed since the previous call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    @staticmethod
    def _count(peer: PeerPaths, path: StoredPath, delta: int) -> None:
        if path.reason is None:
            peer.accepted += delta
        else:
            peer.rejected[path.reason] += delta
        if path.stale:
            peer.stale += delta
        if path.long_lived_since is not None:
            peer.long_lived += delta

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
