"""Typed events parsed from the BGP speaker's output.

The speaker (ExaBGP) talks JSON; l3fabric.bgp.api turns each message into one
of these values, so nothing above the codec ever sees raw JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from l3fabric.model import IPAddress, IPNetwork


class PeerState(enum.Enum):
    """ExaBGP reports coarse neighbour changes; `up` is Established."""

    CONNECTED = "connected"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class PathAttributes:
    next_hop: IPAddress
    as_path: tuple[int, ...] = ()
    local_pref: int | None = None
    med: int | None = None
    origin: str = "igp"  # igp | egp | incomplete
    originator_id: IPAddress | None = None
    cluster_list: tuple[IPAddress, ...] = ()


@dataclass(frozen=True)
class PeerStateEvent:
    peer: IPAddress
    state: PeerState
    reason: str = ""  # e.g. "hold timer expired", the notification text


@dataclass(frozen=True)
class UpdateEvent:
    """One UPDATE from a peer: announced prefixes with their attributes, and
    withdrawn prefixes."""

    peer: IPAddress
    announced: tuple[tuple[IPNetwork, PathAttributes], ...] = ()
    withdrawn: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class EndOfRibEvent:
    peer: IPAddress
    afi: int  # 4 or 6


@dataclass(frozen=True)
class NotificationEvent:
    peer: IPAddress
    direction: str  # "received" | "sent"
    code: int
    subcode: int
    message: str


@dataclass(frozen=True)
class SpeakerRestarted:
    """The speaker process was (re)started: every advertisement must be
    replayed and every learned route is unknown until peers resend it."""

    generation: int


BgpEvent = PeerStateEvent | UpdateEvent | EndOfRibEvent | NotificationEvent | SpeakerRestarted
