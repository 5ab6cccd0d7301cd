"""`l3fabric status`: the node, its readiness and its peer table, as one
document (docs/cli.md names the fields)."""

from __future__ import annotations

import os
from typing import Any

from l3fabric.agent.bgp import BgpService
from l3fabric.config import Config


def node_status(
    config: Config,
    *,
    ready: bool,
    reason: str,
    uptime_seconds: float,
    workloads: int,
    last_reconcile: dict[str, Any],
    http_url: str | None,
    bgp: BgpService | None,
    datastore_error: str | None = None,
    reloads: dict[str, Any] | None = None,
) -> dict[str, Any]:
    node = config.node
    store = config.datastore
    return {
        "node": node.name,
        "asn": node.asn,
        "addresses": [str(a) for a in (node.ipv4, node.ipv6) if a],
        "state": "ready" if ready else "starting",
        "reason": reason,
        "pid": os.getpid(),
        "uptime_seconds": round(uptime_seconds, 3),
        "workloads": workloads,
        "last_reconcile": last_reconcile,
        "config": {"source": config.source, **(reloads or {})},
        "datastore": {
            "type": store.type,
            "endpoints": list(store.endpoints),
            "up": datastore_error is None,
            "error": datastore_error,
        },
        "metrics_url": f"{http_url}/metrics" if http_url else None,
        "health_urls": {"livez": f"{http_url}/livez", "readyz": f"{http_url}/readyz"}
        if http_url
        else None,
        "peers": bgp.peer_table() if bgp is not None else [],
        "exabgp_pid": bgp.speaker_pid if bgp is not None else None,
    }
