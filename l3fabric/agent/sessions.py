"""The neighbour table: each BGP neighbour's definition, session state and
hold-down, and the replay decision when a session comes up.

Runs on the agent's work loop only. Knows nothing of ExaBGP's process or the
RIB: BgpService feeds it desired neighbours and session events and acts on
what it answers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from l3fabric.agent.neighbors import DesiredNeighbor
from l3fabric.agent.peers import PeerMetrics, PeerStatus, peer_detail, peer_row
from l3fabric.bgp.events import NegotiatedEvent
from l3fabric.bgp.exabgp_config import NeighborSpec
from l3fabric.bgp.policy import PeerInfo
from l3fabric.bgp.rib_types import PeerStats
from l3fabric.model import IPAddress

# Flap damping: a session that goes down this many times within the window
# is held down, so a flapping peer cannot make the agent reprogram the
# kernel (and ExaBGP replay to it) in a loop. Each damping of the same peer
# holds it down twice as long, up to the maximum.
FLAP_LIMIT = 5
FLAP_WINDOW = 60.0
DAMP_HOLD_DOWN = 30.0
DAMP_HOLD_DOWN_MAX = 600.0


@dataclass
class Neighbor:
    spec: NeighborSpec
    info: PeerInfo
    status: PeerStatus
    held_down_until: float = 0.0
    recent_flaps: deque[float] = field(default_factory=deque)
    dampings: int = 0
    # What the OPEN exchange of the current session settled on; None when
    # there is no session (it arrives before the session is Established).
    negotiated: NegotiatedEvent | None = None


class Sessions:
    def __init__(self, peer_metrics: PeerMetrics, *, on_flap: Callable[[str], None]) -> None:
        self._peer_metrics = peer_metrics
        self._on_flap = on_flap
        self._neighbors: dict[IPAddress, Neighbor] = {}
        # The neighbour definition ExaBGP had when we last replayed to it: while
        # that stands, ExaBGP itself resends our routes when the session
        # returns, and a replay would only double its work.
        self._replayed: dict[IPAddress, NeighborSpec] = {}

    # -- membership ------------------------------------------------------------

    def update(self, wanted: Mapping[IPAddress, DesiredNeighbor], now: float) -> None:
        for address in list(self._neighbors):
            if address not in wanted:
                del self._neighbors[address]
                self._replayed.pop(address, None)
        for address, desired in wanted.items():
            current = self._neighbors.get(address)
            if current is None:
                status = PeerStatus(address, desired.kind, desired.info.asn, desired.spec.name)
                status.since = now
                status.password = desired.spec.md5_password is not None
                neighbor = Neighbor(desired.spec, desired.info, status)
                self._neighbors[address] = neighbor
                # Every configured peer has state series from the start, so
                # "not Established" alerts also catch peers never reached.
                self.set_state(neighbor, "Idle", "", now)
            else:
                current.spec, current.info = desired.spec, desired.info

    def get(self, address: IPAddress) -> Neighbor | None:
        return self._neighbors.get(address)

    def __contains__(self, address: object) -> bool:
        return address in self._neighbors

    def __len__(self) -> int:
        return len(self._neighbors)

    def addresses(self) -> set[IPAddress]:
        return set(self._neighbors)

    def infos(self) -> list[PeerInfo]:
        return [n.info for n in self._neighbors.values()]

    def active_specs(self, now: float) -> list[NeighborSpec]:
        """The neighbours ExaBGP should have: all but those held down."""
        return [n.spec for n in self._neighbors.values() if n.held_down_until <= now]

    def peers_of(self, version: int, now: float) -> list[IPAddress]:
        return sorted(
            (
                a
                for a, n in self._neighbors.items()
                if a.version == version and n.held_down_until <= now
            ),
            key=int,
        )

    # -- session events ------------------------------------------------------------

    def speaker_restarted(self, now: float) -> None:
        """Every session died with the old process, and with it everything we
        announced; each replay happens when its session comes up again."""
        self._replayed.clear()
        for neighbor in self._neighbors.values():
            neighbor.negotiated = None
            self.set_state(neighbor, "Active", "speaker restarted", now)

    def session_negotiated(self, event: NegotiatedEvent, now: float) -> None:
        """The OPEN exchange of a new session is done: keep what it settled
        on until that session ends. A "connected" does not clear it: with
        both ends connecting, the other connection's "connected" may arrive
        between this and "up"; the next session sends its own anyway."""
        neighbor = self._usable(event.peer, now)
        if neighbor is not None:
            neighbor.negotiated = event

    def session_up(self, address: IPAddress, now: float) -> bool | None:
        """Established. True: replay our routes to it; False: ExaBGP still
        holds them, only End-of-RIB is due; None: not ours, or held down."""
        neighbor = self._usable(address, now)
        if neighbor is None:
            return None
        self.set_state(neighbor, "Established", "", now)
        if self._replayed.get(address) == neighbor.spec:
            return False
        self._replayed[address] = neighbor.spec
        return True

    def session_connected(self, address: IPAddress, now: float) -> None:
        neighbor = self._usable(address, now)
        if neighbor is not None:
            self.set_state(neighbor, "OpenSent", "", now)

    def session_down(self, address: IPAddress, reason: str, now: float) -> float | None:
        """The session went down. Returns how long to hold the peer down when
        it has flapped too often (flap damping), else None."""
        neighbor = self._usable(address, now)
        if neighbor is None:
            return None
        was_up = neighbor.status.state == "Established"
        neighbor.negotiated = None
        self.set_state(neighbor, "Active", reason or "session down", now)
        if not was_up:
            return None
        neighbor.status.flaps += 1
        self._on_flap(str(address))
        flaps = neighbor.recent_flaps
        flaps.append(now)
        while flaps and flaps[0] < now - FLAP_WINDOW:
            flaps.popleft()
        if len(flaps) < FLAP_LIMIT:
            return None
        flaps.clear()
        neighbor.dampings += 1
        return min(DAMP_HOLD_DOWN * 2 ** (neighbor.dampings - 1), DAMP_HOLD_DOWN_MAX)

    def notification(self, address: IPAddress, text: str) -> None:
        neighbor = self._neighbors.get(address)
        if neighbor is not None:
            neighbor.status.info = text

    def hold_down(self, address: IPAddress, until: float, reason: str, now: float) -> bool:
        neighbor = self._neighbors.get(address)
        if neighbor is None:
            return False
        neighbor.held_down_until = until
        neighbor.negotiated = None  # we take the session down
        self._replayed.pop(address, None)
        self.set_state(neighbor, "Idle", reason, now)
        return True

    def release(self, address: IPAddress) -> bool:
        neighbor = self._neighbors.get(address)
        if neighbor is None:
            return False
        neighbor.held_down_until = 0.0
        return True

    def _usable(self, address: IPAddress, now: float) -> Neighbor | None:
        neighbor = self._neighbors.get(address)
        if neighbor is None or neighbor.held_down_until > now:
            return None  # not ours, or we took it down: keep saying why
        return neighbor

    def set_state(self, neighbor: Neighbor, state: str, info: str, now: float) -> None:
        status = neighbor.status
        if status.state != state:
            status.since = now
            status.state = state
        if info or state == "Established":
            status.info = info
        self._peer_metrics.state(str(status.address), state)

    def set_advertised(self, count_of: Callable[[int], int]) -> None:
        for neighbor in self._neighbors.values():
            neighbor.status.advertised = count_of(neighbor.status.address.version)

    # -- views ---------------------------------------------------------------------

    def table(
        self, stats: Mapping[IPAddress, PeerStats], md5: dict[str, int], now: float
    ) -> list[dict[str, Any]]:
        return [
            peer_row(self._neighbors[a].status, stats.get(a), md5, now)
            for a in sorted(self._neighbors, key=lambda a: (a.version, int(a)))
        ]

    def detail(
        self, address: IPAddress, stats: PeerStats | None, md5: dict[str, int], now: float
    ) -> dict[str, Any] | None:
        neighbor = self._neighbors.get(address)
        if neighbor is None:
            return None
        detail = peer_detail(
            neighbor.status,
            neighbor.spec,
            stats,
            md5,
            now,
            neighbor.held_down_until,
            neighbor.negotiated,
        )
        long_lived_time = neighbor.info.long_lived_stale_time
        if long_lived_time:
            # Only where configured, so a node that does not use it shows
            # graceful restart exactly as before.
            gr = detail["graceful_restart"]
            long_lived = stats.long_lived_stale if stats else 0
            gr["long_lived_stale_time"] = long_lived_time
            gr["long_lived_stale_routes"] = long_lived
            if long_lived and gr["stale_routes"] == long_lived and detail["state"] != "Established":
                # Down past its restart time: every stale route is held only
                # until the long-lived time ends.
                gr["state"] = "long-lived stale"
        return detail

    def sending_to(self, address: IPAddress, now: float) -> bool | None:
        """Whether our routes go to `address` now (Established and not held
        down); None when it is not a neighbour."""
        neighbor = self._neighbors.get(address)
        if neighbor is None:
            return None
        return neighbor.status.state == "Established" and neighbor.held_down_until <= now

    def changed_at(self, offset: float) -> dict[str, float]:
        return {str(a): n.status.since + offset for a, n in self._neighbors.items()}

    def all_established(self) -> bool:
        return all(n.status.state == "Established" for n in self._neighbors.values())

    def any_established(self) -> bool:
        return any(n.status.state == "Established" for n in self._neighbors.values())
