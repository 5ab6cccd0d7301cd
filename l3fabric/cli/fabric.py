"""`l3fabric fabric status` and the fabric-wide workload list: every node
from the datastore, with what only an agent knows (readiness, sessions,
routes) from the one agent this host can ask, through its control socket.

A node's socket path is local to its host, so other nodes' agents cannot be
asked: what the datastore does not hold is "unknown" for them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from l3fabric import control
from l3fabric.cli.datastore import node_rows
from l3fabric.cli.output import EXIT_OK, CliError, common_options, emit, format_table
from l3fabric.cli.store import add_store_options, store_spec
from l3fabric.datastore.base import Datastore, DatastoreError
from l3fabric.datastore.keys import KeyLayout
from l3fabric.model import Workload

UNKNOWN = "unknown"


def all_workloads(store: Datastore, keys: KeyLayout) -> list[dict[str, Any]]:
    """Every node's workload records, by node then name; an unreadable
    record is a row with `error`, so one bad record hides nothing else."""
    rows: list[dict[str, Any]] = []
    for kv in store.list(keys.all_workloads):
        node, name = keys.workload_owner(kv.key)
        try:
            rows.append(Workload.from_dict(json.loads(kv.value)).to_dict())
        except (ValueError, TypeError, KeyError) as exc:
            rows.append({"name": name, "node": node, "error": f"unreadable record: {exc}"})
    return sorted(rows, key=lambda w: (str(w["node"]), str(w["name"])))


def _blocks_per_node(store: Datastore, keys: KeyLayout) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kv in store.list(keys.blocks):
        try:
            node = str(json.loads(kv.value)["node"])
        except (ValueError, TypeError, KeyError):
            continue  # `ipam check` reports damaged blocks
        counts[node] = counts.get(node, 0) + 1
    return counts


def local_agent(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """What this host's agent says of itself, or None and why not."""
    try:
        status = control.call("status", {}, socket_path=args.socket, timeout=args.timeout)
        programmed = control.call(
            "routes", {"view": "programmed"}, socket_path=args.socket, timeout=args.timeout
        )
        advertised: list[Any] | None = None
        if status.get("peers"):
            advertised = control.call(
                "routes", {"view": "advertised"}, socket_path=args.socket, timeout=args.timeout
            )["routes"]
    except control.AgentUnreachable as exc:
        return None, exc.brief
    except control.ControlError as exc:
        return None, exc.message
    peers = status.get("peers", [])
    return {
        "node": status["node"],
        "state": status["state"],
        "peers_up": sum(1 for p in peers if p["state"] == "Established"),
        "peers_total": len(peers),
        "routes_in": sum(1 for r in programmed["routes"] if r["kind"] == "learned"),
        "routes_out": len(advertised) if advertised is not None else 0,
    }, ""


def fabric_rows(
    store: Datastore, keys: KeyLayout, agent: dict[str, Any] | None
) -> list[dict[str, Any]]:
    workloads: dict[str, int] = {}
    for kv in store.list(keys.all_workloads):
        node, _ = keys.workload_owner(kv.key)
        workloads[node] = workloads.get(node, 0) + 1
    blocks = _blocks_per_node(store, keys)
    rows = []
    for row in node_rows(store, keys):
        name = row["name"]
        mine = agent is not None and agent["node"] == name
        if not row["leased"]:
            state = "no lease"
        elif row["lease_ttl"] is None:
            state = "expiring"
        else:
            state = "registered"
        row.update(
            {
                "workloads": workloads.get(name, 0),
                "blocks": blocks.get(name, 0),
                "source": "agent" if mine else "datastore",
                "state": agent["state"] if mine and agent else state,
            }
        )
        for field in ("peers_up", "peers_total", "routes_in", "routes_out"):
            row[field] = agent[field] if mine and agent else None
        rows.append(row)
    return rows


def cmd_fabric_status(args: argparse.Namespace) -> int:
    spec = store_spec(args, args.prefix)
    store = spec.open()
    try:
        agent, why = local_agent(args)
        rows = fabric_rows(store, KeyLayout(spec.prefix), agent)
    except DatastoreError as exc:
        raise CliError(f"{spec.describe()}: {exc}") from None
    finally:
        store.close()

    def cell(value: Any) -> str:
        return UNKNOWN if value is None else str(value)

    def table(data: list[dict[str, Any]]) -> str:
        if not data:
            return f"no nodes registered under {spec.prefix}/nodes/"
        lines = format_table(
            ("NODE", "AS", "STATE", "PEERS", "WORKLOADS", "BLOCKS", "ROUTES-IN", "ROUTES-OUT"),
            [
                (
                    r["name"],
                    r["asn"] or "-",
                    r["state"],
                    UNKNOWN if r["peers_total"] is None else f"{r['peers_up']}/{r['peers_total']}",
                    r["workloads"],
                    r["blocks"],
                    cell(r["routes_in"]),
                    cell(r["routes_out"]),
                )
                for r in data
            ],
        )
        if agent is None:
            return lines + f"\n(no local agent answered: {why}; agent columns are unknown)"
        if not any(r["source"] == "agent" for r in data):
            return lines + f"\n(the local agent, node {agent['node']}, is not registered here)"
        return lines

    emit(rows, args.output, table)
    return EXIT_OK


def register(subparsers: Any) -> None:
    group = subparsers.add_parser("fabric", help="every node of the fabric").add_subparsers(
        dest="fabric_command", required=True, metavar="ACTION"
    )
    p = group.add_parser(
        "status",
        parents=[common_options()],
        help="every registered node: state, peers, workloads, routes",
    )
    add_store_options(p)
    p.add_argument(
        "--prefix",
        help="the fabric's key prefix (default: the config's datastore.prefix, else /l3fabric)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the local agent")
    p.set_defaults(func=cmd_fabric_status)
