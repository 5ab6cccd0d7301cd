"""`l3fabric lab`: run containerlab topology files on network namespaces.

Real containerlab runs the same files with Docker; this runner needs only
root, iproute2, util-linux (nsenter, unshare) and the daemons. See docs/lab.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, format_table


def _lab(args: argparse.Namespace) -> Any:
    from l3fabric.lab.deploy import open_lab
    from l3fabric.lab.paths import LAB_ROOT, LabPaths
    from l3fabric.lab.topology import load_topology

    root = Path(args.lab_root) if args.lab_root else LAB_ROOT
    topology = load_topology(args.file, name=args.name, lab_root=root)
    paths = LabPaths(root, topology.name)
    return open_lab(topology, paths, prometheus=getattr(args, "prometheus", False))


def _progress(line: str) -> None:
    print(line, flush=True)


def _progress_stderr(line: str) -> None:
    """Progress when stdout carries a document (-o json)."""
    print(line, file=sys.stderr, flush=True)


def cmd_deploy(args: argparse.Namespace) -> int:
    from l3fabric.lab.deploy import deploy, inspect

    lab = _lab(args)
    started = time.monotonic()
    _progress(f"deploying lab {lab.name} from {lab.topology.path}")
    deploy(lab, workloads=args.workloads, attach=args.attach, progress=_progress)
    _progress(f"lab {lab.name} deployed in {time.monotonic() - started:.1f}s")
    print(_inspect_table(inspect(lab)))
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    from l3fabric.lab.deploy import destroy

    lab = _lab(args)
    started = time.monotonic()
    removed = destroy(lab, progress=_progress)
    _progress(
        f"lab {lab.name} destroyed in {time.monotonic() - started:.1f}s"
        if removed
        else f"lab {lab.name}: nothing to remove"
    )
    return EXIT_OK


def _inspect_table(rows: list[dict[str, Any]]) -> str:
    table = format_table(
        ("NODE", "NETNS", "KIND", "IMAGE", "RUNS", "STATE", "RESTARTS", "ADDRESSES", "PID"),
        [
            (
                r["node"],
                r["netns"],
                r["kind"],
                r["image"],
                r["runs"],
                r["state"],
                r["restarts"] if r["restart_policy"] != "no" else "-",
                ", ".join(r["addresses"]) or "-",
                r["pid"] or "-",
            )
            for r in rows
        ],
    )
    stale = [line for row in rows for line in row.get("stale_binds", [])]
    if stale:
        table += "\n\n" + "\n".join(f"warning: {line}" for line in stale)
    for row in rows:
        if row.get("url"):
            table += (
                f"\n\nPrometheus: {row['url']} (on the lab's management network, eth0 of every "
                f"node)\nfrom the host: {row['reach']}"
            )
    return table


def cmd_inspect(args: argparse.Namespace) -> int:
    from l3fabric.lab.deploy import inspect

    rows = inspect(_lab(args))
    if args.output == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(_inspect_table(rows))
    return EXIT_OK if all(r["state"] == "running" for r in rows) else EXIT_FAIL


def cmd_exec(args: argparse.Namespace) -> int:
    from l3fabric.lab.deploy import exec_in_node
    from l3fabric.lab.runtime import LabError

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("lab exec: give a command after --, e.g. lab exec FILE NODE -- ip route")
    return exec_in_node(_lab(args), args.node, command)


def cmd_logs(args: argparse.Namespace) -> int:
    from l3fabric.lab.deploy import node_context
    from l3fabric.lab.nodefiles import log_files, select_logs, show_logs
    from l3fabric.lab.runtime import LabError

    lab = _lab(args)
    state = lab.state()
    if args.node not in {n.name for n in lab.topology.nodes}:
        raise LabError(f"lab {lab.name} has no node {args.node!r}")
    files = log_files(state, node_context(lab, state, args.node))
    chosen = select_logs(files, args.daemon, args.node)
    with contextlib.suppress(KeyboardInterrupt):  # the end of -f
        show_logs(chosen, sys.stdout, follow=args.follow)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from l3fabric.lab.verify import render_report, verify

    lab = _lab(args)
    progress = _progress_stderr if args.output == "json" else _progress
    deadline = time.monotonic() + args.wait
    while True:
        report = verify(lab, parallel=args.parallel, timeout=args.timeout, progress=progress)
        if report.ok or time.monotonic() >= deadline:
            break
        failed = sum(1 for p in report.probes if not p.ok) + sum(
            1 for c in report.checks if not c.ok
        )
        progress(f"{failed} failures; trying again (--wait)")
        time.sleep(1)
    if args.output == "json":
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(render_report(report))
    return EXIT_OK if report.ok else EXIT_FAIL


def cmd_status(args: argparse.Namespace) -> int:
    from l3fabric.cli.lab_status import render_table
    from l3fabric.lab.status import gather, healthy, status_row

    rows = [status_row(r) for r in gather(_lab(args), timeout=args.timeout)]
    if args.output == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(render_table(rows))
    return EXIT_OK if healthy(rows) else EXIT_FAIL


def cmd_graph(args: argparse.Namespace) -> int:
    from l3fabric.lab.graph import collect, render_svg
    from l3fabric.lab.graph_html import render_html

    lab = _lab(args)
    fabric = collect(lab)
    up = sum(1 for s in fabric.sessions if s.established)
    summary = (
        f"{len(fabric.nodes)} nodes, {len(fabric.links)} links, "
        f"{len(fabric.sessions)} BGP sessions ({up} established)"
    )
    # Without --html the SVG goes to -o's default, as it always has.
    svg_file = args.output_file or (None if args.html else "fabric.svg")
    if svg_file == "-":
        sys.stdout.write(render_svg(fabric))
    elif svg_file is not None:
        Path(svg_file).write_text(render_svg(fabric))
        print(f"wrote {svg_file}: {summary}")
    if args.html == "-":
        sys.stdout.write(render_html(fabric))
    elif args.html:
        Path(args.html).write_text(render_html(fabric))
        print(f"wrote {args.html}: {summary}", file=sys.stderr if svg_file == "-" else sys.stdout)
    return EXIT_OK


def _handled(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Lab errors become messages and exit codes here, so that whichever
    parser calls the command (l3fabric's or main() below) prints them the
    same way: every topology problem on its own line, exit 2; a failed step, 1."""

    def wrapper(args: argparse.Namespace) -> int:
        from l3fabric.lab.runtime import LabError
        from l3fabric.lab.topology import TopologyError

        try:
            return func(args)
        except TopologyError as exc:
            for line in exc.errors:
                print(line, file=sys.stderr)
            return EXIT_USAGE
        except LabError as exc:
            if getattr(args, "debug", False):
                raise
            print(f"l3fabric lab: {exc}", file=sys.stderr)
            return EXIT_FAIL

    return wrapper


