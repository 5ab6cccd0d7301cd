"""BgpService at its seams: a fake speaker and data plane, a real file
datastore and config. Checks the replay contract and neighbour handling."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from l3fabric.agent.bgp import BgpService
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.bgp.events import (
    BgpEvent,
    EndOfRibEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.exabgp import NeighborSpec
from l3fabric.config import parse_config
from l3fabric.datastore.file import FileDatastore
from l3fabric.model import IPAddress, IPNetwork, NodeRecord, Route, Workload

ip, net = ipaddress.ip_address, ipaddress.ip_network
PEER = ip("198.18.0.2")


class FakeSpeaker:
    def __init__(self) -> None:
        self.started = False
        self.neighbors: list[NeighborSpec] = []
        self.sent: list[str] = []

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool:
        self.neighbors = list(neighbors)
        return True

    def send(self, lines: Sequence[str]) -> bool:
        self.sent.extend(lines)
        return self.started

    def events(self, timeout: float = 0.0) -> list[BgpEvent]:
        return []

    @property
    def pid(self) -> int | None:
        return 1 if self.started else None


class FakeDataplane:
    def __init__(self, addresses: set[IPAddress]) -> None:
        self.addresses = addresses
        self.routes: dict[IPNetwork, Route] = {}

    def local_addresses(self) -> set[IPAddress]:
        return set(self.addresses)

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[object]:
        for route in replace:
            self.routes[route.prefix] = route
        for prefix in delete:
            self.routes.pop(prefix, None)
        return []


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


Harness = tuple[BgpService, FakeSpeaker, FakeDataplane, WorkLoop, Clock]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Harness]:
    config = parse_config(
        {
            "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
            "pools": [{"cidr": "100.64.0.0/16"}],
            "state_dir": str(tmp_path / "state"),
            "datastore": {"type": "file", "path": str(tmp_path / "store")},
            "bgp": {"graceful_restart": {"enabled": False}},
        }
    )
    store = FileDatastore(tmp_path / "store")
    peer = NodeRecord("node2", 64512, ipaddress.IPv4Address("198.18.0.2"))
    store.put("/l3fabric/nodes/node2", json.dumps(peer.to_dict()).encode())
    clock = Clock()
    loop = WorkLoop(clock)
    speaker, dataplane = FakeSpeaker(), FakeDataplane({ip("198.18.0.1")})
    svc = BgpService(
        config,
        speaker=speaker,
        store=store,
        dataplane=dataplane,  # type: ignore[arg-type]
        loop=loop,
        metrics=Metrics(CollectorRegistry()),
        clock=clock,
        wall_clock=clock,
    )
    yield svc, speaker, dataplane, loop, clock
    svc.stop()
    store.close()


def workload(name: str, address: str) -> Workload:
    return Workload(name, "node1", "/run/netns/x", (ip(address),))


def test_mesh_neighbour_from_the_datastore(service: Harness) -> None:
    svc, speaker, *_ = service
    svc.start()
    assert speaker.started
    assert [str(n.peer_address) for n in speaker.neighbors] == ["198.18.0.2"]
    assert speaker.neighbors[0].families == ("ipv4",)


def test_replay_then_end_of_rib_when_a_session_comes_up(service: Harness) -> None:
    svc, speaker, *_ = service
    svc.start()
    svc.set_advertisements([workload("a", "100.64.0.1"), workload("b", "100.64.0.2")])
    speaker.sent.clear()
    svc.handle_events([SpeakerRestarted(2), PeerStateEvent(PEER, PeerState.UP)])
    assert speaker.sent == [
        "neighbor 198.18.0.2 announce attributes next-hop 198.18.0.1 "
        "nlri 100.64.0.1/32 100.64.0.2/32",
        "neighbor 198.18.0.2 announce eor ipv4 unicast",
    ]
    assert svc.peer_table()[0]["state"] == "Established"
    assert svc.peer_table()[0]["advertised"] == 2


def test_workload_changes_announce_and_withdraw_only_what_changed(service: Harness) -> None:
    svc, speaker, *_ = service
    svc.start()
    a, b = workload("a", "100.64.0.1"), workload("b", "100.64.0.2")
    svc.set_advertisements([a])
    speaker.sent.clear()
    svc.workload_changed(b, None, lambda: [a, b], lambda: [])
    assert speaker.sent == [
        "neighbor 198.18.0.2 announce attributes next-hop 198.18.0.1 nlri 100.64.0.2/32"
    ]
    speaker.sent.clear()
    svc.workload_changed(None, a, lambda: [b], lambda: [])
    assert speaker.sent == ["neighbor 198.18.0.2 withdraw attributes nlri 100.64.0.1/32"]


def test_learned_routes_are_programmed_and_dropped_with_the_session(service: Harness) -> None:
    svc, _speaker, dataplane, _loop, _clock = service
    svc.start()
    attrs = PathAttributes(next_hop=PEER)
    svc.handle_events(
        [
            PeerStateEvent(PEER, PeerState.UP),
            UpdateEvent(PEER, ((net("100.64.1.1/32"), attrs),)),
            EndOfRibEvent(PEER, 4),
        ]
    )
    assert set(dataplane.routes) == {net("100.64.1.1/32")}
    assert svc.learned_routes()[net("100.64.1.1/32")].nexthops[0].gateway == PEER
    svc.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "hold timer expired")])
    assert dataplane.routes == {}
    row = svc.peer_table()[0]
    assert row["state"] == "Active" and row["info"] == "hold timer expired" and row["flaps"] == 1


def test_speaker_waits_for_the_node_addresses(service: Harness) -> None:
    svc, speaker, dataplane, loop, clock = service
    dataplane.addresses = set()
    svc.start()
    assert not speaker.started
    dataplane.addresses = {ip("198.18.0.1")}
    clock.now += 2
    turns = iter(range(50))  # bounded: a bug must fail the test, not hang it
    loop.run(lambda: not speaker.started and next(turns, None) is not None, lambda: None)
    assert speaker.started


def test_a_workload_added_over_a_learned_route_keeps_its_host_route(service: Harness) -> None:
    """The peer's path for the address is rejected once it is local; that must
    not delete the prefix, which is now the local workload's route."""
    svc, _speaker, dataplane, _loop, _clock = service
    svc.start()
    svc.handle_events(
        [
            PeerStateEvent(PEER, PeerState.UP),
            UpdateEvent(PEER, ((net("100.64.0.9/32"), PathAttributes(next_hop=PEER)),)),
        ]
    )
    assert net("100.64.0.9/32") in dataplane.routes
    deletes: list[IPNetwork] = []
    original = dataplane.program

    def spy(replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[object]:
        deletes.extend(delete)
        return original(replace, delete)

    dataplane.program = spy  # type: ignore[method-assign]
    wl = workload("moved-here", "100.64.0.9")
    svc.workload_changed(wl, None, lambda: [wl], lambda: [])
    assert deletes == []
    received = svc.received("198.18.0.2")
    assert [r["reason"] for r in received] == ["covers-local-workload"]


def test_a_bad_node_record_does_not_take_the_mesh_down(service: Harness, tmp_path: Path) -> None:
    svc, speaker, *_ = service
    store = FileDatastore(tmp_path / "store")
    odd = NodeRecord("node3", 65000, ipaddress.IPv4Address("198.18.0.3"))  # another AS
    store.put("/l3fabric/nodes/node3", json.dumps(odd.to_dict()).encode())
    store.put("/l3fabric/nodes/node4", b'["not", "a", "record"]')
    svc.start()
    assert [str(n.peer_address) for n in speaker.neighbors] == ["198.18.0.2"]


def test_lowering_max_prefixes_on_reload_tears_the_session_down(
    service: Harness, tmp_path: Path
) -> None:
    svc, speaker, dataplane, _loop, _clock = service
    svc.start()
    attrs = PathAttributes(next_hop=PEER)
    routes = tuple((net(f"100.64.1.{i}/32"), attrs) for i in range(5))
    svc.handle_events([PeerStateEvent(PEER, PeerState.UP), UpdateEvent(PEER, routes)])
    assert len(dataplane.routes) == 5
    svc.reconfigure(
        parse_config(
            {
                "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
                "pools": [{"cidr": "100.64.0.0/16"}],
                "state_dir": str(tmp_path / "state"),
                "datastore": {"type": "file", "path": str(tmp_path / "store")},
                "bgp": {
                    "graceful_restart": {"enabled": False},
                    "import_policy": {"max_prefixes": 3},
                },
            }
        )
    )
    row = svc.peer_table()[0]
    assert row["state"] == "Idle" and "max-prefix" in row["info"]
    assert dataplane.routes == {}
    assert speaker.neighbors == []  # left out of ExaBGP's config while held down


def test_a_session_flap_gets_only_end_of_rib_until_exabgp_restarts(service: Harness) -> None:
    """ExaBGP keeps what it was told for a configured neighbour and resends it
    when the session returns; after ExaBGP restarts, the agent replays."""
    svc, speaker, *_ = service
    svc.start()
    svc.set_advertisements([workload("a", "100.64.0.1")])
    svc.handle_events([PeerStateEvent(PEER, PeerState.UP)])
    speaker.sent.clear()
    svc.handle_events(
        [PeerStateEvent(PEER, PeerState.DOWN, "reset"), PeerStateEvent(PEER, PeerState.UP)]
    )
    assert speaker.sent == ["neighbor 198.18.0.2 announce eor ipv4 unicast"]
    speaker.sent.clear()
    svc.handle_events([SpeakerRestarted(2), PeerStateEvent(PEER, PeerState.UP)])
    assert speaker.sent == [
        "neighbor 198.18.0.2 announce attributes next-hop 198.18.0.1 nlri 100.64.0.1/32",
        "neighbor 198.18.0.2 announce eor ipv4 unicast",
    ]
