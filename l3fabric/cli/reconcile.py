"""`l3fabric reconcile`: ask the agent for a reconcile pass now."""

from __future__ import annotations

import argparse
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, call, common_options, emit, format_table


def cmd_reconcile(args: argparse.Namespace) -> int:
    result = call(args, "reconcile")
    emit(result, args.output, _table)
    return EXIT_OK if not result.get("errors") else EXIT_FAIL


def _table(report: dict[str, Any]) -> str:
    repaired = report.get("repaired") or {}
    lines = [f"reconciled in {report.get('seconds', 0):.3f}s"]
    if repaired:
        lines.append(format_table(("repaired", "count"), sorted(repaired.items())))
    else:
        lines.append("nothing to repair")
    for orphan in report.get("orphans") or []:
        lines.append(f"orphan: workload {orphan} (its namespace is gone)")
    for error in report.get("errors") or []:
        lines.append(f"error: {error}")
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reconcile", parents=[common_options()], help="run a reconcile pass now"
    )
    p.set_defaults(func=cmd_reconcile)