def register(subparsers: Any) -> None:
    """Add `lab` and its subcommands to the l3fabric parser."""
    lab = subparsers.add_parser(
        "lab", help="run containerlab topologies on network namespaces"
    ).add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", help="containerlab topology file (*.clab.yml)")
    common.add_argument("--name", help="lab name instead of the file's name: (labs side by side)")
    common.add_argument("--lab-root", help=argparse.SUPPRESS)

    p = lab.add_parser("deploy", parents=[common], help="create the lab's namespaces and daemons")
    p.add_argument("--workloads", type=int, default=0, metavar="N", help="workloads per node")
    p.add_argument(
        "--attach",
        choices=("api", "cni"),
        default="api",
        help="make workloads with the agent's API (default) or as a container runtime does, "
        "through the installed CNI plugin",
    )
    p.add_argument(
        "--prometheus",
        action="store_true",
        help="add a Prometheus node on the lab's management network (eth0), scraping every agent",
    )
    p.set_defaults(func=_handled(cmd_deploy))
    p = lab.add_parser("destroy", parents=[common], help="remove everything the lab made")
    p.set_defaults(func=_handled(cmd_destroy))
    p = lab.add_parser("inspect", parents=[common], help="nodes, state, addresses, pids")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=_handled(cmd_inspect))
    p = lab.add_parser("exec", parents=[common], help="run a command inside a node")
    p.add_argument("node")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=_handled(cmd_exec))
    p = lab.add_parser("logs", parents=[common], help="a node's daemon logs")
    p.add_argument("node")
    p.add_argument(
        "--daemon",
        metavar="NAME",
        help="agent, exabgp, bird, frr (every FRR daemon), frr-bgpd, gobgpd, dns, prometheus, "
        "etcd, holder (default: every daemon of the node)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is added")
    p.set_defaults(func=_handled(cmd_logs))
    p = lab.add_parser("verify", parents=[common], help="check the network rules with packets")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--parallel", type=int, default=8, help="probes at once (default 8)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per probe (default 3)")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="repeat until everything passes or SECONDS have gone by (routes converging)",
    )
    p.set_defaults(func=_handled(cmd_verify))
    p = lab.add_parser(
        "status", parents=[common], help="every node: state, AS, sessions, workloads, routes"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds to wait for each agent (default 5)",
    )
    p.set_defaults(func=_handled(cmd_status))
    p = lab.add_parser(
        "graph", parents=[common], help="draw nodes, links and BGP sessions (SVG, HTML)"
    )
    p.add_argument(
        "-o",
        dest="output_file",
        default=None,
        help="SVG file, - for stdout (default fabric.svg, unless only --html is given)",
    )
    p.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML page: the picture and tables of nodes and "
        "sessions (- for stdout)",
    )
    p.set_defaults(func=_handled(cmd_graph))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l3fabric")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ValueError, KeyError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"l3fabric: {message}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
