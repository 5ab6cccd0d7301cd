"""`l3fabric routes`: advertised, received or programmed routes, through the
agent's control socket."""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from l3fabric.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    call,
    common_options,
    emit,
    format_table,
)


def cmd_routes(args: argparse.Namespace) -> int:
    view = "advertised" if args.advertised else "received" if args.received else "programmed"
    if args.peer and view == "programmed":
        raise CliError("--peer goes with --received or --advertised", EXIT_USAGE)
    params: dict[str, Any] = {"view": view}
    if args.peer:
        params["peer"] = args.peer
    result = call(args, "routes", **params)
    routes = result["routes"]
    if args.prefix:
        try:
            wanted = ipaddress.ip_network(args.prefix, strict=False)
        except ValueError:
            raise CliError(f"--prefix {args.prefix!r} is not an IP prefix", EXIT_USAGE) from None
        routes = [
            r
            for r in routes
            if ipaddress.ip_network(r["prefix"]).version == wanted.version
            and ipaddress.ip_network(r["prefix"]).subnet_of(wanted)  # type: ignore[arg-type]
        ]
    result["routes"] = routes

    def table(data: dict[str, Any]) -> str:
        if view == "advertised":
            return format_table(
                ("PREFIX", "NEXT-HOP"), [(r["prefix"], r["next_hop"]) for r in routes]
            )
        if view == "received":
            rows = [
                (
                    r["prefix"],
                    r["peer"],
                    r["next_hop"],
                    " ".join(map(str, r["as_path"])) or "-",
                    _received_status(r),
                )
                for r in routes
            ]
            return format_table(("PREFIX", "PEER", "NEXT-HOP", "AS-PATH", "STATUS"), rows)
        kernel = [
            (r["prefix"], ", ".join(r["nexthops"]), r["kind"], r.get("workload") or "-")
            for r in routes
        ]
        return format_table(("PREFIX", "NEXT-HOPS", "KIND", "WORKLOAD"), kernel)

    emit(result, args.output, table)
    return EXIT_OK


# How a path's state reads in the STATUS column (other states read as named).
_STATE_WORDS = {"long-lived-stale": "long-lived stale"}


def _received_status(route: dict[str, Any]) -> str:
    """best / accepted / rejected: REASON, and how stale the path is: "stale"
    through a peer's graceful restart, "long-lived stale" past it (kept, but
    chosen only when no other path is left)."""
    if not route["accepted"]:
        status = f"rejected: {route['reason']}"
    else:
        status = "best" if route["best"] else "accepted"
    # An agent older than the state field only says whether it is stale.
    state = route.get("state") or ("stale" if route.get("stale") else "fresh")
    if state != "fresh":
        status += ", " + _STATE_WORDS.get(state, state)
    return status


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "routes", parents=[common_options()], help="advertised, received or kernel routes"
    )
    view = p.add_mutually_exclusive_group()
    view.add_argument("--advertised", action="store_true", help="what this node announces")
    view.add_argument("--received", action="store_true", help="what peers sent, with verdicts")
    view.add_argument(
        "--programmed", action="store_true", help="l3fabric's routes in the kernel (default)"
    )
    p.add_argument(
        "--peer", help="with --received: only from this peer; with --advertised: sent to it"
    )
    p.add_argument("--prefix", help="only routes inside this prefix")
    p.set_defaults(func=cmd_routes)
