"""Composition root of `l3fabric dns`: the view, its feeder thread, the
resolver, the listeners and the metrics listener, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

from l3fabric.datastore.base import Datastore
from l3fabric.datastore.skydns import DEFAULT_PREFIX, DEFAULT_TTL, DEFAULT_ZONE
from l3fabric.dns.metrics import DnsMetrics
from l3fabric.dns.resolver import Resolver
from l3fabric.dns.server import DnsServer, ServerConfig
from l3fabric.dns.view import RecordView, ViewFeeder

log = logging.getLogger(__name__)

FIRST_LOAD_TIMEOUT = 30.0  # seconds to wait for the first listing before serving anyway


@dataclass(frozen=True)
class DnsOptions:
    server: ServerConfig
    zone: str = DEFAULT_ZONE
    prefix: str = DEFAULT_PREFIX
    negative_ttl: int = DEFAULT_TTL
    metrics_listen: tuple[str, int] | None = None


def run(store: Datastore, options: DnsOptions) -> int:
    registry = CollectorRegistry()
    metrics = DnsMetrics(registry)
    view = RecordView(options.prefix)
    metrics.watch_view(lambda: len(view), lambda: len(view.invalid()))
    resolver = Resolver(
        view,
        options.zone,
        negative_ttl=options.negative_ttl,
        recursion_available=bool(options.server.upstreams),
    )
    server = DnsServer(resolver, options.server, metrics)
    stop = threading.Event()
    feeder = threading.Thread(
        target=ViewFeeder(store, view).run, args=(stop,), name="dns-feeder", daemon=True
    )
    feeder.start()
    if options.metrics_listen is not None:
        host, port = options.metrics_listen
        start_http_server(port, addr=host, registry=registry)
    # Answering NXDOMAIN for everything before the first listing would be
    # worse than a short wait at start.
    if not view.loaded.wait(FIRST_LOAD_TIMEOUT):
        log.warning("DNS records not loaded yet; serving what there is")
    try:
        asyncio.run(_serve(server))
    finally:
        stop.set()
        feeder.join(timeout=5)
        store.close()
    return 0


async def _serve(server: DnsServer) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await server.start()
    try:
        await done.wait()
    finally:
        await server.close()
        log.info("DNS server stopped")
