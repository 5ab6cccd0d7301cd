"""`l3fabric status` and `l3fabric health`, through the agent's control socket."""

from __future__ import annotations

import argparse
from typing import Any

from l3fabric import control
from l3fabric.cli.output import (
    EXIT_FAIL,
    EXIT_OK,
    CliError,
    call,
    common_options,
    emit,
    format_table,
)


def cmd_status(args: argparse.Namespace) -> int:
    if args.peer is not None:
        detail = call(args, "status", peer=args.peer)
        emit(detail, args.output, lambda d: _peer_detail_table(d["peer"]))
        return EXIT_OK if detail["peer"]["state"] == "Established" else EXIT_FAIL
    result = call(args, "status")

    def table(s: dict[str, Any]) -> str:
        head = (
            f"node {s['node']} (AS {s['asn']}, {', '.join(s['addresses'])}): {s['state']}"
            f"{'' if s['state'] == 'ready' else ' - ' + s['reason']}, "
            f"{_plural(s['workloads'], 'workload')}, up {_duration(s['uptime_seconds'])}"
        )
        store = s.get("datastore") or {}
        if store and not store.get("up", True):
            head += f"\ndatastore unavailable: {store.get('error')}"
        if not s.get("peers"):
            return head + "\nno BGP peers"
        rows = [
            (
                p["peer"],
                p["type"],
                p["asn"],
                p["state"],
                _duration(p["since_seconds"]),
                f"{p['received']}/{p['accepted']}/{p['advertised']}",
                p["info"],
            )
            for p in s["peers"]
        ]
        headers = ("PEER", "TYPE", "AS", "STATE", "SINCE", "RCVD/ACPT/ADV", "INFO")
        return head + "\n\n" + format_table(headers, rows)

    emit(result, args.output, table)
    peers_up = all(p["state"] == "Established" for p in result.get("peers", []))
    return EXIT_OK if result.get("state") == "ready" and peers_up else EXIT_FAIL


def _peer_detail_table(p: dict[str, Any]) -> str:
    gr = p["graceful_restart"]
    up = p["uptime_seconds"]
    rows = [
        ("peer", f"{p['peer']} ({p['name']}, {p['type']}, AS {p['asn']})"),
        ("local", f"{p['local_address']} AS {p['local_asn']}"),
        ("state", f"{p['state']} for {_duration(p['since_seconds'])}"),
        ("uptime", _duration(up) if up is not None else "-"),
        *_timer_rows(p),
        (
            "graceful restart",
            f"{gr['state']}, restart time {gr['restart_time']}s, {gr['stale_routes']} stale"
            if gr["enabled"]
            else "disabled",
        ),
        ("options", ", ".join(_options(p)) or "-"),
        (
            "prefixes",
            f"{p['received']} received, {p['accepted']} accepted, "
            f"{p['advertised']} advertised, max {p['max_prefixes'] or '-'}",
        ),
        ("flaps", str(p["flaps"])),
        ("held down", _duration(p["held_down_seconds"]) if p["held_down_seconds"] else "no"),
        ("last error", p["last_error"] or "-"),
        ("info", p["info"] or "-"),
    ]
    return "\n".join(f"{k + ':':18}{v}" for k, v in rows)


def _timer_rows(p: dict[str, Any]) -> list[tuple[str, str]]:
    """Hold time and families as the session negotiated them, with what this
    node offers beside; only the offer while there is no session."""
    offered = ", ".join(p["families"])
    negotiated = p.get("negotiated")  # an older agent does not send it
    if not negotiated:
        return [
            ("hold time", f"{p['hold_time']}s offered (keepalive {p['keepalive_interval']}s)"),
            ("families", f"{offered} offered"),
        ]
    capabilities = ["4-octet AS"] if negotiated["asn4"] else []
    if negotiated["route_refresh"] != "absent":
        capabilities.append(f"route refresh ({negotiated['route_refresh']})")
    for direction in ("send", "receive"):
        if negotiated["add_path"][direction]:
            families = ", ".join(negotiated["add_path"][direction])
            capabilities.append(f"add-path {direction} {families}")
    return [
        (
            "hold time",
            f"{negotiated['hold_time']}s (keepalive {negotiated['keepalive_interval']}s), "
            f"offered {p['hold_time']}s",
        ),
        ("families", f"{', '.join(negotiated['families']) or '-'}, offered {offered}"),
        ("capabilities", ", ".join(capabilities) or "-"),
    ]


def _options(p: dict[str, Any]) -> list[str]:
    options = ["passive"] if p["passive"] else []
    if p["md5"]:
        options.append("md5")
    if p["multihop_ttl"] is not None:
        options.append(f"multihop ttl {p['multihop_ttl']}")
    return options


def cmd_health(args: argparse.Namespace) -> int:
    """For probes without HTTP: exit 0 when ready (or, with --live, alive)."""
    try:
        result = control.call("health", {}, socket_path=args.socket, timeout=args.timeout)
    except control.ControlError as exc:
        raise CliError(exc.message) from None
    key = "live" if args.live else "ready"

    def table(h: dict[str, Any]) -> str:
        return f"{key}: {'yes' if h[key] else 'no'} ({h[key + '_reason']})"

    emit(result, args.output, table)
    return EXIT_OK if result[key] else EXIT_FAIL


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def register(subparsers: Any) -> None:
    common = common_options()
    p = subparsers.add_parser("status", parents=[common], help="agent state and BGP peers")
    p.add_argument("--peer", metavar="ADDR", help="one BGP peer in detail")
    p.set_defaults(func=cmd_status)
    p = subparsers.add_parser(
        "health", parents=[common], help="readiness (or liveness) as an exit code"
    )
    p.add_argument("--live", action="store_true", help="check liveness instead of readiness")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")
    p.set_defaults(func=cmd_health)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
