"""The Agent with injected fakes (kernel, speaker, clock) and a real file
datastore: start-up, workload adds through the control handlers, reconcile,
reload and readiness."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from l3fabric.agent.daemon import Agent
from l3fabric.agent.handlers import handlers
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.server import RequestError
from l3fabric.agent.workloads import Attachment
from l3fabric.bgp.events import PeerState, PeerStateEvent
from l3fabric.config import Config, ConfigError, parse_config
from l3fabric.dataplane.base import Observed
from l3fabric.datastore.file import FileDatastore
from l3fabric.model import NodeRecord, workload_routes
from tests.fakes import Clock, FakeKernel, FakeSpeaker
from tests.nettools import Namespaces

net = ipaddress.ip_network


def node_config(tmp_path: Path, **bgp: Any) -> Config:
    return parse_config(
        {
            "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
            "pools": [{"cidr": "100.64.0.0/24", "block_size": 28}],
            "state_dir": str(tmp_path / "state"),
            "datastore": {"type": "file", "path": str(tmp_path / "store")},
            "metrics": {"enabled": False},
            "bgp": {"graceful_restart": {"enabled": False}, **bgp},
        },
        source=str(tmp_path / "node1.yaml"),
    )


class Harness:
    def __init__(self, tmp_path: Path, config: Config) -> None:
        self.store = FileDatastore(tmp_path / "store")
        self.kernel = FakeKernel()
        self.speaker = FakeSpeaker()
        self.clock = Clock()
        self.metrics = Metrics(CollectorRegistry())
        self.next_config: Config | Exception = config
        self.agent = Agent(
            config,
            store=self.store,
            dataplane=self.kernel,
            metrics=self.metrics,
            speaker_factory=lambda _config: self.speaker,
            clock=self.clock,
            wall_clock=self.clock,
            config_loader=self._load,
        )
        self.call = handlers(self.agent)

    def _load(self, _path: str) -> Config:
        if isinstance(self.next_config, Exception):
            raise self.next_config
        return self.next_config

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


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


def test_start_registers_the_node_and_is_ready_without_peers(harness: Harness) -> None:
    record = harness.store.get("/l3fabric/nodes/node1")
    assert record is not None
    assert NodeRecord.from_dict(json.loads(record.value)).asn == 64512
    assert harness.kernel.sysctls_applied
    assert harness.speaker.started
    assert harness.agent.readiness() == (True, "ok")
    assert harness.call["status"]({})["state"] == "ready"


def test_a_workload_add_wires_it_programs_its_routes_and_announces_it(
    harness: Harness, workload_ns: str
) -> None:
    peer = NodeRecord("node2", 64512, ipaddress.IPv4Address("198.18.0.2"))
    harness.store.put("/l3fabric/nodes/node2", json.dumps(peer.to_dict()).encode())
    assert harness.agent.bgp is not None
    harness.agent.bgp.refresh_neighbors()
    harness.agent.bgp.handle_events([])  # nothing pending
    added = harness.call["workload.add"]({"name": "web", "netns": workload_ns})
    workload = harness.agent.workloads.get("web")
    assert workload is not None and added["name"] == "web"
    assert workload.host_iface in harness.kernel.links
    assert set(harness.kernel.routes) == {r.prefix for r in workload_routes(workload)}
    assert harness.metric("l3fabric_routes_programmed", {"kind": "local"}) == 1
    # Routes go out only to Established peers; the advertised set holds it.
    assert harness.agent.bgp.advertised() == [
        {"prefix": f"{workload.addresses[0]}/32", "next_hop": "198.18.0.1"}
    ]


def test_the_route_is_written_before_the_announcement(harness: Harness, workload_ns: str) -> None:
    peer = NodeRecord("node2", 64512, ipaddress.IPv4Address("198.18.0.2"))
    harness.store.put("/l3fabric/nodes/node2", json.dumps(peer.to_dict()).encode())
    assert harness.agent.bgp is not None
    harness.agent.bgp.refresh_neighbors()
    harness.agent.bgp.handle_events([PeerStateEvent(peer.ipv4, PeerState.UP)])  # type: ignore[arg-type]
    order: list[str] = []
    program, send = harness.kernel.program, harness.speaker.send
    harness.kernel.program = lambda r, d: (order.append("route"), program(r, d))[1]  # type: ignore[method-assign]
    harness.speaker.send = lambda lines: (order.append("announce"), send(lines))[1]  # type: ignore[method-assign]
    harness.call["workload.add"]({"name": "web", "netns": workload_ns})
    assert order == ["route", "announce"]
    assert harness.speaker.sent[-1].startswith("neighbor 198.18.0.2 announce attributes")


def test_reconcile_repairs_a_route_deleted_behind_its_back(
    harness: Harness, workload_ns: str
) -> None:
    harness.call["workload.add"]({"name": "web", "netns": workload_ns})
    workload = harness.agent.workloads.get("web")
    assert workload is not None
    harness.kernel.routes.clear()
    report = harness.call["reconcile"]({})
    assert report["repaired"] == {"replace_route_local": 1}
    assert set(harness.kernel.routes) == {r.prefix for r in workload_routes(workload)}
    assert harness.call["reconcile"]({})["repaired"] == {}


def test_deleting_a_workload_removes_everything_it_had(harness: Harness, workload_ns: str) -> None:
    harness.call["workload.add"]({"name": "web", "netns": workload_ns})
    harness.call["workload.del"]({"name": "web"})
    assert harness.kernel.links == {} and harness.kernel.routes == {}
    assert harness.call["workload.list"]({}) == []
    assert harness.call["ipam.check"]({})["problems"] == []


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("workload.add", {"name": "Bad Name!", "netns": "/run/netns/x"}, "invalid"),
        ("workload.add", {"name": "web"}, "invalid"),
        ("workload.add", {"name": "web", "netns": "/run/netns/l3f-missing"}, "invalid"),
        ("workload.del", {"name": "nobody"}, "not-found"),
        ("routes", {"view": "received", "peer": "nonsense"}, "invalid"),
        ("routes", {"view": "received", "peer": "198.18.9.9"}, "not-found"),
        ("ipam.check", {"repair": "yes"}, "invalid"),
    ],
)
def test_control_errors_have_codes(
    harness: Harness, method: str, params: dict[str, Any], code: str
) -> None:
    with pytest.raises(RequestError) as caught:
        harness.call[method](params)
    assert caught.value.code == code


def test_a_bad_reload_keeps_the_running_config(harness: Harness, tmp_path: Path) -> None:
    running = harness.agent.config
    harness.next_config = ConfigError([f"{tmp_path}/node1.yaml: node: broken"])
    assert harness.agent.reload()["reloaded"] is False
    changed = node_config(tmp_path)
    harness.next_config = parse_config(
        {
            "node": {"name": "node1", "asn": 64999, "addresses": {"ipv4": "198.18.0.1"}},
            "pools": [{"cidr": "100.64.0.0/24", "block_size": 28}],
            "state_dir": str(changed.state_dir),
            "datastore": {"type": "file", "path": str(tmp_path / "store")},
            "metrics": {"enabled": False},
        },
        source=changed.source,
    )
    outcome = harness.agent.reload()  # the AS takes effect only on restart
    assert outcome["reloaded"] is False and "node.asn" in outcome["errors"][0]
    assert harness.agent.config is running
    assert harness.metric("l3fabric_config_reload_errors_total") == 2


def test_a_good_reload_takes_effect(harness: Harness, tmp_path: Path) -> None:
    harness.next_config = node_config(tmp_path, import_policy={"max_prefixes": 7})
    outcome = harness.call["config.reload"]({})
    assert outcome["reloaded"] is True and outcome["changed"] == ["bgp.import_policy"]
    assert outcome["generation"] == 2
    assert harness.call["status"]({})["config"]["generation"] == 2
    assert harness.agent.config.bgp.import_policy.max_prefixes == 7


def test_readiness_waits_for_peers_within_the_grace_period(
    harness: Harness, workload_ns: str
) -> None:
    peer = NodeRecord("node2", 64512, ipaddress.IPv4Address("198.18.0.2"))
    harness.store.put("/l3fabric/nodes/node2", json.dumps(peer.to_dict()).encode())
    assert harness.agent.bgp is not None
    harness.agent.bgp.refresh_neighbors()
    assert harness.agent.readiness() == (False, "not all BGP peers are Established yet")
    harness.clock.advance(120)
    assert harness.agent.readiness() == (False, "no BGP peer is Established")


def test_reconcile_repairs_the_workload_side_too(harness: Harness, workload_ns: str) -> None:
    """A kill mid-add (or an operator) can leave a workload without its
    default route or address inside its namespace: the pass notices and
    wires it again, and names what it repaired."""
    harness.call["workload.add"]({"name": "web", "netns": workload_ns})
    workload = harness.agent.workloads.get("web")
    assert workload is not None
    healthy = harness.kernel.inspect(workload)
    harness.kernel.observed[workload.host_iface] = replace(
        healthy, default_routes=(), container_addresses=()
    )
    attached: list[str] = []
    attach = harness.kernel.attach
    harness.kernel.attach = lambda w: (attached.append(w.name), attach(w))[1]  # type: ignore[method-assign]
    report = harness.call["reconcile"]({})
    assert report["repaired"] == {"workload_side": 1}
    assert attached == ["web"]
    assert (
        harness.metric("l3fabric_reconcile_drift_repaired_total", {"operation": "workload_side"})
        == 1
    )
    del harness.kernel.observed[workload.host_iface]  # the attach put it right
    assert harness.call["reconcile"]({})["repaired"] == {}


def test_ipam_check_repair_releases_a_docker_endpoint_whose_container_vanished(
    harness: Harness, workload_ns: str
) -> None:
    harness.agent.workloads.add("cnm-0123456789ab", workload_ns, attachment=Attachment(owner="cnm"))
    workload = harness.agent.workloads.get("cnm-0123456789ab")
    assert workload is not None
    assert harness.call["ipam.check"]({})["vanished_workloads"] == []
    # dockerd went away: the sandbox and both veth ends are gone.
    harness.kernel.observed[workload.host_iface] = Observed(netns_present=False)
    report = harness.call["ipam.check"]({})
    assert report["vanished_workloads"] == ["cnm-0123456789ab"]
    assert harness.agent.workloads.get("cnm-0123456789ab") is not None  # only reported
    report = harness.call["ipam.check"]({"repair": True})
    assert report["released_workloads"] == ["cnm-0123456789ab"]
    assert harness.agent.workloads.get("cnm-0123456789ab") is None
    assert harness.agent.ipam.addresses_of("cnm-0123456789ab") == ()


def test_ipam_gauges_are_read_again_only_when_the_store_changed(
    harness: Harness, workload_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shows = []
    real = harness.agent.ipam.show
    monkeypatch.setattr(harness.agent.ipam, "show", lambda: shows.append(1) or real())
    harness.call["reconcile"]({})
    harness.call["reconcile"]({})
    assert len(shows) <= 1  # the first may find the store moved since start
    before = len(shows)
    harness.call["workload.add"]({"name": "w1", "netns": workload_ns})
    harness.call["reconcile"]({})
    assert len(shows) == before + 1
    in_use = harness.metric("l3fabric_ipam_addresses_in_use", {"pool": "100.64.0.0/24"})
    assert in_use == 1
