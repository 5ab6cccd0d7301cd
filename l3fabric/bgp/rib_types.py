"""The values the RIB hands out: the action it asks the agent to take
(TearDown), the route changes to program, and snapshots of received routes
and of peers, and the orders they are listed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from l3fabric.bgp.events import PathAttributes
from l3fabric.model import IPAddress, IPNetwork, Route

SessionState = Literal["idle", "up", "down", "torn-down"]
# A held path: as sent, stale (kept through a graceful restart) or
# long-lived stale (kept past the restart time, least preferred; RFC 9494).
PathState = Literal["fresh", "stale", "long-lived-stale"]


def net_key(net: IPNetwork) -> tuple[int, int, int]:
    """Numeric order of prefixes (IPv4 first), for stable listings."""
    return (net.version, int(net.network_address), net.prefixlen)


def addr_key(addr: IPAddress) -> tuple[int, int]:
    """Numeric order of addresses (IPv4 first)."""
    return (addr.version, int(addr))


@dataclass(frozen=True)
class TearDown:
    """Disable the session with `peer`; it stays down until Rib.reset_peer()."""

    peer: IPAddress
    reason: str


Action = TearDown


@dataclass(frozen=True)
class RouteChanges:
    """What changed in best_routes() since the previous take_changes()."""

    replace: list[Route]
    delete: list[IPNetwork]

    def __bool__(self) -> bool:
        return bool(self.replace or self.delete)


@dataclass(frozen=True)
class ReceivedRoute:
    prefix: IPNetwork
    peer: IPAddress
    attrs: PathAttributes
    accepted: bool
    reason: str | None  # the policy that rejected it; None when accepted
    stale: bool  # stale or long-lived stale
    best: bool  # this path contributes a next hop to the installed route
    long_lived_stale: bool = False

    @property
    def state(self) -> PathState:
        if self.long_lived_stale:
            return "long-lived-stale"
        return "stale" if self.stale else "fresh"

    def to_dict(self) -> dict[str, object]:
        a = self.attrs
        return {
            "prefix": str(self.prefix),
            "peer": str(self.peer),
            "next_hop": str(a.next_hop),
            "as_path": list(a.as_path),
            "local_pref": a.local_pref,
            "med": a.med,
            "origin": a.origin,
            "accepted": self.accepted,
            "reason": self.reason,
            "stale": self.stale,
            "state": self.state,
            "best": self.best,
        }


@dataclass(frozen=True)
class PeerStats:
    """A snapshot of one peer. received/accepted/rejected/stale count the
    prefixes held now (long_lived_stale: those of the stale ones kept past
    the restart time); updates, withdrawals and teardowns count since start."""

    address: IPAddress
    kind: str
    asn: int
    state: SessionState
    since: float | None  # `now` of the last state change
    max_prefixes: int
    received: int
    accepted: int
    rejected: dict[str, int]
    stale: int
    announcements: int
    withdrawals: int
    teardowns: int
    last_down_reason: str
    long_lived_stale: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "address": str(self.address),
            "kind": self.kind,
            "asn": self.asn,
            "state": self.state,
            "since": self.since,
            "max_prefixes": self.max_prefixes,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "stale": self.stale,
            "long_lived_stale": self.long_lived_stale,
            "announcements": self.announcements,
            "withdrawals": self.withdrawals,
            "teardowns": self.teardowns,
            "last_down_reason": self.last_down_reason,
        }
