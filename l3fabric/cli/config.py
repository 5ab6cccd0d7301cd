"""`l3fabric config reload`: the running agent reads its config file again."""

from __future__ import annotations

import argparse
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, call, common_options, emit


def cmd_config_reload(args: argparse.Namespace) -> int:
    result = call(args, "config.reload")
    emit(result, args.output, _table)
    return EXIT_OK if result.get("reloaded") else EXIT_FAIL


def _table(result: dict[str, Any]) -> str:
    generation = result.get("generation")
    if not result.get("reloaded"):
        lines = [f"reload rejected, still running config generation {generation}:"]
        return "\n".join(lines + [f"  {e}" for e in result.get("errors", [])])
    changed = result.get("changed") or []
    what = ", ".join(changed) if changed else "nothing changed"
    return f"reloaded: config generation {generation} ({what})"


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="the running agent's configuration")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    reload = sub.add_parser(
        "reload",
        parents=[common_options()],
        help="read the config file again (as SIGHUP does) and say what changed",
    )
    reload.set_defaults(func=cmd_config_reload)
