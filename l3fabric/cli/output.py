"""What the command modules share: exit codes, CliError, the control call,
the --socket/--output options and the json/yaml/table output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from l3fabric import control

EXIT_OK = 0
EXIT_FAIL = 1  # the command ran and the answer is "no" / the agent said no
EXIT_USAGE = 2  # bad arguments or a bad config file


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every command that talks to an agent."""
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
    return common


# What the agent refuses because the caller asked for something wrong (an
# invalid name or address, a workload or peer that does not exist) is an
# input error, exit 2, the same as a flag the CLI checks itself.
INPUT_ERROR_CODES = frozenset({"invalid", "not-found", "bad-request"})


def call(args: argparse.Namespace, method: str, **params: Any) -> Any:
    try:
        return control.call(method, params, socket_path=args.socket)
    except control.ControlError as exc:
        code = EXIT_USAGE if exc.code in INPUT_ERROR_CODES else EXIT_FAIL
        raise CliError(exc.message, code) from None


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
