"""Long-lived stale routes through the agent's BGP service: the setting reaches
the RIB only for peers with graceful restart, the kernel keeps the routes past
the restart time, and status --peer and the metric show them."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from l3fabric.agent.bgp import BgpService, with_long_lived_stale
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.neighbors import desired_neighbors
from l3fabric.agent.routetable import RouteTable
from l3fabric.bgp.events import (
    EndOfRibEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    UpdateEvent,
)
from l3fabric.config import Config, parse_config
from l3fabric.datastore.file import FileDatastore
from l3fabric.model import NodeRecord
from tests.fakes import Clock, FakeKernel, FakeSpeaker

ip, net = ipaddress.ip_address, ipaddress.ip_network
PEER = ipaddress.IPv4Address("198.18.0.2")
ROUTE = net("100.64.1.1/32")


def config(tmp_path: Path, **graceful_restart: Any) -> Config:
    return parse_config(
        {
            "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
            "pools": [{"cidr": "100.64.0.0/16"}],
            "state_dir": str(tmp_path / "state"),
            "datastore": {"type": "file", "path": str(tmp_path / "store")},
            "bgp": {"graceful_restart": graceful_restart},
        }
    )


class Service:
    def __init__(self, tmp_path: Path, cfg: Config) -> None:
        self.store = FileDatastore(tmp_path / "store")
        record = NodeRecord("node2", 64512, PEER)
        self.store.put("/l3fabric/nodes/node2", json.dumps(record.to_dict()).encode())
        self.clock = Clock()
        self.loop = WorkLoop(self.clock)
        self.dataplane = FakeKernel(addresses={ip("198.18.0.1")})
        self.metrics = Metrics(CollectorRegistry())
        self.svc = BgpService(
            cfg,
            speaker=FakeSpeaker(),
            store=self.store,
            route_table=RouteTable(self.dataplane, metrics=self.metrics, clock=self.clock),
            local_addresses=self.dataplane.local_addresses,
            loop=self.loop,
            metrics=self.metrics,
            clock=self.clock,
            wall_clock=self.clock,
        )

    def at(self, when: float) -> None:
        """Move the clock and let the loop run the timers that are due."""
        self.clock.now = when
        turns = iter([True])
        self.loop.run(lambda: next(turns, False), lambda: None)

    def gr(self) -> dict[str, Any]:
        detail = self.svc.peer_detail(PEER)
        assert detail is not None
        return detail["graceful_restart"]

    def long_lived_metric(self) -> float | None:
        return self.metrics.registry.get_sample_value(
            "l3fabric_bgp_prefixes", {"peer": str(PEER), "direction": "long_lived_stale"}
        )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    made = Service(
        tmp_path, config(tmp_path, enabled=True, restart_time=5, long_lived_stale_time=60)
    )
    made.svc.start()
    yield made
    made.svc.stop()
    made.store.close()


def test_routes_stay_in_the_kernel_past_the_restart_time_and_are_shown(
    service: Service,
) -> None:
    svc = service.svc
    svc.handle_events(
        [
            PeerStateEvent(PEER, PeerState.UP),
            UpdateEvent(PEER, ((ROUTE, PathAttributes(next_hop=PEER)),)),
            EndOfRibEvent(PEER, 4),
        ]
    )
    assert service.gr()["long_lived_stale_time"] == 60
    service.clock.now = 10.0
    svc.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "peer reset")])
    assert service.gr()["state"] == "peer restarting"
    service.at(15.0)
    assert set(service.dataplane.routes) == {ROUTE}
    assert [r["state"] for r in svc.received()] == ["long-lived-stale"]
    gr = service.gr()
    assert (gr["state"], gr["stale_routes"], gr["long_lived_stale_routes"]) == (
        "long-lived stale",
        1,
        1,
    )
    svc.export_metrics()
    assert service.long_lived_metric() == 1
    service.at(75.0)
    assert service.dataplane.routes == {}
    svc.export_metrics()
    assert service.long_lived_metric() == 0


def test_the_setting_reaches_only_peers_with_graceful_restart(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
            "pools": [{"cidr": "100.64.0.0/16"}],
            "bgp": {
                "mesh": False,
                "graceful_restart": {"long_lived_stale_time": 600},
                "peers": [
                    {"address": "198.18.0.11", "asn": 64512, "role": "route-reflector"},
                    {
                        "address": "198.18.0.12",
                        "asn": 64512,
                        "role": "route-reflector",
                        "graceful_restart": False,
                    },
                ],
            },
        }
    )
    plan = desired_neighbors(cfg, [])
    infos = {
        str(a): d.info.long_lived_stale_time
        for a, d in with_long_lived_stale(plan.neighbors, cfg.bgp.graceful_restart).items()
    }
    assert infos == {"198.18.0.11": 600, "198.18.0.12": None}


def test_without_the_setting_status_shows_graceful_restart_as_before(tmp_path: Path) -> None:
    made = Service(tmp_path, config(tmp_path, enabled=True, restart_time=5))
    made.svc.start()
    try:
        assert set(made.gr()) == {"enabled", "restart_time", "state", "stale_routes"}
    finally:
        made.svc.stop()
        made.store.close()


def test_a_restart_time_that_begins_later_but_ends_sooner_is_kept_to(tmp_path: Path) -> None:
    """One expiry timer is pending for the first peer's long-lived time (t=75)
    when a second peer goes down with a restart time ending at t=25: its
    routes turn long-lived stale at 25, not when the first peer's time ends."""
    peer3, route3 = ipaddress.IPv4Address("198.18.0.3"), net("100.64.2.1/32")
    made = Service(
        tmp_path, config(tmp_path, enabled=True, restart_time=5, long_lived_stale_time=60)
    )
    record = NodeRecord("node3", 64512, peer3)
    made.store.put("/l3fabric/nodes/node3", json.dumps(record.to_dict()).encode())
    made.svc.start()
    try:
        svc = made.svc
        made.at(0.0)
        for peer, route in ((PEER, ROUTE), (peer3, route3)):
            svc.handle_events(
                [
                    PeerStateEvent(peer, PeerState.UP),
                    UpdateEvent(peer, ((route, PathAttributes(next_hop=peer)),)),
                    EndOfRibEvent(peer, 4),
                ]
            )
        assert {r["prefix"] for r in svc.received()} == {str(ROUTE), str(route3)}
        made.clock.now = 10.0
        svc.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "peer reset")])
        made.at(15.0)
        made.clock.now = 20.0
        svc.handle_events([PeerStateEvent(peer3, PeerState.DOWN, "peer reset")])
        made.at(25.0)
        states = {r["prefix"]: r["state"] for r in svc.received()}
        assert states == {str(ROUTE): "long-lived-stale", str(route3): "long-lived-stale"}
        assert set(made.dataplane.routes) == {ROUTE, route3}
    finally:
        made.svc.stop()
        made.store.close()
