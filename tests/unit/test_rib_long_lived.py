"""Long-lived stale routes (RFC 9494 applied locally by the RIB): kept past the
graceful-restart time, least preferred, swept when their own time ends, at
the peer's End-of-RIB, or when a session ends with a NOTIFICATION."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.bgp.events import (
    EndOfRibEvent,
    NotificationEvent,
    PathAttributes,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib import Rib
from l3fabric.model import IPAddress
from tests.fakes import Clock

ip = ipaddress.ip_address
net = ipaddress.ip_network

ASN = 64512
POOLS = (net("100.64.0.0/16"), net("fd00:64::/48"))
NODE_B = ip("198.18.0.2")
NODE_C = ip("198.18.0.3")
RR1 = ip("198.18.0.11")
RR2 = ip("198.18.0.12")
RESTART = 5.0
LONG_LIVED = 60
W1, W2 = "100.64.2.7/32", "100.64.2.8/32"
W6 = "fd00:64::2:7/128"


def reflector(address: IPAddress, **kw: object) -> PeerInfo:
    settings_: dict[str, object] = {
        "graceful_restart_time": RESTART,
        "long_lived_stale_time": LONG_LIVED,
    }
    settings_.update(kw)
    return PeerInfo(address, "route-reflector", ASN, ASN, **settings_)  # type: ignore[arg-type]


class Fabric:
    """A RIB fed with the injected clock's time."""

    def __init__(self, peers: Sequence[PeerInfo]) -> None:
        self.clock = Clock(0.0)
        self.rib = Rib(ImportPolicy(pools=POOLS, node_addresses=(ip("198.18.0.1"),)))
        assert self.rib.set_peers(peers) == []

    def up(self, peer: IPAddress) -> None:
        self.rib.apply(PeerStateEvent(peer, PeerState.UP), self.clock())

    def down(self, peer: IPAddress, notification: str | None = None) -> None:
        if notification is not None:
            self.rib.apply(NotificationEvent(peer, "received", 6, 2, notification), self.clock())
        self.rib.apply(PeerStateEvent(peer, PeerState.DOWN, "peer reset"), self.clock())

    def announce(
        self, peer: IPAddress, prefixes: Sequence[str], next_hop: IPAddress, **kw: object
    ) -> None:
        attrs = PathAttributes(next_hop=next_hop, **kw)  # type: ignore[arg-type]
        event = UpdateEvent(peer, announced=tuple((net(p), attrs) for p in prefixes))
        assert self.rib.apply(event, self.clock()) == []

    def withdraw(self, peer: IPAddress, prefixes: Sequence[str]) -> None:
        self.rib.apply(UpdateEvent(peer, withdrawn=tuple(net(p) for p in prefixes)), self.clock())

    def eor(self, peer: IPAddress, afi: int = 4) -> None:
        self.rib.apply(EndOfRibEvent(peer, afi), self.clock())

    def at(self, when: float) -> None:
        """Move the clock to `when` and run expiry, as the agent's timer does."""
        self.clock.now = when
        self.rib.expire(when)

    def states(self, peer: IPAddress | None = None) -> dict[tuple[str, str], str]:
        return {(str(r.prefix), str(r.peer)): r.state for r in self.rib.received(peer)}

    def gateways(self, prefix: str) -> list[IPAddress]:
        route = self.rib.best_routes()[net(prefix)]
        return sorted(nh.gateway for nh in route.nexthops if nh.gateway is not None)


def both_reflectors_down(*, ipv6: bool = False) -> Fabric:
    """Node B's workloads reflected by both RRs (and one IPv6 route from RR1);
    then both RRs die at t=10."""
    fabric = Fabric([reflector(RR1), reflector(RR2)])
    for rr in (RR1, RR2):
        fabric.up(rr)
        fabric.announce(rr, [W1, W2], NODE_B)
    if ipv6:
        fabric.announce(RR1, [W6], ip("fd00:198:18::2"))
    fabric.rib.take_changes()
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.down(RR2)
    return fabric


