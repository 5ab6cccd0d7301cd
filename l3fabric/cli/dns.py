"""`l3fabric dns` (the service-discovery DNS server) and `l3fabric resolve`
(a name's addresses straight from the datastore). Both read the datastore
directly, not through an agent: name it with the node config (--config) or
with the flags of l3fabric.cli.store."""

from __future__ import annotations

import argparse
import json
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError
from l3fabric.cli.store import add_store_options, open_store
from l3fabric.datastore.skydns import (
    DEFAULT_NAMESPACE,
    DEFAULT_PREFIX,
    DEFAULT_TTL,
    DEFAULT_ZONE,
    RecordError,
    check_name,
    check_zone,
)


def qualify(name: str, zone: str) -> str:
    """NAME -> NAME.default.ZONE, NAME.NS -> NAME.NS.ZONE (and SVC.NS.svc ->
    the service); a name ending in the zone or in a dot is taken as it is."""
    from l3fabric.dns.resolver import in_zone

    absolute = name.endswith(".")
    text = name.rstrip(".").lower()
    if not (absolute or in_zone(text, zone)):
        text = f"{text}.{DEFAULT_NAMESPACE}.{zone}" if "." not in text else f"{text}.{zone}"
    return check_name(text, "name", stored=True)


def cmd_dns(args: argparse.Namespace) -> int:
    from l3fabric import logs
    from l3fabric.dns.run import DnsOptions, run
    from l3fabric.dns.server import ServerConfig, parse_endpoint, upstream_list

    try:
        zone = check_zone(args.zone)
        server = ServerConfig(
            listen=parse_endpoint(args.listen),
            upstreams=upstream_list(args.upstream or []),
            upstream_timeout=args.upstream_timeout,
        )
        metrics = parse_endpoint(args.metrics_listen) if args.metrics_listen else None
    except ValueError as exc:  # RecordError is one
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.negative_ttl < 1:
        raise CliError("--negative-ttl must be 1 or more seconds", EXIT_USAGE)
    store = open_store(args)
    logs.setup(args.log_level, args.log_format)
    options = DnsOptions(server, zone, args.prefix, args.negative_ttl, metrics)
    return run(store, options)


def cmd_resolve(args: argparse.Namespace) -> int:
    from l3fabric.dns.resolver import Resolver
    from l3fabric.dns.view import RecordView

    try:
        zone = check_zone(args.zone)
        name = qualify(args.name, zone)
    except RecordError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    store = open_store(args)
    try:
        view = RecordView(args.prefix)
        revision = store.revision()
        view.replace(store.list(args.prefix + "/"), revision)
    finally:
        store.close()
    addresses = Resolver(view, zone).addresses(name)
    found = [str(a) for a in addresses or []]
    if args.output == "json":
        print(json.dumps({"name": name, "exists": addresses is not None, "addresses": found}))
    else:
        for address in found:
            print(address)
    if addresses is None:
        if args.output != "json":
            raise CliError(f"{name}: no such name")
        return EXIT_FAIL
    if not found:
        if args.output != "json":
            raise CliError(f"{name}: the name has no addresses")
        return EXIT_FAIL
    return EXIT_OK


def _store_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_store_options(common)
    common.add_argument(
        "--zone", default=DEFAULT_ZONE, help=f"the DNS zone (default {DEFAULT_ZONE})"
    )
    common.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"record key prefix (default {DEFAULT_PREFIX})"
    )
    return common


def register(subparsers: Any) -> None:
    common = _store_options()
    p = subparsers.add_parser(
        "dns", parents=[common], help="serve workload and service names over DNS"
    )
    p.add_argument("--listen", required=True, help="ADDRESS:PORT for UDP and TCP")
    p.add_argument(
        "--upstream",
        action="append",
        help="ADDRESS[:PORT] for names outside the zone (repeatable; none: REFUSED)",
    )
    p.add_argument(
        "--upstream-timeout", type=float, default=2.0, help="seconds per upstream (default 2)"
    )
    p.add_argument(
        "--negative-ttl",
        type=int,
        default=DEFAULT_TTL,
        help=f"SOA minimum: how long NXDOMAIN/NODATA may be cached (default {DEFAULT_TTL} s)",
    )
    p.add_argument("--metrics-listen", help="ADDRESS:PORT for Prometheus /metrics")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--log-format", choices=("json", "text"), default="text")
    p.set_defaults(func=cmd_dns)

    p = subparsers.add_parser(
        "resolve", parents=[common], help="print a name's addresses from the datastore"
    )
    p.add_argument("name", help="NAME[.NAMESPACE[.ZONE]], SVC.NAMESPACE.svc, or a full name")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_resolve)
