"""agent/discovery.py against a real file datastore: workload names, PTRs,
service endpoints under the node's lease, errors counted and repaired."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3fabric.agent.discovery import Discovery
from l3fabric.config import ConfigError, DiscoveryConfig, parse_config
from l3fabric.datastore.base import DatastoreUnavailable, KeyValue
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceSpec
from l3fabric.datastore.skydns import (
    ServicePort,
    ptr_key,
    ptr_records,
    service_prefix,
    workload_prefix,
    workload_records,
)
from l3fabric.model import Workload

KEYS = KeyLayout()
CFG = DiscoveryConfig()


class Counter:
    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class FlakyStore:
    """A real file datastore whose writes (and lists) fail while `down`."""

    def __init__(self, inner: FileDatastore) -> None:
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise DatastoreUnavailable("etcd did not answer (test)")

    def put(self, key: str, value: bytes, **kw: Any) -> int:
        self._check()
        return self.inner.put(key, value, **kw)

    def delete(self, key: str, **kw: Any) -> bool:
        self._check()
        return self.inner.delete(key, **kw)

    def list(self, prefix: str) -> list[KeyValue]:
        self._check()
        return self.inner.list(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Node:
    """One node's Discovery with its workloads, lease and readiness."""

    def __init__(self, store: Any, name: str = "node1") -> None:
        self.store = store
        self.name = name
        self.workloads: list[Workload] = []
        self.lease = store.grant_lease(30)
        self.gone: set[str] = set()  # workloads whose netns is gone
        self.errors = Counter()
        self.discovery = Discovery(
            store,
            CFG,
            KEYS,
            workloads=lambda: self.workloads,
            lease=lambda: self.lease,
            errors=self.errors,
            present=lambda w: w.name not in self.gone,
        )

    def add(self, workload: Workload) -> None:
        self.workloads.append(workload)
        self.discovery.workload_changed(workload, None)

    def delete(self, name: str) -> Workload:
        [workload] = [w for w in self.workloads if w.name == name]
        self.workloads.remove(workload)
        self.discovery.workload_changed(None, workload)
        return workload


def wl(name: str, *addresses: str, node: str = "node1", **kw: Any) -> Workload:
    return Workload(
        name,
        node,
        f"/run/netns/{name}",
        tuple(ipaddress.ip_address(a) for a in addresses),
        **kw,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FileDatastore]:
    ds = FileDatastore(tmp_path / "store")
    yield ds
    ds.close()


def records(store: Any, prefix: str = "/skydns/") -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.list(prefix)}


def define(store: Any, spec: ServiceSpec) -> None:
    store.put(KEYS.service(spec.namespace, spec.name), spec.encode())


WEB = ServiceSpec("web", "default", (("app", "web"),), (ServicePort("http", 80),))


# -- names -----------------------------------------------------------------------