# ----- expiry order ----------------------------------------------------------------


def test_routes_become_long_lived_stale_when_the_restart_time_ends_and_go_after_theirs() -> None:
    fabric = both_reflectors_down()
    assert set(fabric.states().values()) == {"stale"}
    assert fabric.rib.next_deadline() == 10.0 + RESTART
    fabric.at(14.9)
    assert set(fabric.states().values()) == {"stale"}
    fabric.at(15.0)
    # Kept, and the kernel has nothing to change: same next hop as before.
    assert set(fabric.states().values()) == {"long-lived-stale"}
    assert sorted(map(str, fabric.rib.best_routes())) == [W1, W2]
    assert fabric.gateways(W1) == [NODE_B]
    assert not fabric.rib.take_changes()
    stats = fabric.rib.stats()[RR1]
    assert (stats.stale, stats.long_lived_stale) == (2, 2)
    assert stats.to_dict()["long_lived_stale"] == 2
    received = fabric.rib.received(RR1)[0].to_dict()
    assert (received["stale"], received["state"]) == (True, "long-lived-stale")
    # The long-lived time counts from the end of the restart time.
    assert fabric.rib.next_deadline() == 15.0 + LONG_LIVED
    fabric.at(74.9)
    assert len(fabric.rib.best_routes()) == 2
    fabric.at(75.0)
    assert fabric.rib.take_changes().delete == [net(W1), net(W2)]
    assert fabric.rib.received() == [] and fabric.rib.next_deadline() is None
    assert fabric.rib.stats()[RR1].long_lived_stale == 0


def test_a_late_expiry_call_ends_both_times_in_order() -> None:
    """A timer that fires long after both deadlines sweeps at once: the
    long-lived time started when the restart time ended, not at the call."""
    fabric = both_reflectors_down()
    fabric.at(10.0 + RESTART + LONG_LIVED + 1)
    assert fabric.rib.best_routes() == {} and fabric.rib.next_deadline() is None


