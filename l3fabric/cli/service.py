"""`l3fabric service add|list|show|del`: service definitions in the datastore.

A service is fabric-wide, not a node's: it is written straight to the
datastore (named as for `dns` and `resolve`, l3fabric.cli.store) rather than
through one agent's socket, so it works from any machine that reaches the
datastore and needs no agent on it. Every agent follows the definitions with
a watch and writes its own matching workloads as endpoints; `show` and
`list` read those endpoint records back.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError, emit, format_table
from l3fabric.cli.store import StoreSpec, add_store_options, store_spec
from l3fabric.datastore.base import Datastore, DatastoreError
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceError, ServiceSpec, parse_label
from l3fabric.datastore.skydns import (
    DEFAULT_NAMESPACE,
    DEFAULT_PREFIX,
    DEFAULT_ZONE,
    RecordError,
    ServicePort,
    check_zone,
    parse_records,
    service_name,
    service_prefix,
)


@dataclass(frozen=True)
class Where:
    """The datastore, the fabric's keys and where the DNS records are."""

    spec: StoreSpec
    keys: KeyLayout
    zone: str
    records_prefix: str


def _where(args: argparse.Namespace) -> Where:
    spec = store_spec(args)
    zone, prefix = DEFAULT_ZONE, DEFAULT_PREFIX
    if args.config is not None:
        from l3fabric.config import load_config

        discovery = load_config(args.config).discovery  # store_spec has checked it
        zone, prefix = discovery.zone, discovery.prefix
    try:
        zone = check_zone(args.zone or zone)
    except RecordError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return Where(spec, KeyLayout(spec.prefix), zone, args.dns_prefix or prefix)


def _open(where: Where) -> Datastore:
    return where.spec.open()


def _failed(where: Where, exc: DatastoreError) -> CliError:
    return CliError(f"{where.spec.describe()}: {exc}")


def _endpoints(store: Datastore, where: Where, spec: ServiceSpec) -> dict[str, Any]:
    """The endpoint records the agents wrote: addresses and SRV targets."""
    prefix = service_prefix(spec.name, spec.namespace, zone=where.zone, prefix=where.records_prefix)
    records, _ = parse_records(store.list(prefix), where.records_prefix)
    addresses = sorted(
        (r.host for r in records if r.address() is not None),
        key=lambda a: (":" in a, a),
    )
    targets = sorted({r.host for r in records if r.address() is None and r.port})
    return {"addresses": addresses, "targets": targets}


def _row(store: Datastore, where: Where, spec: ServiceSpec) -> dict[str, Any]:
    return {
        **spec.to_dict(),
        "dns_name": service_name(spec.name, spec.namespace, where.zone),
        "endpoints": _endpoints(store, where, spec),
    }


def _specs(store: Datastore, keys: KeyLayout, namespace: str | None) -> list[ServiceSpec]:
    prefix = keys.services + (f"{namespace}/" if namespace else "")
    out = []
    for kv in store.list(prefix):
        try:
            out.append(ServiceSpec.decode(kv.value, kv.key))
        except ServiceError:
            continue  # an agent logs it; list shows what is usable
    return sorted(out, key=lambda s: (s.namespace, s.name))


