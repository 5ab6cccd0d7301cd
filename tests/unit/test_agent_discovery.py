"""The agent's wiring of service discovery: workload.add with a namespace and
labels, records written after the routes, endpoints under the node lease."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from l3fabric.agent.server import RequestError
from l3fabric.config import DiscoveryConfig
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceSpec
from l3fabric.datastore.skydns import ServicePort, service_prefix, workload_prefix
from tests.nettools import Namespaces
from tests.unit.test_agent import Harness, node_config


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path, node_config(tmp_path))
    made.agent.start()
    try:
        yield made
    finally:
        made.agent.stop()


@pytest.fixture
def workload_ns(netns: Namespaces) -> str:
    return f"/run/netns/{netns.add('w')}"


def test_workload_add_takes_a_namespace_and_labels(harness: Harness, workload_ns: str) -> None:
    added = harness.call["workload.add"](
        {"name": "web-1", "netns": workload_ns, "namespace": "shop", "labels": {"app": "web"}}
    )
    assert added["namespace"] == "shop" and added["labels"] == {"app": "web"}
    keys = [kv.key for kv in harness.store.list(workload_prefix("web-1", "shop"))]
    assert len(keys) == 1  # the pool is IPv4 only
    assert json.loads(harness.store.list(keys[0])[0].value)["host"] == added["addresses"][0]


def test_a_matching_workload_is_an_endpoint_under_the_node_lease(
    harness: Harness, workload_ns: str
) -> None:
    spec = ServiceSpec("web", "shop", (("app", "web"),), (ServicePort("http", 80),))
    harness.store.put(KeyLayout().service("shop", "web"), spec.encode())
    harness.agent.discovery.services_changed()  # type: ignore[union-attr]
    harness.call["workload.add"](
        {"name": "web-1", "netns": workload_ns, "namespace": "shop", "labels": {"app": "web"}}
    )
    found = harness.store.list(service_prefix("web", "shop"))
    node = harness.store.get("/l3fabric/nodes/node1")
    assert node is not None and len(found) == 2
    assert {kv.lease for kv in found} == {node.lease}
    harness.call["workload.del"]({"name": "web-1"})
    assert harness.store.list(service_prefix("web", "shop")) == []
    assert harness.store.list("/skydns/") == []


@pytest.mark.parametrize(
    "params",
    [
        {"labels": {"app": "we b"}},
        {"labels": {"-x": "web"}},
        {"labels": ["app=web"]},
        {"namespace": 7},
    ],
)
def test_bad_labels_and_namespaces_are_refused(
    harness: Harness, workload_ns: str, params: dict[str, object]
) -> None:
    with pytest.raises(RequestError) as exc:
        harness.call["workload.add"]({"name": "web-1", "netns": workload_ns, **params})
    assert exc.value.code == "invalid"
    assert harness.agent.workloads.get("web-1") is None


def test_no_records_with_discovery_disabled(tmp_path: Path, workload_ns: str) -> None:
    config = replace(node_config(tmp_path), discovery=DiscoveryConfig(enabled=False))
    made = Harness(tmp_path, config)
    made.agent.start()
    try:
        made.call["workload.add"]({"name": "web-1", "netns": workload_ns})
        assert made.agent.discovery is None
        assert made.store.list("/skydns/") == []
    finally:
        made.agent.stop()