def test_add_writes_a_aaaa_and_ptr_in_the_skydns_layout(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", "fd00:64::5"))
    want = dict(workload_records("w0", "default", ["100.64.0.5", "fd00:64::5"], ttl=5))
    want |= dict(ptr_records("w0", "default", ["100.64.0.5", "fd00:64::5"], ttl=5))
    assert records(store) == want
    assert json.loads(want[ptr_key("100.64.0.5")]) == {
        "host": "w0.default.l3fabric.internal.",
        "ttl": 5,
    }


def test_the_pod_name_and_namespace_are_the_dns_name(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("cni-3f2a", "100.64.0.6", pod="api-0", namespace="team-a"))
    assert set(records(store, workload_prefix("api-0", "team-a"))) == {
        workload_prefix("api-0", "team-a") + "100-64-0-6"
    }


def test_delete_removes_every_record(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", "fd00:64::5"))
    node.delete("w0")
    assert records(store) == {}
    assert node.errors.value == 0


def test_a_name_that_is_no_dns_label_is_not_registered(
    store: FileDatastore, caplog: pytest.LogCaptureFixture
) -> None:
    node = Node(store)
    with caplog.at_level(logging.WARNING):
        node.add(wl("Web_1", "100.64.0.5"))
        node.discovery.resync(node.workloads, ())
    assert records(store) == {}
    warned = [r for r in caplog.records if "not registered in DNS" in r.getMessage()]
    assert len(warned) == 1 and warned[0].workload == "Web_1"  # type: ignore[attr-defined]
    assert node.errors.value == 0


def test_resync_puts_back_missing_and_changed_records(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", "fd00:64::5"))
    before = records(store)
    key_a = workload_prefix("w0") + "100-64-0-5"
    store.delete(key_a)
    store.put(ptr_key("fd00:64::5"), b'{"host":"evil.example.","ttl":5}')
    report = node.discovery.resync(node.workloads, ())
    assert records(store) == before
    assert (report.written, report.deleted) == (2, 0)
    assert node.discovery.resync(node.workloads, ()).written == 0  # nothing rewritten


def test_a_datastore_error_never_fails_an_add_and_the_next_pass_repairs(
    store: FileDatastore,
) -> None:
    flaky = FlakyStore(store)
    node = Node(flaky)
    flaky.down = True
    node.add(wl("w0", "100.64.0.5"))  # does not raise
    assert node.errors.value >= 1 and records(store) == {}
    flaky.down = False
    node.discovery.resync(node.workloads, ())
    assert set(records(store)) == {workload_prefix("w0") + "100-64-0-5", ptr_key("100.64.0.5")}


def test_a_delete_that_failed_is_retried_by_the_next_pass(store: FileDatastore) -> None:
    flaky = FlakyStore(store)
    node = Node(flaky)
    node.add(wl("w0", "100.64.0.5"))
    flaky.down = True
    node.delete("w0")
    assert node.errors.value >= 1 and records(store) != {}
    flaky.down = False
    node.discovery.resync(node.workloads, ())
    assert records(store) == {}


def test_a_retried_delete_leaves_records_someone_else_wrote_since(store: FileDatastore) -> None:
    flaky = FlakyStore(store)
    old = Node(flaky)
    old.add(wl("w0", "100.64.0.5"))
    flaky.down = True
    old.delete("w0")
    flaky.down = False
    # The address went to another workload meanwhile: its PTR is not ours.
    new = Node(store, "node2")
    new.add(wl("w9", "100.64.0.5", node="node2"))
    old.discovery.resync(old.workloads, ())
    assert json.loads(store.get(ptr_key("100.64.0.5")).value)["host"].startswith("w9.")  # type: ignore[union-attr]
    assert workload_prefix("w0") + "100-64-0-5" not in records(store)


def test_an_orphan_loses_its_records_at_the_pass(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("w0", "100.64.0.5"))
    node.add(wl("w1", "100.64.0.6"))
    node.discovery.resync(node.workloads, orphans=["w0"])
    assert set(records(store)) == {workload_prefix("w1") + "100-64-0-6", ptr_key("100.64.0.6")}


def test_two_workloads_of_one_name_do_not_delete_each_other(store: FileDatastore) -> None:
    a, b = Node(store, "node1"), Node(store, "node2")
    a.add(wl("x1", "100.64.0.5", pod="api"))
    b.add(wl("x2", "100.64.1.5", node="node2", pod="api"))
    for _ in range(2):
        a.discovery.resync(a.workloads, ())
        b.discovery.resync(b.workloads, ())
    assert len(records(store, workload_prefix("api"))) == 2


# -- services ----------------------------------------------------------------------


def endpoints(store: Any, service: str = "web") -> dict[str, KeyValue]:
    return {kv.key: kv for kv in store.list(service_prefix(service))}


def test_matching_workloads_are_endpoints_under_the_node_lease(store: FileDatastore) -> None:
    define(store, WEB)
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", "fd00:64::5", labels=(("app", "web"),)))
    node.add(wl("w1", "100.64.0.6", labels=(("app", "db"),)))
    found = endpoints(store)
    base = service_prefix("web")
    assert set(found) == {
        base + "100-64-0-5",
        base + "fd00-0064-0000-0000-0000-0000-0000-0005",
        base + "_tcp/_http/w0",
    }
    assert {kv.lease for kv in found.values()} == {node.lease}
    srv = json.loads(found[base + "_tcp/_http/w0"].value)
    assert srv == {"host": "w0.default.l3fabric.internal", "port": 80, "ttl": 5, "group": "srv"}


def test_a_service_defined_later_is_followed(store: FileDatastore) -> None:
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", labels=(("app", "web"),)))
    assert endpoints(store) == {}
    define(store, WEB)
    node.discovery.services_changed()
    assert len(endpoints(store)) == 2
    store.delete(KEYS.service("default", "web"))
    node.discovery.services_changed()
    assert endpoints(store) == {}


def test_an_endpoint_goes_with_its_workload_and_its_namespace(store: FileDatastore) -> None:
    define(store, WEB)
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", labels=(("app", "web"),)))
    node.add(wl("w1", "100.64.0.6", labels=(("app", "web"),)))
    node.delete("w0")
    assert set(endpoints(store)) == {
        service_prefix("web") + "100-64-0-6",
        service_prefix("web") + "_tcp/_http/w1",
    }
    node.gone.add("w1")  # its netns went: not ready
    node.discovery.resync(node.workloads, ())
    assert endpoints(store) == {}


def test_a_workload_in_another_namespace_is_not_an_endpoint(store: FileDatastore) -> None:
    define(store, WEB)
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", namespace="team-a", labels=(("app", "web"),)))
    assert endpoints(store) == {}


def test_each_node_keeps_only_its_own_endpoints(store: FileDatastore) -> None:
    define(store, WEB)
    a, b = Node(store, "node1"), Node(store, "node2")
    a.add(wl("a0", "100.64.0.5", labels=(("app", "web"),)))
    b.add(wl("b0", "100.64.1.5", node="node2", labels=(("app", "web"),)))
    b.add(wl("b1", "100.64.1.6", node="node2", labels=(("app", "web"),)))
    a.discovery.resync(a.workloads, ())
    b.discovery.resync(b.workloads, ())
    assert len(endpoints(store)) == 6
    # node2's lease expires (its agent died): its endpoints go with it.
    store.revoke_lease(b.lease)
    hosts = {json.loads(kv.value)["host"] for kv in endpoints(store).values()}
    assert hosts == {"100.64.0.5", "a0.default.l3fabric.internal"}


def test_a_new_lease_gets_every_endpoint_written_again(store: FileDatastore) -> None:
    define(store, WEB)
    node = Node(store)
    node.add(wl("w0", "100.64.0.5", labels=(("app", "web"),)))
    store.revoke_lease(node.lease)
    assert endpoints(store) == {}
    node.lease = store.grant_lease(30)
    node.discovery.lease_changed()
    assert {kv.lease for kv in endpoints(store).values()} == {node.lease}
    assert len(endpoints(store)) == 2


def test_a_restarted_agent_moves_its_endpoints_to_its_new_lease(store: FileDatastore) -> None:
    define(store, WEB)
    old = Node(store)
    old.add(wl("w0", "100.64.0.5", labels=(("app", "web"),)))
    new = Node(store)  # same node, a new process with a new lease
    new.workloads = list(old.workloads)
    new.discovery.resync(new.workloads, ())
    assert {kv.lease for kv in endpoints(store).values()} == {new.lease}
    store.revoke_lease(old.lease)  # the old lease runs out later: nothing is lost
    assert len(endpoints(store)) == 2


def test_an_invalid_service_definition_is_skipped(
    store: FileDatastore, caplog: pytest.LogCaptureFixture
) -> None:
    store.put(KEYS.service("default", "bad"), b'{"name": "bad", "selector": {}}')
    define(store, WEB)
    node = Node(store)
    with caplog.at_level(logging.WARNING):
        node.add(wl("w0", "100.64.0.5", labels=(("app", "web"),)))
    assert len(endpoints(store)) == 2
    assert any("invalid service definition" in r.getMessage() for r in caplog.records)


# -- config --------------------------------------------------------------------------


def _config(discovery: object) -> dict[str, Any]:
    return {
        "node": {"name": "n1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
        "pools": [{"cidr": "100.64.0.0/16"}],
        "discovery": discovery,
    }


def test_config_discovery_defaults_and_values() -> None:
    assert parse_config(_config(None)).discovery == DiscoveryConfig(
        True, "l3fabric.internal", "/skydns", 5
    )
    cfg = parse_config(_config({"zone": "corp.example.", "prefix": "/dns", "ttl": 30}))
    assert cfg.discovery == DiscoveryConfig(True, "corp.example", "/dns", 30)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"zone": "Bad_Zone"}, "discovery.zone"),
        ({"prefix": "skydns/"}, "discovery.prefix"),
        ({"ttl": 0}, "discovery.ttl"),
        ({"enabled": "yes"}, "discovery.enabled"),
        ({"zones": "x"}, "discovery"),
    ],
)
def test_config_discovery_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_config(section), "node.yaml")
    assert f"node.yaml: {message}" in str(exc.value)


