"""The `l3fabric` command line.

Everything except `agent`, `check-config` and the template renderers talks to
a running agent through its control socket. Errors are one line on stderr and
a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from l3fabric import __version__
from l3fabric.cli import (
    agent,
    bird,
    cni,
    cnm,
    config,
    datastore,
    dns,
    fabric,
    ipam,
    lab,
    reconcile,
    routes,
    service,
    status,
    workload,
)
from l3fabric.cli.output import EXIT_FAIL, CliError

# In the order `l3fabric --help` lists them.
COMMANDS = (
    agent,
    workload,
    ipam,
    status,
    routes,
    reconcile,
    config,
    bird,
    lab,
    cni,
    cnm,
    dns,
    service,
    datastore,
    fabric,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l3fabric", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"l3fabric {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


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
