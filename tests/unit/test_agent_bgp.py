"""BgpService at its seams: a fake speaker and data plane, a real file
datastore and config. Checks the replay contract and neighbour handling."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from l3fabric.agent.bgp import BgpService
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.routetable import RouteTable
from l3fabric.bgp.events import (
    EndOfRibEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.config import parse_config
from l3fabric.datastore.file import FileDatastore
from l3fabric.model import NodeRecord, Workload, workload_routes
from tests.fakes import Clock, FakeKernel, FakeSpeaker

ip, net = ipaddress.ip_address, ipaddress.ip_network
PEER = ip("198.18.0.2")


Harness = tuple[BgpService, FakeSpeaker, FakeKernel, WorkLoop, Clock, RouteTable]


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
    speaker, dataplane = FakeSpeaker(), FakeKernel(addresses={ip("198.18.0.1")})
    metrics = Metrics(CollectorRegistry())
    table = RouteTable(dataplane, metrics=metrics, clock=clock)
    svc = BgpService(
        config,
        speaker=speaker,
        store=store,
        route_table=table,
        local_addresses=dataplane.local_addresses,
        loop=loop,
        metrics=metrics,
        clock=clock,
        wall_clock=clock,
    )
    yield svc, speaker, dataplane, loop, clock, table
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
    svc, _speaker, dataplane, _loop, _clock, _table = service
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
    assert dataplane.routes[net("100.64.1.1/32")].nexthops[0].gateway == PEER
    svc.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "hold timer expired")])
    assert dataplane.routes == {}
    row = svc.peer_table()[0]
    assert row["state"] == "Active" and row["info"] == "hold timer expired" and row["flaps"] == 1


def test_speaker_waits_for_the_node_addresses(service: Harness) -> None:
    svc, speaker, dataplane, loop, clock, _table = service
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
    svc, _speaker, dataplane, _loop, _clock, table = service
    svc.start()
    svc.handle_events(
        [
            PeerStateEvent(PEER, PeerState.UP),
            UpdateEvent(PEER, ((net("100.64.0.9/32"), PathAttributes(next_hop=PEER)),)),
        ]
    )
    assert net("100.64.0.9/32") in dataplane.routes
    wl = workload("moved-here", "100.64.0.9")
    # As the agent does: wired, its host route to the route table, then BGP.
    dataplane.attach(wl)
    table.workload_changed(wl, None)
    table.flush()
    dataplane.program_calls.clear()
    svc.workload_changed(wl, None, lambda: [wl], lambda: [])
    assert all(not deletes for _replace, deletes in dataplane.program_calls)
    assert dataplane.routes[net("100.64.0.9/32")] == workload_routes(wl)[0]
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
    svc, speaker, dataplane, _loop, _clock, _table = service
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


def test_a_flapping_peer_is_damped_and_let_back_in_later(service: Harness) -> None:
    """Five drops within a minute hold the peer down (out of ExaBGP's
    config), so it cannot make the agent reprogram the kernel in a loop."""
    svc, speaker, _dataplane, loop, clock, _table = service
    svc.start()
    attrs = PathAttributes(next_hop=PEER)
    for _ in range(5):
        svc.handle_events(
            [
                PeerStateEvent(PEER, PeerState.UP),
                UpdateEvent(PEER, ((net("100.64.1.1/32"), attrs),)),
                PeerStateEvent(PEER, PeerState.DOWN, "reset"),
            ]
        )
        clock.now += 1
    row = svc.peer_table()[0]
    assert row["state"] == "Idle" and "flapping; held down 30s" in row["info"]
    assert speaker.neighbors == []
    # Events while held down change nothing.
    svc.handle_events([PeerStateEvent(PEER, PeerState.UP)])
    assert svc.peer_table()[0]["state"] == "Idle"
    clock.now += 31
    turns = iter(range(50))
    loop.run(lambda: not speaker.neighbors and next(turns, None) is not None, lambda: None)
    assert [str(n.peer_address) for n in speaker.neighbors] == ["198.18.0.2"]


def test_occasional_flaps_are_not_damped(service: Harness) -> None:
    svc, speaker, _dataplane, _loop, clock, _table = service
    svc.start()
    for _ in range(10):
        svc.handle_events(
            [PeerStateEvent(PEER, PeerState.UP), PeerStateEvent(PEER, PeerState.DOWN, "reset")]
        )
        clock.now += 20  # four in any minute: under the limit
    assert speaker.neighbors and svc.peer_table()[0]["flaps"] == 10


def test_a_next_hop_off_every_link_is_refused_until_its_link_appears(
    service: Harness, tmp_path: Path
) -> None:
    """The node's on-link networks (read every reconcile pass) judge next
    hops: a route via a gateway on none of them never reaches the kernel,
    which would refuse it; when the link appears it is accepted, and a reload
    keeps judging by the same networks."""
    svc, _speaker, dataplane, _loop, _clock, _table = service
    svc.start()
    svc.set_on_link(frozenset({net("198.18.1.0/24")}))
    svc.handle_events(
        [
            PeerStateEvent(PEER, PeerState.UP),
            UpdateEvent(PEER, ((net("100.64.1.1/32"), PathAttributes(next_hop=PEER)),)),
        ]
    )
    (route,) = svc.received()
    assert (route["accepted"], route["reason"]) == (False, "unreachable-next-hop"), route
    assert dataplane.routes == {}
    svc.set_on_link(frozenset({net("198.18.1.0/24"), net("198.18.0.0/24")}))
    assert set(dataplane.routes) == {net("100.64.1.1/32")}
    svc.reconfigure(
        parse_config(
            {
                "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
                "pools": [{"cidr": "100.64.0.0/16"}],
                "state_dir": str(tmp_path / "state"),
                "datastore": {"type": "file", "path": str(tmp_path / "store")},
                "bgp": {"graceful_restart": {"enabled": False}},
            }
        )
    )
    assert set(dataplane.routes) == {net("100.64.1.1/32")}
    svc.set_on_link(frozenset({net("198.18.1.0/24")}))  # the uplink went
    assert dataplane.routes == {}
    svc.set_on_link(None)  # not known: not checked
    assert set(dataplane.routes) == {net("100.64.1.1/32")}
