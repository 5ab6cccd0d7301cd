"""`l3fabric agent` and `l3fabric check-config`: the commands that need no
running agent. `agent` runs one (the composition root builds it); this is the
only CLI module that imports the agent."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from l3fabric.cli.output import EXIT_OK, EXIT_USAGE, CliError


def cmd_agent(args: argparse.Namespace) -> int:
    # The one command that runs the agent itself: everything else is a client.
    from l3fabric.agent import main as agent_main
    from l3fabric.config import ConfigError

    try:
        return agent_main.run(args.config)
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


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


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("agent", help="run the node agent in the foreground")
    p.add_argument("--config", required=True, help="node config file (YAML)")
    p.set_defaults(func=cmd_agent)

    p = subparsers.add_parser("check-config", help="validate a node config file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)
