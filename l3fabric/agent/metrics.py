"""The agent's Prometheus metrics, registered on a registry passed in.

Names follow Prometheus conventions: `l3fabric_` prefix, base units,
`_total` for counters, `_seconds` for durations. docs/metrics.md lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from l3fabric import __version__

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.build_info = Info("l3fabric_build", "l3fabric build information", registry=r)
        self.build_info.info({"version": __version__})
        # Config
        self.config_reload_errors = Counter(
            "l3fabric_config_reload_errors", "Config reloads rejected (old config kept)", registry=r
        )
        self.config_last_reload = Gauge(
            "l3fabric_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            registry=r,
        )
        # Reconcile and routes
        self.reconcile_duration = Histogram(
            "l3fabric_reconcile_duration_seconds",
            "Time to plan and apply one reconcile pass",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "l3fabric_reconcile_errors", "Reconcile operations that failed", registry=r
        )
        self.drift_repaired = Counter(
            "l3fabric_reconcile_drift_repaired",
            "Kernel objects repaired by reconcile, by operation",
            ["operation"],
            registry=r,
        )
        self.routes_programmed = Gauge(
            "l3fabric_routes_programmed",
            "Routes l3fabric has in the kernel, by kind",
            ["kind"],
            registry=r,
        )
        self.program_batch_seconds = Histogram(
            "l3fabric_route_program_batch_seconds",
            "Latency of one batched route programming call",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Workloads and IPAM
        self.workloads = Gauge("l3fabric_workloads", "Workloads on this node", registry=r)
        self.datastore_up = Gauge(
            "l3fabric_datastore_up",
            "1 while the datastore answers, 0 while it does not",
            registry=r,
        )
        self.discovery_errors = Counter(
            "l3fabric_discovery_errors",
            "Service-discovery record writes that failed (retried at the next pass)",
            registry=r,
        )
        self.ipam_pool_size = Gauge(
            "l3fabric_ipam_pool_addresses", "Addresses in each pool", ["pool"], registry=r
        )
        self.ipam_in_use = Gauge(
            "l3fabric_ipam_addresses_in_use",
            "Addresses assigned in each pool",
            ["pool"],
            registry=r,
        )
        self.ipam_blocks_owned = Gauge(
            "l3fabric_ipam_blocks_owned", "Blocks with affinity to this node", registry=r
        )
        self.ipam_borrowed = Gauge(
            "l3fabric_ipam_borrowed_addresses",
            "Addresses this node holds in other nodes' blocks",
            registry=r,
        )
        # BGP
        self.bgp_session_state = Gauge(
            "l3fabric_bgp_session_state",
            "1 for the state each BGP session is in, 0 for the others",
            ["peer", "state"],
            registry=r,
        )
        self.bgp_session_flaps = Counter(
            "l3fabric_bgp_session_flaps",
            "Established sessions that went down",
            ["peer"],
            registry=r,
        )
        self.bgp_updates_received = Counter(
            "l3fabric_bgp_updates_received", "UPDATE messages received", ["peer"], registry=r
        )
        self.bgp_updates_sent = Counter(
            "l3fabric_bgp_api_lines_sent",
            "Announce/withdraw commands written to ExaBGP",
            registry=r,
        )
        self.bgp_max_prefix_teardowns = Counter(
            "l3fabric_bgp_max_prefix_teardowns",
            "Sessions torn down for exceeding max-prefix",
            ["peer"],
            registry=r,
        )
        self.bgp_session_dampings = Counter(
            "l3fabric_bgp_session_dampings",
            "Sessions held down for flapping too often",
            ["peer"],
            registry=r,
        )
        self.bgp_session_last_change = Gauge(
            "l3fabric_bgp_session_last_change_timestamp_seconds",
            "Unix time of the last state change of each BGP session",
            ["peer"],
            registry=r,
        )
        self.bgp_prefixes = Gauge(
            "l3fabric_bgp_prefixes",
            "Prefixes per peer: received, accepted (usable), advertised",
            ["peer", "direction"],
            registry=r,
        )
        self.bgp_prefixes_rejected = Gauge(
            "l3fabric_bgp_prefixes_rejected",
            "Prefixes held from each peer that import policy rejected, by reason",
            ["peer", "reason"],
            registry=r,
        )
        self.exabgp_restarts = Counter(
            "l3fabric_exabgp_restarts", "Times ExaBGP was restarted after dying", registry=r
        )

    def export_ipam(self, ipam: IpamReport) -> None:
        """Pool and block gauges from IPAM's own report."""
        report = ipam.show()
        for pool in report.get("pools", []):
            self.ipam_pool_size.labels(pool["cidr"]).set(pool["size"])
            self.ipam_in_use.labels(pool["cidr"]).set(pool["used"])
        self.ipam_blocks_owned.set(len(ipam.owned_blocks()))
        self.ipam_borrowed.set(len(ipam.borrowed()))


class IpamReport(Protocol):
    def show(self) -> dict[str, Any]: ...
    def owned_blocks(self) -> Sequence[object]: ...
    def borrowed(self) -> Sequence[object]: ...
