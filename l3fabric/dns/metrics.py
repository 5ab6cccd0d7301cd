"""The DNS server's Prometheus metrics, registered on a registry passed in
(the server's own, or the agent's when it runs inside one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Answers from memory take tens of microseconds; forwards take milliseconds
# up to the upstream timeout.
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)
# qtype label values; anything else is "other", so a fuzzer cannot grow
# the number of series.
QTYPES = frozenset({"A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "CNAME", "MX", "ANY"})


class DnsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.registry = registry
        self.queries = Counter(
            "l3fabric_dns_queries",
            "DNS queries answered, by query type and response code",
            ["qtype", "rcode"],
            registry=r,
        )
        self.duration = Histogram(
            "l3fabric_dns_query_duration_seconds",
            "Time from receiving a query to having its answer, forwards included",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.malformed = Counter(
            "l3fabric_dns_malformed_packets",
            "Packets dropped because they were not a parseable DNS query",
            registry=r,
        )
        self.forwards = Counter(
            "l3fabric_dns_forwards",
            "Queries for names outside the zone sent upstream, by result",
            ["result"],
            registry=r,
        )
        self.records = Gauge(
            "l3fabric_dns_records", "Records in the server's in-memory view", registry=r
        )
        self.invalid_records = Gauge(
            "l3fabric_dns_invalid_records",
            "Keys under the record prefix whose values are not valid records (ignored)",
            registry=r,
        )

    def watch_view(self, records: Callable[[], int], invalid: Callable[[], int]) -> None:
        """Read the view's sizes at scrape time."""
        self.records.set_function(lambda: float(records()))
        self.invalid_records.set_function(lambda: float(invalid()))

    def query(self, qtype: str, rcode: str, seconds: float) -> None:
        self.queries.labels(qtype if qtype in QTYPES else "other", rcode).inc()
        self.duration.observe(seconds)
