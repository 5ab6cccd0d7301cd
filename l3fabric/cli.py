"""The `l3fabric` command line.

Everything except `agent`, `check-config` and the template renderers talks to
a running agent through its control socket. Errors are one line on stderr and
a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from l3fabric import __version__, control

EXIT_OK = 0
EXIT_FAIL = 1  # the command ran and the answer is "no" / the agent said no
EXIT_USAGE = 2  # bad arguments or a bad config file


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


# -- output --------------------------------------------------------------------


def emit(data: Any, fmt: str, table: Callable[[Any], str]) -> None:
    if fmt == "json":
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=True, default_flow_style=False), end="")
    else:
        print(table(data))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    try:
        return control.call(method, params, socket_path=args.socket)
    except control.ControlError as exc:
        raise CliError(exc.message) from None


# -- commands --------------------------------------------------------------------


def cmd_agent(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from l3fabric import logs
    from l3fabric.agent.daemon import Agent
    from l3fabric.agent.metrics import Metrics
    from l3fabric.config import ConfigError, load_config
    from l3fabric.dataplane import NetlinkDataplane
    from l3fabric.datastore import open_datastore

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    logs.setup(config.log.level, config.log.format)
    ds = config.datastore
    store = open_datastore(ds.type, path=ds.path, endpoints=ds.endpoints, prefix=ds.prefix)
    agent = Agent(
        config,
        store=store,
        dataplane=NetlinkDataplane(),
        metrics=Metrics(CollectorRegistry()),
    )
    return agent.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    from l3fabric.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.file}: ok (node {config.node.name}, {len(config.pools)} pools)")
    return EXIT_OK


def cmd_workload_add(args: argparse.Namespace) -> int:
    result = _call(args, "workload.add", name=args.name, netns=args.netns, ips=args.ip or [])
    emit(result, args.output, lambda w: " ".join(w["addresses"]))
    return EXIT_OK


def cmd_workload_del(args: argparse.Namespace) -> int:
    result = _call(args, "workload.del", name=args.name)
    emit(result, args.output, lambda w: f"deleted {w['name']}")
    return EXIT_OK


def cmd_workload_list(args: argparse.Namespace) -> int:
    result = _call(args, "workload.list")

    def table(items: list[dict[str, Any]]) -> str:
        rows = [
            (w["name"], w["netns"], ",".join(w["addresses"]), w["host_iface"], w["node"])
            for w in items
        ]
        return format_table(("NAME", "NETNS", "ADDRESSES", "HOST-IFACE", "NODE"), rows)

    emit(result, args.output, table)
    return EXIT_OK


def cmd_ipam_show(args: argparse.Namespace) -> int:
    result = _call(args, "ipam.show")

    def table(data: dict[str, Any]) -> str:
        pools = format_table(
            ("POOL", "BLOCK-SIZE", "SIZE", "IN-USE"),
            [(p["cidr"], p["block_size"], p["size"], p["used"]) for p in data.get("pools", [])],
        )
        blocks = format_table(
            ("BLOCK", "NODE", "IN-USE", "FREE"),
            [
                (b["cidr"], b.get("node") or "-", b["used"], b["free"])
                for b in data.get("blocks", [])
            ],
        )
        return pools + "\n\n" + blocks

    emit(result, args.output, table)
    return EXIT_OK


def cmd_ipam_check(args: argparse.Namespace) -> int:
    result = _call(args, "ipam.check", repair=args.repair)

    def table(data: dict[str, Any]) -> str:
        lines = [f"problem: {p}" for p in data.get("problems", [])]
        lines += [f"repaired: {r}" for r in data.get("repaired", [])]
        return "\n".join(lines) or "no problems found"

    emit(result, args.output, table)
    unrepaired = len(result.get("problems", [])) - len(result.get("repaired", []))
    return EXIT_OK if unrepaired <= 0 else EXIT_FAIL


def cmd_reconcile(args: argparse.Namespace) -> int:
    result = _call(args, "reconcile")
    emit(result, args.output, lambda r: json.dumps(r, sort_keys=True))
    return EXIT_OK if not result.get("errors") else EXIT_FAIL


def cmd_status(args: argparse.Namespace) -> int:
    result = _call(args, "status")

    def table(s: dict[str, Any]) -> str:
        head = (
            f"node {s['node']} (AS {s['asn']}, {', '.join(s['addresses'])}): {s['state']}"
            f"{'' if s['state'] == 'ready' else ' - ' + s['reason']}, "
            f"{s['workloads']} workloads, up {_duration(s['uptime_seconds'])}"
        )
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


def cmd_routes(args: argparse.Namespace) -> int:
    view = "advertised" if args.advertised else "received" if args.received else "programmed"
    if args.peer and view != "received":
        raise CliError("--peer goes with --received", EXIT_USAGE)
    params: dict[str, Any] = {"view": view}
    if args.peer:
        params["peer"] = args.peer
    result = _call(args, "routes", **params)
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
                    ("best" if r["best"] else "accepted")
                    if r["accepted"]
                    else f"rejected: {r['reason']}",
                )
                for r in routes
            ]
            return format_table(("PREFIX", "PEER", "NEXT-HOP", "AS-PATH", "STATUS"), rows)
        kernel = [(r["prefix"], ", ".join(r["nexthops"]), r["kind"]) for r in routes]
        return format_table(("PREFIX", "NEXT-HOPS", "KIND"), kernel)

    emit(result, args.output, table)
    return EXIT_OK


# -- parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l3fabric", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"l3fabric {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"agent control socket (default ${control.SOCKET_ENV} or {control.DEFAULT_SOCKET})",
    )
    common.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("agent", help="run the node agent in the foreground")
    p.add_argument("--config", required=True, help="node config file (YAML)")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("check-config", help="validate a node config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    wl = sub.add_parser("workload", help="add, delete and list workloads").add_subparsers(
        dest="workload_command", required=True, metavar="ACTION"
    )
    p = wl.add_parser("add", parents=[common], help="wire a workload into a network namespace")
    p.add_argument("name")
    p.add_argument("--netns", required=True, help="a name under /run/netns or a path")
    p.add_argument("--ip", action="append", help="request this address (repeatable)")
    p.set_defaults(func=cmd_workload_add)
    p = wl.add_parser("del", parents=[common], help="remove a workload")
    p.add_argument("name")
    p.set_defaults(func=cmd_workload_del)
    p = wl.add_parser("list", parents=[common], help="list this node's workloads")
    p.set_defaults(func=cmd_workload_list)

    ipam = sub.add_parser("ipam", help="address management").add_subparsers(
        dest="ipam_command", required=True, metavar="ACTION"
    )
    p = ipam.add_parser("show", parents=[common], help="pools, blocks and usage")
    p.set_defaults(func=cmd_ipam_show)
    p = ipam.add_parser("check", parents=[common], help="find leaks, duplicates, orphan blocks")
    p.add_argument("--repair", action="store_true", help="fix what is safe to fix")
    p.set_defaults(func=cmd_ipam_check)

    p = sub.add_parser("status", parents=[common], help="agent state and BGP peers")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("health", parents=[common], help="readiness (or liveness) as an exit code")
    p.add_argument("--live", action="store_true", help="check liveness instead of readiness")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the agent")
    p.set_defaults(func=cmd_health)
    p = sub.add_parser("routes", parents=[common], help="advertised, received or kernel routes")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--advertised", action="store_true", help="what this node announces")
    view.add_argument("--received", action="store_true", help="what peers sent, with verdicts")
    view.add_argument(
        "--programmed", action="store_true", help="l3fabric's routes in the kernel (default)"
    )
    p.add_argument("--peer", help="with --received: only this peer")
    p.add_argument("--prefix", help="only routes inside this prefix")
    p.set_defaults(func=cmd_routes)
    p = sub.add_parser("reconcile", parents=[common], help="run a reconcile pass now")
    p.set_defaults(func=cmd_reconcile)

    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    from l3fabric import cli_bird, cli_lab

    cli_bird.register(sub)
    cli_lab.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except CliError as exc:
        if args.debug:
            raise
        print(f"l3fabric: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"l3fabric: {type(exc).__name__}: {exc} (--debug shows more)", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