class CountingStore(FlakyStore):
    def __init__(self, inner: FileDatastore) -> None:
        super().__init__(inner)
        self.lists = 0

    def list(self, prefix: str) -> list[KeyValue]:
        self.lists += 1
        return super().list(prefix)


def test_a_pass_over_unchanged_inputs_lists_nothing_and_a_change_is_repaired(
    store: FileDatastore,
) -> None:
    """Nothing in the store moved (its revision) and the workloads, their
    presence, the orphans and the lease are the same: the records are what
    the last clean pass left, so the next one does not read them all again.
    Any write to the store (here someone deleting a record) moves the
    revision, and the pass after it repairs."""
    counting = CountingStore(store)
    node = Node(counting)
    node.add(wl("w0", "100.64.0.5", "fd00:64::5"))
    node.discovery.resync(node.workloads, ())
    before, lists = records(store), counting.lists
    assert node.discovery.resync(node.workloads, ()).written == 0
    assert counting.lists == lists
    store.delete(workload_prefix("w0") + "100-64-0-5")
    report = node.discovery.resync(node.workloads, ())
    assert counting.lists > lists and report.written == 1
    assert records(store) == before
    # A workload that came along changes the inputs too.
    node.add(wl("w1", "100.64.0.6"))
    lists = counting.lists
    node.discovery.resync(node.workloads, ())
    assert counting.lists > lists
