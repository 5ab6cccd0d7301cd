"""Codec for ExaBGP's text API, treated as a wire protocol.

Commands go to ExaBGP one per line; every builder here takes typed values and
returns lines that passed `check_line`, so nothing a caller (or a peer, via a
value we echo) controls can smuggle a newline, a control character or an
unexpected keyword into ExaBGP's command stream.

ExaBGP answers with one JSON object per line (encoder json) plus plain-text
acknowledgements ("done", "error", ...). `parse_message` turns a JSON line
into typed events; `parse_answer` recognises the plain-text lines.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from l3fabric import limits
from l3fabric.bgp.events import (
    BgpEvent,
    EndOfRibEvent,
    Family,
    NegotiatedEvent,
    NotificationEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    RouteRefresh,
    UpdateEvent,
)
from l3fabric.model import IPAddress, IPNetwork
from l3fabric.prefix import parse_prefix

# ExaBGP turns one `announce attributes ... nlri P1 P2 ...` line into as few
# UPDATEs as fit; a few hundred prefixes keep a line far below ExaBGP's 1 MiB
# command limit while giving most of the batching gain.
DEFAULT_BATCH = 256
MAX_LINE_LENGTH = 512 * 1024  # ExaBGP drops a helper whose line exceeds 1 MiB

# Every character a command we build can contain. Anything else (newline, NUL,
# quote, semicolon, brace, non-ASCII) is refused before it reaches ExaBGP.
_LINE_RE = re.compile(r"^[A-Za-z0-9.:/\[\], -]+$")
_COMMUNITY_RE = re.compile(r"^(\d{1,5}):(\d{1,5})$")

# The commands (after any `neighbor X [, neighbor Y]` selector) we ever send.
_ALLOWED_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("announce", "attributes"),
    ("withdraw", "attributes"),
    ("announce", "eor"),
    ("announce", "route-refresh"),
    ("clear", "adj-rib", "out"),
    ("flush", "adj-rib", "out"),
    ("reload",),
)

_AFI_NAMES = {4: "ipv4", 6: "ipv6"}
_AFI_BY_NAME = {"ipv4": 4, "ipv6": 6}
_ORIGINS = frozenset({"igp", "egp", "incomplete"})

# RFC 4271 section 4.5 / RFC 4486: the codes ExaBGP quotes in "down" reasons,
# named so that an operator reading a log does not need the RFC open.
_NOTIFICATION_NAMES: dict[tuple[int, int | None], str] = {
    (1, None): "message header error",
    (2, None): "OPEN message error",
    (2, 2): "bad peer AS",
    (2, 4): "unsupported optional parameter",
    (2, 6): "unacceptable hold time",
    (2, 7): "unsupported capability",
    (3, None): "UPDATE message error",
    (3, 9): "optional attribute error",
    (4, None): "hold timer expired",
    (5, None): "finite state machine error",
    (6, None): "cease",
    (6, 1): "cease: maximum number of prefixes reached",
    (6, 2): "cease: administrative shutdown",
    (6, 3): "cease: peer de-configured",
    (6, 4): "cease: administrative reset",
    (6, 5): "cease: connection rejected",
    (6, 6): "cease: other configuration change",
    (6, 7): "cease: connection collision resolution",
    (6, 8): "cease: out of resources",
    (6, 9): "cease: hard reset",
}

_DOWN_NOTIFICATION_RE = re.compile(r"^notification (sent|received) \((\d+),(\d+)\)")


class ParseError(ValueError):
    """A line from ExaBGP that is not a well-formed message."""


def notification_name(code: int, subcode: int) -> str:
    return _NOTIFICATION_NAMES.get(
        (code, subcode), _NOTIFICATION_NAMES.get((code, None), f"error code {code}")
    )


# --------------------------------------------------------------------------
# Commands


def check_line(line: str) -> str:
    """Return `line` if it is a command this codec could have built, else
    raise ValueError saying what is wrong with it."""
    if not isinstance(line, str):
        raise ValueError(f"a command must be a str, not {type(line).__name__}")
    if not line:
        raise ValueError("empty command")
    if len(line) > MAX_LINE_LENGTH:
        raise ValueError(f"command of {len(line)} characters exceeds {MAX_LINE_LENGTH}")
    if not _LINE_RE.match(line):
        bad = next(c for c in line if not _LINE_RE.match(c))
        raise ValueError(f"command contains a forbidden character {bad!r}: {line[:80]!r}")
    tokens = line.split(" ")
    if "" in tokens:
        raise ValueError(f"command has empty tokens (leading, trailing or double space): {line!r}")
    rest = _skip_selector(tokens)
    if not any(tuple(rest[: len(cmd)]) == cmd for cmd in _ALLOWED_COMMANDS):
        raise ValueError(f"unexpected command {' '.join(rest[:3])!r}")
    return line


def _skip_selector(tokens: list[str]) -> list[str]:
    i = 0
    while i < len(tokens) and tokens[i] == "neighbor":
        if i + 1 >= len(tokens):
            raise ValueError("`neighbor` selector without an address")
        try:
            ipaddress.ip_address(tokens[i + 1])
        except ValueError:
            raise ValueError(f"neighbor selector {tokens[i + 1]!r} is not an IP address") from None
        i += 2
        if i < len(tokens) and tokens[i] == ",":
            i += 1
            if i >= len(tokens) or tokens[i] != "neighbor":
                raise ValueError("`,` in a neighbor selector must be followed by `neighbor`")
    return tokens[i:]


def _selector(neighbors: Sequence[IPAddress] | None) -> str:
    """`neighbor A , neighbor B ` or "" for every neighbour of our process."""
    if neighbors is None:
        return ""
    if isinstance(neighbors, str | bytes):
        raise ValueError("neighbors must be a sequence of IP addresses, not a string")
    if not neighbors:
        raise ValueError("neighbors is empty: pass None to address every neighbour")
    parts = []
    for peer in dict.fromkeys(neighbors):
        _require_address(peer, "neighbor")
        parts.append(f"neighbor {peer}")
    return " , ".join(parts) + " "


def _require_address(value: object, what: str) -> None:
    if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise ValueError(f"{what} must be an IPv4Address or IPv6Address, not {value!r}")


def _require_uint32(value: object, what: str) -> int:
    problem = limits.range_error(value, 0, limits.UINT32_MAX)
    if problem is not None:
        raise ValueError(f"{what}: {problem}")
    assert isinstance(value, int)
    return value


def _checked_prefixes(prefixes: Iterable[IPNetwork]) -> list[IPNetwork]:
    if isinstance(prefixes, str | bytes):
        raise ValueError("prefixes must be a sequence of IP networks, not a string")
    checked = []
    for prefix in prefixes:
        if not isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise ValueError(f"prefix must be an IPv4Network or IPv6Network, not {prefix!r}")
        checked.append(prefix)
    return list(dict.fromkeys(checked))


def _checked_communities(communities: Iterable[str]) -> list[str]:
    if isinstance(communities, str | bytes):
        raise ValueError("communities must be a sequence of 'ASN:VALUE' strings, not a string")
    checked = []
    for community in communities:
        match = _COMMUNITY_RE.match(community) if isinstance(community, str) else None
        if not match or int(match[1]) > 0xFFFF or int(match[2]) > 0xFFFF:
            raise ValueError(f"community {community!r} is not ASN:VALUE with both in 0..65535")
        checked.append(community)
    return checked


def _batches(items: Sequence[IPNetwork], batch: int) -> Iterable[Sequence[IPNetwork]]:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    for start in range(0, len(items), batch):
        yield items[start : start + batch]


def announce(
    neighbors: Sequence[IPAddress] | None,
    next_hop: IPAddress,
    prefixes: Sequence[IPNetwork],
    *,
    local_pref: int | None = None,
    med: int | None = None,
    communities: Sequence[str] = (),
    batch: int = DEFAULT_BATCH,
) -> list[str]:
    """Announce `prefixes` via `next_hop` to `neighbors` (None: all of ours).

    All prefixes must be of the next hop's family: ExaBGP happily encodes an
    IPv6 route with an IPv4 next hop, and the peer then resets the session
    with "invalid ipv6 unicast next-hop length 4" on every reconnect.
    """
    _require_address(next_hop, "next_hop")
    checked = _checked_prefixes(prefixes)
    for prefix in checked:
        if prefix.version != next_hop.version:
            raise ValueError(
                f"prefix {prefix} is IPv{prefix.version} but next hop {next_hop} is "
                f"IPv{next_hop.version}: give a next hop per family"
            )
    attributes = [f"next-hop {next_hop}"]
    if local_pref is not None:
        attributes.append(f"local-preference {_require_uint32(local_pref, 'local_pref')}")
    if med is not None:
        attributes.append(f"med {_require_uint32(med, 'med')}")
    community_list = _checked_communities(communities)
    if community_list:
        attributes.append("community [ " + " ".join(community_list) + " ]")
    head = _selector(neighbors) + "announce attributes " + " ".join(attributes) + " nlri "
    return [
        check_line(head + " ".join(str(p) for p in chunk)) for chunk in _batches(checked, batch)
    ]


def withdraw(
    neighbors: Sequence[IPAddress] | None,
    prefixes: Sequence[IPNetwork],
    *,
    batch: int = DEFAULT_BATCH,
) -> list[str]:
    """Withdraw `prefixes` from `neighbors` (None: all of ours), one address
    family per line."""
    checked = _checked_prefixes(prefixes)
    head = _selector(neighbors) + "withdraw attributes nlri "
    lines: list[str] = []
    for version in (4, 6):
        family = [p for p in checked if p.version == version]
        lines.extend(
            check_line(head + " ".join(str(p) for p in chunk)) for chunk in _batches(family, batch)
        )
    return lines


def _afi(afi: int) -> str:
    if afi not in _AFI_NAMES or isinstance(afi, bool):
        raise ValueError(f"afi must be 4 or 6, not {afi!r}")
    return _AFI_NAMES[afi]


def eor(neighbors: Sequence[IPAddress] | None, afi: int) -> str:
    """Send End-of-RIB for IPv4 (afi=4) or IPv6 (afi=6) unicast."""
    return check_line(_selector(neighbors) + f"announce eor {_afi(afi)} unicast")


def route_refresh(neighbors: Sequence[IPAddress] | None, afi: int) -> str:
    """Ask peers to resend everything they advertise for one family."""
    return check_line(_selector(neighbors) + f"announce route-refresh {_afi(afi)} unicast")


def clear_adj_rib_out(neighbors: Sequence[IPAddress] | None) -> str:
    """Withdraw everything ever announced to `neighbors` through the API."""
    return check_line(_selector(neighbors) + "clear adj-rib out")


def flush_adj_rib_out(neighbors: Sequence[IPAddress] | None) -> str:
    """Resend everything currently announced to `neighbors`."""
    return check_line(_selector(neighbors) + "flush adj-rib out")


def reload() -> str:
    """Reread the configuration file (same effect as SIGUSR1)."""
    return check_line("reload")


# --------------------------------------------------------------------------
# Answers

# Plain-text lines ExaBGP writes to its helper instead of JSON: command
# acknowledgements (exabgp.api.ack) and progress notes of some commands.
ANSWER_DONE = "done"
ANSWER_ERROR = "error"
ANSWER_SHUTDOWN = "shutdown"
ANSWER_INFO = "info"
_ANSWERS = {"done": ANSWER_DONE, "error": ANSWER_ERROR, "shutdown": ANSWER_SHUTDOWN}
_INFO_LINES = frozenset(
    {"reload in progress", "shutdown in progress", "restart in progress", "teardown scheduled"}
)


def parse_answer(line: str) -> str | None:
    """ANSWER_DONE/ERROR/SHUTDOWN/INFO for a plain-text acknowledgement,
    None for anything else (which should then go to parse_message)."""
    text = line.strip()
    if text in _ANSWERS:
        return _ANSWERS[text]
    if text in _INFO_LINES:
        return ANSWER_INFO
    if text.startswith("{") and '"answer"' in text:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if isinstance(data, dict) and set(data) <= {"answer", "message"}:
            return _ANSWERS.get(str(data.get("answer")), ANSWER_INFO)
    return None


# --------------------------------------------------------------------------
# Messages

_IGNORED_TYPES = frozenset({"open", "keepalive", "refresh", "operational", "fsm", "signal"})


def parse_message(line: str) -> list[BgpEvent]:
    """Typed events for one JSON line from ExaBGP.

    Message types that carry nothing l3fabric acts on return []; anything
    malformed raises ParseError (and nothing else), so the caller can count
    it and go on.
    """
    try:
        return _parse(line)
    except ParseError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        raise ParseError(f"malformed message: {exc.__class__.__name__}: {exc}") from None


def _parse(line: str) -> list[BgpEvent]:
    if not isinstance(line, str):
        raise ParseError(f"expected a str, got {type(line).__name__}")
    text = line.strip()
    if not text:
        raise ParseError("empty line")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    if "exabgp" not in data:
        raise ParseError("not an ExaBGP message (no 'exabgp' key)")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ParseError("message has no 'type'")
    if kind == "state":
        return _parse_state(data)
    if kind == "update":
        return _parse_update(data)
    if kind == "notification":
        return _parse_notification(data)
    if kind == "negotiated":
        return _parse_negotiated(data)
    # Known types we do not act on, and types a later ExaBGP may add.
    return []


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(f"{what} is not an object")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{what} is not a string")
    return value


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(f"{what} is not an integer")
    return value


def _ip(value: object, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(_str(value, what))
    except ValueError:
        raise ParseError(f"{what} {value!r} is not an IP address") from None


def _peer(data: dict[str, Any]) -> tuple[dict[str, Any], IPAddress]:
    neighbor = _obj(data.get("neighbor"), "neighbor")
    address = _obj(neighbor.get("address"), "neighbor.address")
    return neighbor, _ip(address.get("peer"), "neighbor.address.peer")


def _parse_state(data: dict[str, Any]) -> list[BgpEvent]:
    neighbor, peer = _peer(data)
    raw_state = _str(neighbor.get("state"), "neighbor.state")
    try:
        state = PeerState(raw_state)
    except ValueError:
        raise ParseError(f"unknown peer state {raw_state!r}") from None
    reason = _str(neighbor.get("reason", ""), "neighbor.reason")
    events: list[BgpEvent] = []
    match = _DOWN_NOTIFICATION_RE.match(reason)
    if state is PeerState.DOWN and match:
        code, subcode = int(match[2]), int(match[3])
        name = notification_name(code, subcode)
        reason = f"{reason}: {name}"
        if match[1] == "sent":
            # ExaBGP reports what it sent only in the down reason; a received
            # notification arrives as its own message with the peer's text.
            # It goes first, as a received one does: the RIB must know the
            # session ended with a NOTIFICATION when it sees the session end.
            events.append(NotificationEvent(peer, "sent", code, subcode, name))
    events.append(PeerStateEvent(peer, state, reason))
    return events


def _parse_notification(data: dict[str, Any]) -> list[BgpEvent]:
    if "neighbor" not in data:
        # {"notification": "shutdown"}: ExaBGP is exiting; the supervisor
        # sees the process go and says so itself.
        return []
    neighbor, peer = _peer(data)
    body = _obj(neighbor.get("notification"), "neighbor.notification")
    direction = _str(neighbor.get("direction", "receive"), "neighbor.direction")
    code = _int(body.get("code"), "notification.code")
    subcode = _int(body.get("subcode"), "notification.subcode")
    message = _str(body.get("message", ""), "notification.message")
    text = message or notification_name(code, subcode)
    return [
        NotificationEvent(
            peer, "received" if direction == "receive" else "sent", code, subcode, text
        )
    ]


def _parse_negotiated(data: dict[str, Any]) -> list[BgpEvent]:
    neighbor, peer = _peer(data)
    body = _obj(neighbor.get("negotiated"), "neighbor.negotiated")
    hold_time = _ranged(body.get("hold_time"), "negotiated.hold_time", 0, limits.HOLD_TIME_MAX)
    if 0 < hold_time < limits.HOLD_TIME_MIN:
        raise ParseError(f"negotiated.hold_time {hold_time} is neither 0 nor at least 3 (RFC 4271)")
    asn4 = body.get("asn4")
    if not isinstance(asn4, bool):
        raise ParseError("negotiated.asn4 is not a boolean")
    raw_refresh = _str(body.get("refresh"), "negotiated.refresh")
    if raw_refresh not in {r.value for r in RouteRefresh}:
        raise ParseError(f"unknown negotiated.refresh {raw_refresh!r}")
    # RFC 8654: 4096 octets, or up to 65535 with extended messages.
    size = _ranged(body.get("message_size", 4096), "negotiated.message_size", 4096, 65535)
    families = _families(body.get("families"), "negotiated.families")
    add_path = _obj(body.get("add_path", {}), "negotiated.add_path")
    send = _families(add_path.get("send", []), "negotiated.add_path.send")
    receive = _families(add_path.get("receive", []), "negotiated.add_path.receive")
    for direction, listed in (("send", send), ("receive", receive)):
        if extra := [f.value for f in listed if f not in families]:
            raise ParseError(
                f"negotiated.add_path.{direction} has families not negotiated: {extra}"
            )
    refresh = RouteRefresh(raw_refresh)
    return [NegotiatedEvent(peer, hold_time, asn4, families, refresh, send, receive, size)]


def _ranged(value: object, what: str, low: int, high: int) -> int:
    number = _int(value, what)
    if not low <= number <= high:
        raise ParseError(f"{what} {number} is out of range {low}..{high}")
    return number


def _families(value: object, what: str) -> tuple[Family, ...]:
    """The families of a list of "afi safi" names that l3fabric knows, in
    order, once each; the others are left out."""
    if not isinstance(value, list):
        raise ParseError(f"{what} is not a list")
    known: dict[Family, None] = {}
    for item in value:
        name = _str(item, f"{what} entry")
        afi, _, safi = name.partition(" ")
        if not afi or not safi or " " in safi:
            raise ParseError(f"{what} entry {name!r} is not 'AFI SAFI'")
        try:
            known[Family(name)] = None
        except ValueError:
            continue  # a family this node never offers: nothing of it is ours
    return tuple(known)


def _family(name: str) -> int | None:
    """4 or 6 for "ipv4 unicast"/"ipv6 unicast", None for families we skip."""
    afi, _, safi = name.partition(" ")
    if safi != "unicast":
        return None
    return _AFI_BY_NAME.get(afi)


def _nlri_prefix(item: object, version: int) -> IPNetwork:
    # Non-compact JSON gives {"nlri": "P"} (plus "path-information" with
    # add-path); exabgp.api.compact gives the bare string.
    if type(item) is str:
        text = item
    else:
        text = _str(_obj(item, "nlri").get("nlri") if isinstance(item, dict) else item, "nlri")
    try:
        prefix = parse_prefix(text)
    except ValueError:
        raise ParseError(f"nlri {text!r} is not a prefix") from None
    if prefix.version != version:
        raise ParseError(f"nlri {text} is not IPv{version}")
    return prefix


def _parse_update(data: dict[str, Any]) -> list[BgpEvent]:
    neighbor, peer = _peer(data)
    if neighbor.get("direction", "receive") != "receive":
        return []
    message = _obj(neighbor.get("message"), "neighbor.message")
    if "eor" in message:
        eor_body = _obj(message["eor"], "eor")
        version = _family(
            f"{_str(eor_body.get('afi'), 'eor.afi')} {_str(eor_body.get('safi'), 'eor.safi')}"
        )
        return [EndOfRibEvent(peer, version)] if version else []
    update = _obj(message.get("update"), "message.update")
    announced: list[tuple[IPNetwork, PathAttributes]] = []
    announce_body = _obj(update.get("announce", {}), "update.announce")
    if announce_body:
        attributes = _obj(update.get("attribute", {}), "update.attribute")
        for family_name, by_nexthop in announce_body.items():
            version = _family(family_name)
            if version is None:
                continue
            # An IPv6 UPDATE may carry a global and a link-local next hop
            # (RFC 2545); ExaBGP lists the prefix under each of them. The
            # global one is the one a route can use: the link-local one only
            # stands when it is all there is.
            chosen: dict[IPNetwork, PathAttributes] = {}
            next_hops = _obj(by_nexthop, "announce family")
            for nexthop_text, nlris in next_hops.items():
                attrs = _attributes(attributes, _ip(nexthop_text, "next hop"))
                if not isinstance(nlris, list):
                    raise ParseError("announced nlri list is not a list")
                if len(next_hops) == 1:
                    # One next hop (every IPv4 UPDATE): nothing to choose.
                    announced.extend((_nlri_prefix(item, version), attrs) for item in nlris)
                    continue
                for item in nlris:
                    prefix = _nlri_prefix(item, version)
                    current = chosen.get(prefix)
                    if current is None or (
                        current.next_hop.is_link_local and not attrs.next_hop.is_link_local
                    ):
                        chosen[prefix] = attrs
            announced.extend(chosen.items())
    withdrawn: list[IPNetwork] = []
    for family_name, nlris in _obj(update.get("withdraw", {}), "update.withdraw").items():
        version = _family(family_name)
        if version is None:
            continue
        if not isinstance(nlris, list):
            raise ParseError("withdrawn nlri list is not a list")
        withdrawn.extend(_nlri_prefix(n, version) for n in nlris)
    if not announced and not withdrawn:
        return []
    return [UpdateEvent(peer, tuple(announced), tuple(withdrawn))]


def _attributes(attrs: dict[str, Any], next_hop: IPAddress) -> PathAttributes:
    origin = _str(attrs.get("origin", "igp"), "origin")
    if origin not in _ORIGINS:
        raise ParseError(f"unknown origin {origin!r}")
    local_pref = attrs.get("local-preference")
    med = attrs.get("med")
    originator = attrs.get("originator-id")
    clusters = attrs.get("cluster-list", [])
    if not isinstance(clusters, list):
        raise ParseError("cluster-list is not a list")
    return PathAttributes(
        next_hop=next_hop,
        as_path=_as_path(attrs.get("as-path", {})),
        local_pref=None if local_pref is None else _int(local_pref, "local-preference"),
        med=None if med is None else _int(med, "med"),
        origin=origin,
        originator_id=None if originator is None else _ip(originator, "originator-id"),
        cluster_list=tuple(_ip(c, "cluster-list entry") for c in clusters),
    )


def _as_path(value: object) -> tuple[int, ...]:
    """Flatten ExaBGP's {"0": {"element": "as-sequence", "value": [..]}, ..}.

    AS_SET members are kept in order after the preceding sequence: nothing in
    l3fabric weighs path length by segment type, and loop detection only asks
    whether an ASN is present.
    """
    if isinstance(value, list):  # older encoders: a flat list
        return tuple(_int(asn, "as-path entry") for asn in value)
    segments = _obj(value, "as-path")
    path: list[int] = []
    for key in sorted(segments, key=lambda k: int(k) if str(k).isdigit() else -1):
        if not str(key).isdigit():
            raise ParseError(f"as-path segment key {key!r} is not an index")
        segment = _obj(segments[key], "as-path segment")
        members = segment.get("value")
        if not isinstance(members, list):
            raise ParseError("as-path segment value is not a list")
        path.extend(_int(asn, "as-path entry") for asn in members)
    return tuple(path)
