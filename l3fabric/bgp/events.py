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


class Family(enum.Enum):
    """The (AFI, SAFI) pairs l3fabric knows, by ExaBGP's names for them."""

    IPV4_UNICAST = "ipv4 unicast"
    IPV6_UNICAST = "ipv6 unicast"

    @property
    def afi(self) -> int:
        return 4 if self is Family.IPV4_UNICAST else 6


class RouteRefresh(enum.Enum):
    """Route refresh as negotiated: RFC 2918 (normal) or RFC 7313 (enhanced)."""

    ABSENT = "absent"
    NORMAL = "normal"
    ENHANCED = "enhanced"


@dataclass(frozen=True)
class NegotiatedEvent:
    """What the OPEN exchange with a peer settled on. ExaBGP sends it when it
    accepts the peer's OPEN, before the session is Established; it holds for
    that session only.

    `families` are the ones both ends offered and l3fabric knows (a family we
    do not know is left out, as UpdateEvent leaves out its routes); add-path
    lists the families where it was negotiated, per direction."""

    peer: IPAddress
    hold_time: int  # the lower of both offers; 0: no keepalives, no hold timer
    asn4: bool
    families: tuple[Family, ...]
    route_refresh: RouteRefresh
    add_path_send: tuple[Family, ...] = ()
    add_path_receive: tuple[Family, ...] = ()
    message_size: int = 4096  # 65535 with extended messages (RFC 8654)

    @property
    def keepalive_interval(self) -> int:
        # ExaBGP sends keepalives every third of the negotiated hold time.
        return self.hold_time // 3


@dataclass(frozen=True)
class SpeakerRestarted:
    """The speaker process was (re)started: every advertisement must be
    replayed and every learned route is unknown until peers resend it."""

    generation: int


BgpEvent = (
    PeerStateEvent
    | UpdateEvent
    | EndOfRibEvent
    | NotificationEvent
    | NegotiatedEvent
    | SpeakerRestarted
)
