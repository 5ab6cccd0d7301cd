"""`routes` with workload names, `routes --advertised --peer` and
`status --peer`, through the agent's control handlers with its fakes."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.agent.server import RequestError
from l3fabric.bgp.events import (
    Family,
    NegotiatedEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    RouteRefresh,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.cli.main import main
from l3fabric.model import NodeRecord
from tests.nettools import Namespaces
from tests.unit.clipatch import through
from tests.unit.test_agent import Harness, node_config

PEER = ipaddress.IPv4Address("198.18.0.2")
OTHER = ipaddress.IPv4Address("198.18.0.3")
# The peer offered less than our 90 s, and add-path for IPv4 in one direction.
NEGOTIATED = NegotiatedEvent(
    PEER,
    hold_time=30,
    asn4=True,
    families=(Family.IPV4_UNICAST,),
    route_refresh=RouteRefresh.ENHANCED,
    add_path_receive=(Family.IPV4_UNICAST,),
)
NEGOTIATED_VIEW = {
    "hold_time": 30,
    "keepalive_interval": 10,
    "asn4": True,
    "families": ["ipv4 unicast"],
    "route_refresh": "enhanced",
    "add_path": {"send": [], "receive": ["ipv4 unicast"]},
}


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    config = node_config(tmp_path, graceful_restart={"enabled": True, "restart_time": 120})
    made = Harness(tmp_path, config)
    made.agent.start()
    try:
        for name, address in (("node2", PEER), ("node3", OTHER)):
            record = NodeRecord(name, 64512, address)
            made.store.put(f"/l3fabric/nodes/{name}", json.dumps(record.to_dict()).encode())
        assert made.agent.bgp is not None
        made.agent.bgp.refresh_neighbors()
        made.agent.bgp.handle_events([PeerStateEvent(PEER, PeerState.UP)])
        yield made
    finally:
        made.agent.stop()


@pytest.fixture
def web(harness: Harness, netns: Namespaces) -> str:
    added = harness.call["workload.add"]({"name": "web", "netns": f"/run/netns/{netns.add('w')}"})
    return str(added["addresses"][0])


def test_programmed_routes_name_the_local_workload(harness: Harness, web: str) -> None:
    assert harness.agent.bgp is not None
    route = (ipaddress.ip_network("100.64.0.128/28"), PathAttributes(next_hop=PEER))
    harness.agent.bgp.handle_events([UpdateEvent(PEER, (route,))])
    rows = {r["prefix"]: r for r in harness.call["routes"]({})["routes"]}
    assert rows[f"{web}/32"]["kind"] == "local" and rows[f"{web}/32"]["workload"] == "web"
    assert rows["100.64.0.128/28"]["kind"] == "learned"
    assert rows["100.64.0.128/28"]["workload"] is None


def test_advertised_to_a_peer_is_what_its_session_carries(harness: Harness, web: str) -> None:
    sent = harness.call["routes"]({"view": "advertised", "peer": str(PEER)})
    assert sent["peer"] == str(PEER)
    assert sent["routes"] == [{"prefix": f"{web}/32", "next_hop": "198.18.0.1"}]
    # node3's session is not Established: nothing is sent to it.
    assert harness.call["routes"]({"view": "advertised", "peer": str(OTHER)})["routes"] == []
    for bad, code in (("198.18.0.99", "not-found"), ("nonsense", "invalid")):
        with pytest.raises(RequestError) as refused:
            harness.call["routes"]({"view": "advertised", "peer": bad})
        assert refused.value.code == code


def test_status_peer_shows_timers_families_restart_state_and_history(harness: Harness) -> None:
    assert harness.agent.bgp is not None
    detail = harness.call["status"]({"peer": str(PEER)})["peer"]
    assert detail["state"] == "Established" and detail["uptime_seconds"] == 0.0
    assert detail["hold_time"] == 90 and detail["keepalive_interval"] == 30
    assert detail["families"] == ["ipv4"] and detail["local_address"] == "198.18.0.1"
    assert detail["graceful_restart"] == {
        "enabled": True,
        "restart_time": 120,
        "state": "ready",
        "stale_routes": 0,
    }
    route = (ipaddress.ip_network("100.64.0.128/28"), PathAttributes(next_hop=PEER))
    harness.agent.bgp.handle_events([UpdateEvent(PEER, (route,))])
    harness.clock.advance(42)
    harness.agent.bgp.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "hold timer expired")])
    down = harness.call["status"]({"peer": str(PEER)})["peer"]
    assert down["state"] == "Active" and down["uptime_seconds"] is None
    assert down["flaps"] == 1 and "hold timer expired" in down["last_error"]
    assert down["graceful_restart"]["state"] == "peer restarting"
    assert down["graceful_restart"]["stale_routes"] == 1
    with pytest.raises(RequestError) as refused:
        harness.call["status"]({"peer": "198.18.0.99"})
    assert refused.value.code == "not-found"


def test_the_commands_print_the_new_views(
    harness: Harness,
    web: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    through(monkeypatch, harness.call)
    assert main(["routes"]) == 0
    assert "WORKLOAD" in (out := capsys.readouterr().out) and " web" in out
    assert main(["routes", "--advertised", "--peer", str(PEER)]) == 0
    assert f"{web}/32" in capsys.readouterr().out
    assert main(["routes", "--peer", str(PEER)]) == 2  # --peer needs a BGP view
    assert main(["status", "--peer", str(PEER)]) == 0
    shown = capsys.readouterr().out
    # The harness's session came up without a negotiated message: the offer.
    assert "hold time:        90s offered (keepalive 30s)" in shown
    assert "families:         ipv4 offered" in shown
    assert "graceful restart: ready, restart time 120s, 0 stale" in shown
    assert main(["status", "--peer", str(OTHER)]) == 1  # not Established
    assert main(["status", "--peer", "nonsense"]) == 2


def _negotiated(harness: Harness, address: ipaddress.IPv4Address = PEER) -> object:
    return harness.call["status"]({"peer": str(address)})["peer"]["negotiated"]


def test_negotiated_is_kept_for_the_session_and_cleared_when_it_ends(harness: Harness) -> None:
    bgp = harness.agent.bgp
    assert bgp is not None
    assert _negotiated(harness) is None  # up, but ExaBGP never said what it negotiated
    # ExaBGP's order: the OPEN exchange is done (negotiated), then the session
    # is Established (up). Before up, nothing is shown.
    bgp.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "peer reset")])
    bgp.handle_events([PeerStateEvent(PEER, PeerState.CONNECTED), NEGOTIATED])
    assert _negotiated(harness) is None
    bgp.handle_events([PeerStateEvent(PEER, PeerState.UP)])
    detail = harness.call["status"]({"peer": str(PEER)})["peer"]
    assert detail["negotiated"] == NEGOTIATED_VIEW
    # The offer stays as it was: a contract of its own.
    assert (detail["hold_time"], detail["keepalive_interval"], detail["families"]) == (
        90,
        30,
        ["ipv4"],
    )
    assert _negotiated(harness, OTHER) is None  # another peer's session is not this one's

    bgp.handle_events([PeerStateEvent(PEER, PeerState.DOWN, "hold timer expired")])
    assert _negotiated(harness) is None
    # A session that comes back without a new OPEN exchange shows nothing
    # stale from the old one.
    bgp.handle_events([PeerStateEvent(PEER, PeerState.UP)])
    assert _negotiated(harness) is None

    bgp.handle_events([NEGOTIATED, PeerStateEvent(PEER, PeerState.UP)])
    assert _negotiated(harness) == NEGOTIATED_VIEW
    bgp.handle_events([SpeakerRestarted(2)])
    bgp.handle_events([PeerStateEvent(PEER, PeerState.UP)])
    assert _negotiated(harness) is None


def test_negotiated_for_an_unknown_peer_is_ignored(harness: Harness) -> None:
    bgp = harness.agent.bgp
    assert bgp is not None
    stranger = ipaddress.IPv4Address("198.18.0.99")
    bgp.handle_events([NegotiatedEvent(stranger, 9, True, (), RouteRefresh.ABSENT)])
    assert _negotiated(harness) is None


def test_the_peer_table_shows_negotiated_hold_time_families_and_capabilities(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bgp = harness.agent.bgp
    assert bgp is not None
    bgp.handle_events([NEGOTIATED, PeerStateEvent(PEER, PeerState.UP)])
    through(monkeypatch, harness.call)
    assert main(["status", "--peer", str(PEER)]) == 0
    shown = capsys.readouterr().out
    assert "hold time:        30s (keepalive 10s), offered 90s" in shown
    assert "families:         ipv4 unicast, offered ipv4" in shown
    assert (
        "capabilities:     4-octet AS, route refresh (enhanced), add-path receive ipv4 unicast"
        in shown
    )
    assert main(["status", "--peer", str(PEER), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["peer"]["negotiated"] == NEGOTIATED_VIEW
