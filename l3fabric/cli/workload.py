"""`l3fabric workload add|del|list`, through the agent's control socket;
`workload list --all-nodes` from the datastore."""

from __future__ import annotations

import argparse
from typing import Any

from l3fabric.cli.fabric import all_workloads
from l3fabric.cli.output import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    call,
    common_options,
    emit,
    format_table,
)
from l3fabric.cli.store import add_store_options, store_spec
from l3fabric.datastore.base import DatastoreError
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceError, check_labels, parse_label


def cmd_workload_add(args: argparse.Namespace) -> int:
    try:
        labels = check_labels(
            (parse_label(text, "--label") for text in args.label or ()), "--label"
        )
    except ServiceError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    result = call(
        args,
        "workload.add",
        name=args.name,
        netns=args.netns,
        ips=args.ip or [],
        namespace=args.namespace,
        labels=dict(labels),
    )
    emit(result, args.output, lambda w: " ".join(w["addresses"]))
    return EXIT_OK


def cmd_workload_del(args: argparse.Namespace) -> int:
    result = call(args, "workload.del", name=args.name)
    emit(result, args.output, lambda w: f"deleted {w['name']}")
    return EXIT_OK


def cmd_workload_list(args: argparse.Namespace) -> int:
    if args.all_nodes:
        result = _all_nodes(args)
    else:
        named = [flag for attr, flag in STORE_FLAGS if getattr(args, attr) is not None]
        if named:
            raise CliError(f"{', '.join(named)} go with --all-nodes", EXIT_USAGE)
        result = call(args, "workload.list")

    def table(items: list[dict[str, Any]]) -> str:
        rows = [
            (w["name"], "-", "-", w["error"], "-", "-", w["node"])
            if "error" in w
            else (
                w["name"],
                w.get("namespace", "default"),
                w.get("pod") or "-",
                w["netns"],
                ",".join(w["addresses"]),
                w["host_iface"],
                w["node"],
            )
            for w in items
        ]
        headers = ("NAME", "NAMESPACE", "POD", "NETNS", "ADDRESSES", "HOST-IFACE", "NODE")
        return format_table(headers, rows)

    emit(result, args.output, table)
    return EXIT_OK


# The datastore flags, which only --all-nodes reads.
STORE_FLAGS = (
    ("config", "--config"),
    ("datastore_type", "--datastore-type"),
    ("datastore_path", "--datastore-path"),
    ("endpoints", "--endpoints"),
    ("etcd_ca", "--etcd-ca"),
    ("etcd_cert", "--etcd-cert"),
    ("etcd_key", "--etcd-key"),
    ("prefix", "--prefix"),
)


def _all_nodes(args: argparse.Namespace) -> list[dict[str, Any]]:
    spec = store_spec(args, args.prefix)
    store = spec.open()
    try:
        return all_workloads(store, KeyLayout(spec.prefix))
    except DatastoreError as exc:
        raise CliError(f"{spec.describe()}: {exc}") from None
    finally:
        store.close()


def register(subparsers: Any) -> None:
    common = common_options()
    wl = subparsers.add_parser("workload", help="add, delete and list workloads").add_subparsers(
        dest="workload_command", required=True, metavar="ACTION"
    )
    p = wl.add_parser("add", parents=[common], help="wire a workload into a network namespace")
    p.add_argument("name")
    p.add_argument("--netns", required=True, help="a name under /run/netns or a path")
    p.add_argument("--ip", action="append", help="request this address (repeatable)")
    p.add_argument(
        "--namespace",
        default="default",
        help="its namespace: the DNS name is NAME.NAMESPACE.ZONE (default: default)",
    )
    p.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="a label, as service selectors match them (repeatable)",
    )
    p.set_defaults(func=cmd_workload_add)
    p = wl.add_parser("del", parents=[common], help="remove a workload")
    p.add_argument("name")
    p.set_defaults(func=cmd_workload_del)
    p = wl.add_parser("list", parents=[common], help="list this node's workloads")
    p.add_argument(
        "--all-nodes",
        action="store_true",
        help="every node's workloads, read from the datastore (not the agent)",
    )
    add_store_options(p)
    p.add_argument("--prefix", help="with --all-nodes: the fabric's key prefix")
    p.set_defaults(func=cmd_workload_list)
