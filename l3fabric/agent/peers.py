"""How BGP peers look to operators: the status row and the per-peer metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from l3fabric.agent.metrics import Metrics
from l3fabric.bgp.events import NegotiatedEvent
from l3fabric.bgp.exabgp_config import NeighborSpec
from l3fabric.bgp.rib_types import PeerStats
from l3fabric.model import IPAddress

SESSION_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")


@dataclass
class PeerStatus:
    """What `l3fabric status` shows for one configured neighbour."""

    address: IPAddress
    kind: str  # mesh | route-reflector | external
    asn: int
    name: str
    state: str = "Idle"
    since: float = 0.0  # monotonic clock
    info: str = ""
    password: bool = False
    flaps: int = 0
    advertised: int = 0


def peer_row(
    status: PeerStatus, rib: PeerStats | None, md5: dict[str, int], now: float
) -> dict[str, Any]:
    """One row of the peer table (docs/cli.md names these fields)."""
    info = status.info
    if status.state != "Established":
        info = md5_hint(status.password, md5) or info
    return {
        "peer": str(status.address),
        "name": status.name,
        "type": status.kind,
        "asn": status.asn,
        "state": status.state,
        "since_seconds": round(now - status.since, 1),
        "received": rib.received if rib else 0,
        "accepted": rib.accepted if rib else 0,
        "rejected": dict(rib.rejected) if rib else {},
        "advertised": status.advertised if status.state == "Established" else 0,
        "flaps": status.flaps,
        "info": info,
    }


def peer_detail(
    status: PeerStatus,
    spec: NeighborSpec,
    rib: PeerStats | None,
    md5: dict[str, int],
    now: float,
    held_down_until: float,
    negotiated: NegotiatedEvent | None = None,
) -> dict[str, Any]:
    """`status --peer P`: the row plus the session's configuration, its
    graceful-restart state and its history (docs/cli.md names these fields).
    The top-level timers and families are what this node offers;
    `negotiated` is what the OPEN exchange of the Established session
    settled on (ExaBGP's "negotiated" message), null otherwise."""
    row = peer_row(status, rib, md5, now)
    stale = rib.stale if rib else 0
    restart_time = spec.graceful_restart
    if restart_time is None:
        gr_state = "disabled"
    elif stale and status.state != "Established":
        gr_state = "peer restarting"  # its routes are kept, marked stale
    elif stale:
        gr_state = "waiting for end-of-rib"
    else:
        gr_state = "ready"
    established = status.state == "Established"
    return {
        **row,
        "local_address": str(spec.local_address),
        "local_asn": spec.local_as,
        "hold_time": spec.hold_time,
        "keepalive_interval": spec.hold_time // 3,
        "families": list(spec.families),
        "passive": spec.passive,
        "md5": spec.md5_password is not None,
        "multihop_ttl": spec.multihop_ttl,
        "graceful_restart": {
            "enabled": restart_time is not None,
            "restart_time": restart_time,
            "state": gr_state,
            "stale_routes": stale,
        },
        "uptime_seconds": row["since_seconds"] if established else None,
        "last_error": (rib.last_down_reason if rib else "") or ("" if established else status.info),
        "held_down_seconds": round(max(0.0, held_down_until - now), 1),
        "max_prefixes": rib.max_prefixes if rib else None,
        "announcements": rib.announcements if rib else 0,
        "withdrawals": rib.withdrawals if rib else 0,
        "teardowns": rib.teardowns if rib else 0,
        "negotiated": negotiated_view(negotiated) if established and negotiated else None,
    }


def negotiated_view(negotiated: NegotiatedEvent) -> dict[str, Any]:
    """The `negotiated` object of `status --peer` (docs/cli.md names these)."""
    return {
        "hold_time": negotiated.hold_time,
        "keepalive_interval": negotiated.keepalive_interval,
        "asn4": negotiated.asn4,
        "families": [f.value for f in negotiated.families],
        "route_refresh": negotiated.route_refresh.value,
        "add_path": {
            "send": [f.value for f in negotiated.add_path_send],
            "receive": [f.value for f in negotiated.add_path_receive],
        },
    }


def md5_hint(password: bool, md5: dict[str, int]) -> str:
    """Why a session may be down, from the kernel's node-wide TCP-MD5 drop
    counters (increases since the agent started)."""
    if password and md5.get("TCPMD5Failure", 0) > 0:
        return f"MD5 signature mismatch: kernel dropped {md5['TCPMD5Failure']} segments"
    if password and md5.get("TCPMD5NotFound", 0) > 0:
        return "MD5 mismatch: peer sends no signature (is its password set?)"
    if not password and md5.get("TCPMD5Unexpected", 0) > 0:
        return "MD5 mismatch: peer signs its segments but no password is configured here"
    return ""


class PeerMetrics:
    """Per-peer gauges; a peer that is gone stops having series rather than
    freezing them."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._peers: set[str] = set()
        self._reasons: dict[str, set[str]] = {}

    def state(self, peer: str, state: str) -> None:
        for candidate in SESSION_STATES:
            self._m.bgp_session_state.labels(peer, candidate).set(1 if candidate == state else 0)

    def export(self, rows: list[dict[str, Any]], changed_at: dict[str, float]) -> None:
        m = self._m
        seen: set[str] = set()
        for row in rows:
            peer = row["peer"]
            seen.add(peer)
            m.bgp_session_last_change.labels(peer).set(changed_at[peer])
            for direction in ("received", "accepted", "advertised"):
                m.bgp_prefixes.labels(peer, direction).set(row[direction])
            reasons = set(row["rejected"])
            for reason, count in row["rejected"].items():
                m.bgp_prefixes_rejected.labels(peer, reason).set(count)
            for reason in self._reasons.get(peer, set()) - reasons:
                m.bgp_prefixes_rejected.labels(peer, reason).set(0)
            self._reasons[peer] = self._reasons.get(peer, set()) | reasons
        for peer in self._peers - seen:
            self._remove(peer, self._reasons.pop(peer, set()))
        self._peers = seen

    def _remove(self, peer: str, reasons: set[str]) -> None:
        m = self._m
        series: list[tuple[Any, tuple[str, ...]]] = [(m.bgp_session_last_change, (peer,))]
        series += [(m.bgp_prefixes, (peer, d)) for d in ("received", "accepted", "advertised")]
        series += [(m.bgp_prefixes_rejected, (peer, r)) for r in reasons]
        series += [(m.bgp_session_state, (peer, s)) for s in SESSION_STATES]
        for metric, labels in series:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
