"""`l3fabric lab status`'s table: the rows l3fabric.lab.status builds, as
the other fabric views print theirs."""

from __future__ import annotations

from typing import Any

from l3fabric.cli.output import format_table
from l3fabric.lab.status import UNKNOWN
from l3fabric.lab.topology import ImageKind


def render_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, applies: bool = True) -> str:
        if not applies:
            return "-"
        return UNKNOWN if value is None else str(value)

    def state(row: dict[str, Any]) -> str:
        if row["state"] == "running" and row["answers"] is False:
            return f"no answer ({row['speaker']})"
        return str(row["state"])

    def peers(row: dict[str, Any]) -> str:
        if not row["speaker"]:
            return "-"
        if row["peers_total"] is None:
            return UNKNOWN
        return f"{row['peers_up']}/{row['peers_total']}"

    table = format_table(
        ("NODE", "KIND", "ROLE", "STATE", "AS", "PEERS", "WORKLOADS", "ROUTES-IN", "ROUTES-OUT"),
        [
            (
                r["name"],
                r["kind"],
                r["role"],
                state(r),
                r["asn"] or "-",
                peers(r),
                cell(r["workloads"], r["kind"] == ImageKind.L3FABRIC.value),
                cell(r["routes_in"], r["kind"] == ImageKind.L3FABRIC.value),
                cell(r["routes_out"], r["kind"] == ImageKind.L3FABRIC.value),
            )
            for r in rows
        ],
    )
    notes = [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
    down = [
        f"{r['name']}: {s['peer']} ({s['name'] or 'peer'}) is {s['state']}"
        for r in rows
        for s in r["sessions"]
        if s["state"].lower() != "established"
    ]
    if notes or down:
        table += "\n\n" + "\n".join(notes + down)
    return table