def test_without_a_long_lived_time_the_restart_time_still_sweeps() -> None:
    fabric = Fabric([reflector(RR1, long_lived_stale_time=0)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.at(15.0)
    assert fabric.rib.best_routes() == {} and fabric.rib.next_deadline() is None


def test_a_peer_without_graceful_restart_has_no_long_lived_routes_either() -> None:
    fabric = Fabric([reflector(RR1, graceful_restart_time=None)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.down(RR1)
    assert fabric.rib.best_routes() == {} and fabric.rib.next_deadline() is None


def test_speaker_restart_makes_every_route_stale_then_long_lived() -> None:
    fabric = Fabric([reflector(RR1)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.rib.apply(SpeakerRestarted(generation=2), 10.0)
    fabric.at(15.0)
    assert fabric.states() == {(W1, str(RR1)): "long-lived-stale"}


def test_restart_time_ending_while_the_peer_is_back_without_end_of_rib() -> None:
    """The peer is up and has sent one route again but no End-of-RIB when the
    restart time ends: the rest become long-lived stale instead of going."""
    fabric = both_reflectors_down()
    fabric.clock.now = 12.0
    fabric.up(RR1)
    fabric.announce(RR1, [W1], NODE_B)
    fabric.at(15.0)
    assert fabric.states(RR1) == {(W1, str(RR1)): "fresh", (W2, str(RR1)): "long-lived-stale"}
    fabric.eor(RR1)
    assert fabric.states(RR1) == {(W1, str(RR1)): "fresh"}


# ----- depreference ------------------------------------------------------------------


def test_any_other_path_beats_a_long_lived_stale_one_whatever_its_attributes() -> None:
    fabric = Fabric([reflector(RR1), reflector(RR2)])
    # RR1's path is far better on every step of the decision process.
    fabric.announce(RR1, [W1], NODE_B, local_pref=300)
    fabric.announce(RR2, [W1], NODE_C, local_pref=50, as_path=(65001, 65002), origin="incomplete")
    assert fabric.gateways(W1) == [NODE_B]
    fabric.clock.now = 10.0
    fabric.down(RR1)
    # Plain staleness does not count in selection: still RR1's path.
    fabric.at(14.0)
    assert fabric.gateways(W1) == [NODE_B]
    fabric.rib.take_changes()
    fabric.at(15.0)
    assert fabric.gateways(W1) == [NODE_C]
    assert [r.best for r in fabric.rib.received()] == [False, True]
    assert [r.nexthops for r in fabric.rib.take_changes().replace] == [
        fabric.rib.best_routes()[net(W1)].nexthops
    ]
    # The fresh path withdrawn: the long-lived stale one is all there is.
    fabric.withdraw(RR2, [W1])
    assert fabric.gateways(W1) == [NODE_B]
    # RR1 back with the route: fresh again and preferred again.
    fabric.up(RR1)
    fabric.announce(RR2, [W1], NODE_C, local_pref=50)
    fabric.announce(RR1, [W1], NODE_B, local_pref=300)
    assert fabric.states(RR1) == {(W1, str(RR1)): "fresh"}
    assert fabric.gateways(W1) == [NODE_B]


def test_a_stale_path_beats_a_long_lived_stale_one() -> None:
    fabric = Fabric([reflector(RR1), reflector(RR2, graceful_restart_time=120.0)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.announce(RR2, [W1], NODE_C)
    assert fabric.gateways(W1) == [NODE_B, NODE_C]  # ECMP
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.down(RR2)
    fabric.at(15.0)
    assert fabric.states() == {(W1, str(RR1)): "long-lived-stale", (W1, str(RR2)): "stale"}
    assert fabric.gateways(W1) == [NODE_C]


def test_long_lived_stale_paths_share_ecmp_among_themselves() -> None:
    fabric = Fabric([reflector(RR1), reflector(RR2)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.announce(RR2, [W1], NODE_C)
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.down(RR2)
    fabric.at(15.0)
    assert fabric.gateways(W1) == [NODE_B, NODE_C]


# ----- the peer comes back: End-of-RIB, flaps, NOTIFICATION -----------------------------


def test_end_of_rib_after_the_peer_is_back_sweeps_what_it_did_not_send_again() -> None:
    fabric = both_reflectors_down(ipv6=True)
    fabric.at(15.0)
    fabric.clock.now = 40.0
    fabric.up(RR1)
    fabric.announce(RR1, [W1], NODE_B)
    fabric.eor(RR1, 4)
    assert fabric.states(RR1) == {(W1, str(RR1)): "fresh", (W6, str(RR1)): "long-lived-stale"}
    fabric.eor(RR1, 6)
    assert fabric.states(RR1) == {(W1, str(RR1)): "fresh"}
    # W2 lost RR1's path but RR2's long-lived stale one still routes it.
    assert fabric.states(RR2) == {
        (W1, str(RR2)): "long-lived-stale",
        (W2, str(RR2)): "long-lived-stale",
    }
    assert fabric.gateways(W2) == [NODE_B]
    assert fabric.rib.next_deadline() == 75.0  # RR2's, still running
    fabric.up(RR2)
    fabric.announce(RR2, [W1], NODE_B)
    fabric.eor(RR2)
    assert sorted(map(str, fabric.rib.best_routes())) == [W1]
    assert fabric.rib.next_deadline() is None


def test_a_flap_neither_extends_nor_deletes_long_lived_stale_routes() -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.clock.now = 40.0
    fabric.up(RR1)
    fabric.announce(RR1, [W1], NODE_B)  # W1 sent again, then the session drops before End-of-RIB
    fabric.clock.now = 41.0
    fabric.down(RR1)
    assert fabric.states(RR1) == {(W1, str(RR1)): "stale", (W2, str(RR1)): "long-lived-stale"}
    assert fabric.rib.next_deadline() == 41.0 + RESTART
    fabric.at(46.0)
    assert set(fabric.states(RR1).values()) == {"long-lived-stale"}
    # W2 keeps its first time; W1 has its own from the second restart time.
    fabric.at(75.0)
    assert fabric.states(RR1) == {(W1, str(RR1)): "long-lived-stale"}
    assert fabric.rib.next_deadline() == 46.0 + LONG_LIVED
    fabric.at(46.0 + LONG_LIVED)
    assert fabric.rib.received(RR1) == []


@pytest.mark.parametrize("message", ["administrative shutdown", "administrative reset"])
def test_a_session_ended_with_a_notification_flushes_long_lived_stale_routes(
    message: str,
) -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.clock.now = 30.0
    fabric.up(RR1)
    fabric.down(RR1, notification=message)
    assert fabric.rib.received(RR1) == []
    assert fabric.gateways(W1) == [NODE_B]  # RR2's long-lived stale paths remain
    assert fabric.rib.next_deadline() == 75.0


def test_our_hold_timer_expiring_is_a_silent_peer_not_a_goodbye() -> None:
    """A reflector whose host died or was cut off says nothing: our hold timer
    expires and ExaBGP sends the NOTIFICATION. With a long-lived time its
    routes are kept as for a dropped connection; without one they go (the
    graceful-restart rule for any NOTIFICATION)."""
    fabric = Fabric([reflector(RR1), reflector(RR2, long_lived_stale_time=0)])
    for rr in (RR1, RR2):
        fabric.announce(rr, [W1], NODE_B)
    fabric.clock.now = 10.0
    for rr in (RR1, RR2):
        expired = NotificationEvent(rr, "sent", 4, 0, "hold timer expired")
        fabric.rib.apply(expired, fabric.clock())
        fabric.rib.apply(PeerStateEvent(rr, PeerState.DOWN, "hold timer"), fabric.clock())
    assert fabric.states() == {(W1, str(RR1)): "stale"}
    assert fabric.rib.stats()[RR1].last_down_reason == "hold timer"
    fabric.at(15.0)
    assert fabric.states() == {(W1, str(RR1)): "long-lived-stale"}
    # The next session forgets it: a Cease then is a goodbye again.
    fabric.up(RR1)
    fabric.down(RR1, notification="administrative shutdown")
    assert fabric.rib.received() == []


def test_a_withdrawal_after_the_peer_is_back_removes_a_long_lived_stale_route() -> None:
    fabric = Fabric([reflector(RR1)])
    fabric.announce(RR1, [W1, W2], NODE_B)
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.at(15.0)
    fabric.up(RR1)
    fabric.withdraw(RR1, [W2])
    assert fabric.states() == {(W1, str(RR1)): "long-lived-stale"}
    assert fabric.rib.stats()[RR1].long_lived_stale == 1


# ----- reconfigure ---------------------------------------------------------------------


def test_turning_the_long_lived_time_off_sweeps_long_lived_routes_at_once() -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.rib.take_changes()
    assert fabric.rib.set_peers([reflector(RR1, long_lived_stale_time=0), reflector(RR2)]) == []
    assert fabric.rib.received(RR1) == []
    assert not fabric.rib.take_changes()  # RR2's paths still give the same next hop
    assert fabric.rib.set_peers([reflector(RR1), reflector(RR2, long_lived_stale_time=None)]) == []
    assert fabric.rib.best_routes() == {} and fabric.rib.next_deadline() is None


def test_turning_graceful_restart_off_sweeps_long_lived_routes_too() -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.rib.set_peers([reflector(RR1, graceful_restart_time=None), reflector(RR2)])
    assert fabric.rib.received(RR1) == []


def test_a_new_long_lived_time_applies_to_routes_already_long_lived_stale() -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.rib.set_peers([reflector(RR1, long_lived_stale_time=3600), reflector(RR2)])
    assert fabric.rib.next_deadline() == 75.0  # RR2's
    fabric.at(75.0)
    assert fabric.rib.received(RR2) == []
    assert fabric.rib.next_deadline() == 15.0 + 3600
    fabric.rib.set_peers([reflector(RR1, long_lived_stale_time=30)])
    assert fabric.rib.next_deadline() == 45.0  # already passed: the next expiry sweeps
    fabric.at(76.0)
    assert fabric.rib.best_routes() == {}


def test_a_long_lived_time_set_during_the_restart_time_applies_when_it_ends() -> None:
    fabric = Fabric([reflector(RR1, long_lived_stale_time=None)])
    fabric.announce(RR1, [W1], NODE_B)
    fabric.clock.now = 10.0
    fabric.down(RR1)
    fabric.rib.set_peers([reflector(RR1)])
    fabric.at(15.0)
    assert fabric.states() == {(W1, str(RR1)): "long-lived-stale"}


def test_import_policy_rejudging_keeps_a_path_long_lived_stale() -> None:
    fabric = both_reflectors_down()
    fabric.at(15.0)
    fabric.rib.set_policy(ImportPolicy(pools=POOLS, max_prefixes=100))
    assert set(fabric.states().values()) == {"long-lived-stale"}
    assert fabric.rib.next_deadline() == 75.0


@pytest.mark.parametrize("bad", [-1, 16_777_216, True, 1.5, "60"])
def test_peer_info_refuses_a_bad_long_lived_time(bad: object) -> None:
    with pytest.raises(ValueError, match=r"peer 198\.18\.0\.11: long_lived_stale_time"):
        reflector(RR1, long_lived_stale_time=bad)


def test_peer_info_takes_the_whole_range() -> None:
    for good in (None, 0, 1, 16_777_215):
        assert reflector(RR1, long_lived_stale_time=good).long_lived_stale_time == good


# ----- invariants under any sequence of events ------------------------------------------

_PEER = st.sampled_from([RR1, RR2])
_PREFIXES = st.sets(st.sampled_from([W1, W2]))
_STEP = st.one_of(
    st.tuples(st.just("announce"), _PEER, _PREFIXES),
    st.tuples(st.just("withdraw"), _PEER, _PREFIXES),
    st.tuples(st.sampled_from(["up", "down", "cease", "silent", "eor"]), _PEER),
    st.tuples(st.just("wait"), st.floats(0.0, 80.0)),
)


@settings(deadline=None, max_examples=200)
@given(st.lists(_STEP, max_size=25))
def test_counters_deadlines_and_preference_hold_after_any_events(steps: list[tuple]) -> None:
    fabric = Fabric([reflector(RR1), reflector(RR2)])
    for step in steps:
        kind = step[0]
        if kind == "announce":
            fabric.announce(step[1], sorted(step[2]), NODE_B if step[1] == RR1 else NODE_C)
        elif kind == "withdraw":
            fabric.withdraw(step[1], sorted(step[2]))
        elif kind == "up":
            fabric.up(step[1])
        elif kind == "down":
            fabric.down(step[1])
        elif kind == "cease":
            fabric.down(step[1], notification="administrative shutdown")
        elif kind == "silent":
            fabric.rib.apply(NotificationEvent(step[1], "sent", 4, 0, "hold"), fabric.clock())
            fabric.down(step[1])
        elif kind == "eor":
            fabric.eor(step[1])
        else:
            fabric.at(fabric.clock.now + step[1])
        held = fabric.rib.received()
        for peer, stats in fabric.rib.stats().items():
            mine = [r for r in held if r.peer == peer]
            assert stats.stale == sum(r.stale for r in mine)
            assert stats.long_lived_stale == sum(r.long_lived_stale for r in mine)
        deadline = fabric.rib.next_deadline()
        if any(r.stale for r in held):
            assert deadline is not None
        # Never a long-lived stale next hop while another path exists.
        for prefix in {r.prefix for r in held}:
            paths = [r for r in held if r.prefix == prefix and r.accepted]
            if any(not r.long_lived_stale for r in paths):
                assert all(not r.best for r in paths if r.long_lived_stale)
    # Left alone long enough, nothing stale survives.
    fabric.at(fabric.clock.now + 10_000)
    assert not any(r.stale for r in fabric.rib.received())
    assert fabric.rib.next_deadline() is None