def cmd_service_add(args: argparse.Namespace) -> int:
    try:
        spec = ServiceSpec(
            args.name,
            args.namespace,
            tuple(parse_label(s, "--selector") for s in args.selector or ()),
            tuple(ServicePort.parse(p) for p in args.port or ()),
        ).check()
    except (ServiceError, RecordError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    where = _where(args)
    store = _open(where)
    key = where.keys.service(spec.namespace, spec.name)
    try:
        existing = store.get(key)
        if existing is not None and existing.value != spec.encode():
            raise CliError(
                f"service {spec.namespace}/{spec.name} exists with another definition; "
                "`l3fabric service del` it first"
            )
        if existing is None:
            store.put(key, spec.encode(), expect_version=0)
        row = _row(store, where, spec)
    except DatastoreError as exc:
        raise _failed(where, exc) from None
    finally:
        store.close()
    emit(row, args.output, lambda r: f"service {r['namespace']}/{r['name']}: {r['dns_name']}")
    return EXIT_OK


def cmd_service_list(args: argparse.Namespace) -> int:
    where = _where(args)
    store = _open(where)
    try:
        rows = [_row(store, where, s) for s in _specs(store, where.keys, args.namespace)]
    except DatastoreError as exc:
        raise _failed(where, exc) from None
    finally:
        store.close()

    def table(data: list[dict[str, Any]]) -> str:
        if not data:
            return "no services"
        return format_table(
            ("NAMESPACE", "NAME", "SELECTOR", "PORTS", "ENDPOINTS"),
            [
                (
                    r["namespace"],
                    r["name"],
                    ",".join(f"{k}={v}" for k, v in sorted(r["selector"].items())),
                    ",".join(_port_text(p) for p in r["ports"]) or "-",
                    ",".join(r["endpoints"]["addresses"]) or "-",
                )
                for r in data
            ],
        )

    emit(rows, args.output, table)
    return EXIT_OK


def cmd_service_show(args: argparse.Namespace) -> int:
    where = _where(args)
    store = _open(where)
    try:
        kv = store.get(where.keys.service(args.namespace, args.name))
        if kv is None:
            raise CliError(f"no service {args.namespace}/{args.name}", EXIT_FAIL)
        row = _row(store, where, ServiceSpec.decode(kv.value, kv.key))
    except DatastoreError as exc:
        raise _failed(where, exc) from None
    except ServiceError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()

    def text(r: dict[str, Any]) -> str:
        lines = [
            f"service    {r['namespace']}/{r['name']}",
            f"dns name   {r['dns_name']}",
            "selector   " + ",".join(f"{k}={v}" for k, v in sorted(r["selector"].items())),
            "ports      " + (", ".join(_port_text(p) for p in r["ports"]) or "-"),
            "addresses  " + (", ".join(r["endpoints"]["addresses"]) or "- (no ready endpoint)"),
        ]
        if r["endpoints"]["targets"]:
            lines.append("targets    " + ", ".join(r["endpoints"]["targets"]))
        return "\n".join(lines)

    emit(row, args.output, text)
    return EXIT_OK


def cmd_service_del(args: argparse.Namespace) -> int:
    where = _where(args)
    store = _open(where)
    try:
        found = store.delete(where.keys.service(args.namespace, args.name))
        # Every node's endpoint records too, at once: an agent that has not
        # seen the deletion yet removes its own when it does.
        prefix = service_prefix(
            args.name, args.namespace, zone=where.zone, prefix=where.records_prefix
        )
        for kv in store.list(prefix):
            store.delete(kv.key)
    except RecordError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except DatastoreError as exc:
        raise _failed(where, exc) from None
    finally:
        store.close()
    if not found:
        raise CliError(f"no service {args.namespace}/{args.name}", EXIT_FAIL)
    result = {"name": args.name, "namespace": args.namespace, "deleted": True}
    if args.output == "json":
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"deleted service {args.namespace}/{args.name}")
    return EXIT_OK


def _port_text(port: dict[str, Any]) -> str:
    return f"{port['name']}:{port['port']}/{port['protocol']}"


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_store_options(common)
    common.add_argument(
        "--zone", help=f"the DNS zone (default: the config's discovery.zone, else {DEFAULT_ZONE})"
    )
    common.add_argument(
        "--dns-prefix",
        help="where the DNS records are (default: the config's discovery.prefix, "
        f"else {DEFAULT_PREFIX})",
    )
    common.add_argument("-o", "--output", choices=("table", "json"), default="table")
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("name")
    named.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"(default {DEFAULT_NAMESPACE})"
    )
    sv = subparsers.add_parser(
        "service", help="define services: names for the workloads a selector matches"
    ).add_subparsers(dest="service_command", required=True, metavar="ACTION")
    p = sv.add_parser("add", parents=[common, named], help="define a service")
    p.add_argument(
        "--selector",
        action="append",
        required=True,
        metavar="KEY=VALUE",
        help="workload label the endpoints have (repeatable: all of them)",
    )
    p.add_argument(
        "--port",
        action="append",
        metavar="NAME:PORT[/PROTO]",
        help="a named port: SRV _NAME._PROTO.SVC.NS.svc.ZONE (repeatable; PROTO tcp, udp, sctp)",
    )
    p.set_defaults(func=cmd_service_add)
    p = sv.add_parser("list", parents=[common], help="every service and its endpoints")
    p.add_argument("--namespace", help="only this namespace")
    p.set_defaults(func=cmd_service_list)
    p = sv.add_parser("show", parents=[common, named], help="one service and its endpoints")
    p.set_defaults(func=cmd_service_show)
    p = sv.add_parser("del", parents=[common, named], help="remove a service")
    p.set_defaults(func=cmd_service_del)
