"""ExaBGP speakers in real namespaces, driven through ExabgpSpeaker.

Node A (198.18.0.1, fd00:198:18::1) and node B (198.18.0.2, ::2) share a veth
and an iBGP session in AS 64512. IPv6 routes ride the IPv4 session (MP-BGP,
AFI 2) with an explicit IPv6 next hop.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from l3fabric.bgp import api
from l3fabric.bgp.bridge import BridgeServer, command_line
from l3fabric.bgp.events import (
    BgpEvent,
    PeerState,
    PeerStateEvent,
    SpeakerRestarted,
    UpdateEvent,
)
from l3fabric.bgp.exabgp import ExabgpSpeaker
from l3fabric.bgp.exabgp_config import NeighborSpec
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

AS = 64512
A4, B4, C4 = (ipaddress.IPv4Address(f"198.18.{n}") for n in ("0.1", "0.2", "1.3"))
A4_TO_C = ipaddress.IPv4Address("198.18.1.1")
A6 = ipaddress.IPv6Address("fd00:198:18::1")


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@dataclass
class Node:
    """A speaker plus every event it has produced so far."""

    speaker: ExabgpSpeaker
    netns: str
    seen: list[BgpEvent] = field(default_factory=list)

    def mark(self) -> int:
        self.seen.extend(self.speaker.events())
        return len(self.seen)

    def wait(
        self, predicate: Callable[[BgpEvent], bool], start: int = 0, timeout: float = 30
    ) -> int:
        """Index in `seen` of the first event from `start` on that matches."""
        hits: list[int] = []

        def found() -> bool:
            self.seen.extend(self.speaker.events(0.05))
            hits[:] = [i for i in range(start, len(self.seen)) if predicate(self.seen[i])][:1]
            return bool(hits)

        wait_for(found, timeout=timeout, what=f"an event on {self.netns}")
        return hits[0]

    def state(self, peer: ipaddress.IPv4Address, state: PeerState) -> Callable[[BgpEvent], bool]:
        return lambda e: isinstance(e, PeerStateEvent) and e.peer == peer and e.state is state


def spec(peer: ipaddress.IPv4Address, local: ipaddress.IPv4Address, name: str) -> NeighborSpec:
    return NeighborSpec(peer_address=peer, peer_as=AS, local_address=local, name=name, hold_time=9)


@pytest.fixture
def lab(netns: Namespaces, tmp_path: Path) -> Iterator[dict[str, Node]]:
    a, b = netns.add("a"), netns.add("b")
    netns.link(a, b, ["198.18.0.1/24", "fd00:198:18::1/64"], ["198.18.0.2/24", "fd00:198:18::2/64"])
    nodes: dict[str, Node] = {}
    try:
        for name, ns, rid in (("a", a, A4), ("b", b, B4)):
            speaker = ExabgpSpeaker(workdir=tmp_path / name, router_id=rid, local_as=AS, netns=ns)
            nodes[name] = Node(speaker, ns)
        nodes["a"].speaker.set_neighbors([spec(B4, A4, "node-b")])
        nodes["b"].speaker.set_neighbors([spec(A4, B4, "node-a")])
        for node in nodes.values():
            node.speaker.start()
        for node, peer in ((nodes["a"], B4), (nodes["b"], A4)):
            node.wait(lambda e: e == SpeakerRestarted(1))
            node.wait(node.state(peer, PeerState.UP))
        yield nodes
    finally:
        for node in nodes.values():
            node.speaker.stop()


def carries(event: BgpEvent, prefix: object) -> bool:
    return isinstance(event, UpdateEvent) and any(p == prefix for p, _ in event.announced)


def received(node: Node, start: int) -> tuple[dict[object, object], set[object]]:
    """Prefix -> next hop announced, and prefixes withdrawn, since start."""
    node.mark()
    announced: dict[object, object] = {}
    withdrawn: set[object] = set()
    for event in node.seen[start:]:
        if isinstance(event, UpdateEvent):
            for prefix, attrs in event.announced:
                announced[prefix] = attrs.next_hop
                withdrawn.discard(prefix)
            for prefix in event.withdrawn:
                announced.pop(prefix, None)
                withdrawn.add(prefix)
    return announced, withdrawn


def test_announce_and_withdraw_both_families(lab: dict[str, Node]) -> None:
    a, b = lab["a"], lab["b"]
    start = b.mark()
    assert a.speaker.send(api.announce([B4], A4, [net("100.64.0.1/32")]))
    assert a.speaker.send(api.announce([B4], A6, [net("fd00:64::1/128")]))
    wait_for(lambda: len(received(b, start)[0]) == 2, timeout=15, what="both routes on B")
    announced, _ = received(b, start)
    assert announced == {net("100.64.0.1/32"): A4, net("fd00:64::1/128"): A6}

    start = b.mark()
    assert a.speaker.send(api.withdraw([B4], [net("100.64.0.1/32"), net("fd00:64::1/128")]))
    wait_for(lambda: len(received(b, start)[1]) == 2, timeout=15, what="both withdraws on B")
    assert received(b, start)[1] == {net("100.64.0.1/32"), net("fd00:64::1/128")}
    wait_for(lambda: a.speaker.stats().acks_done >= 3, timeout=10)
    assert a.speaker.stats().acks_error == 0
    assert a.speaker.stats().parse_errors == b.speaker.stats().parse_errors == 0


def test_refused_command_is_counted(lab: dict[str, Node]) -> None:
    a = lab["a"]
    before = a.speaker.stats().acks_error
    # A syntactically valid command for a neighbour ExaBGP does not have.
    assert a.speaker.send(api.withdraw([ipaddress.IPv4Address("198.18.0.99")], [net("10.0.0.0/8")]))
    wait_for(lambda: a.speaker.stats().acks_error == before + 1, timeout=10)


def test_killed_exabgp_is_restarted_and_routes_are_replayed(lab: dict[str, Node]) -> None:
    a, b = lab["a"], lab["b"]
    route = api.announce([B4], A4, [net("100.64.0.7/32")])
    start_b = b.mark()
    assert a.speaker.send(route)
    wait_for(lambda: net("100.64.0.7/32") in received(b, start_b)[0], timeout=15)

    old_pid = a.speaker.pid
    assert old_pid is not None
    start_a, start_b = a.mark(), b.mark()
    os.kill(old_pid, signal.SIGKILL)
    a.wait(lambda e: e == SpeakerRestarted(2), start_a, timeout=30)
    assert a.speaker.pid not in (None, old_pid)
    assert a.speaker.stats().restarts == 1
    down = b.wait(b.state(A4, PeerState.DOWN), start_b)
    b.wait(b.state(A4, PeerState.UP), down)

    # The new ExaBGP knows nothing of the route: the owner replays it.
    a.wait(a.state(B4, PeerState.UP), start_a)
    start_b = b.mark()
    assert a.speaker.send(route)
    wait_for(lambda: net("100.64.0.7/32") in received(b, start_b)[0], timeout=15)


def bridge_pid(exabgp_pid: int) -> int | None:
    """The l3fabric bridge ExaBGP is running as its API process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"\nPPid:\t{exabgp_pid}\n" in status and b"l3fabric.bgp.bridge" in cmdline:
            return int(entry.name)
    return None


def test_a_respawned_bridge_is_a_gap_repaired_by_a_restart(lab: dict[str, Node]) -> None:
    a = lab["a"]
    exabgp_pid = a.speaker.pid
    assert exabgp_pid is not None
    pid = wait_for(lambda: bridge_pid(exabgp_pid), timeout=5)
    assert pid is not None
    start_a = a.mark()
    # ExaBGP respawns its helper; whatever the dead one held is lost.
    os.kill(pid, signal.SIGKILL)
    a.wait(lambda e: e == SpeakerRestarted(2), start_a, timeout=30)
    assert a.speaker.stats().stream_gaps == 1
    assert a.speaker.pid != exabgp_pid
    a.wait(a.state(B4, PeerState.UP), start_a)


_CRASHING_AGENT = """
import ipaddress, sys, time
from pathlib import Path
from l3fabric.bgp.exabgp import ExabgpSpeaker
from l3fabric.bgp.exabgp_config import NeighborSpec
speaker = ExabgpSpeaker(workdir=Path(sys.argv[1]), router_id=ipaddress.IPv4Address("198.18.0.1"),
                        local_as=64512, netns=sys.argv[2])
speaker.set_neighbors([NeighborSpec(ipaddress.ip_address("198.18.0.2"), 64512,
                                    ipaddress.ip_address("198.18.0.1"), "node-b", hold_time=9)])
speaker.start()
print(speaker.pid, flush=True)
time.sleep(600)
"""


def kill_exabgp_of(workdir: Path, pid: int | None = None) -> None:
    """SIGKILL an ExaBGP of workdir (default: the one in its pid file) if it
    still runs."""
    try:
        pid = pid or int((workdir / "exabgp.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(workdir).encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


def test_a_new_speaker_stops_the_exabgp_a_crashed_one_left(
    lab: dict[str, Node], procs: Processes, tmp_path: Path
) -> None:
    a, b = lab["a"], lab["b"]
    a.speaker.stop()  # node A's agent is now the process below
    workdir, log = tmp_path / "crashing", tmp_path / "agent.out"
    orphan: int | None = None
    try:
        agent = procs.start(
            [sys.executable, "-c", _CRASHING_AGENT, str(workdir), a.netns], log_path=str(log)
        )
        start_b = b.mark()
        b.wait(b.state(A4, PeerState.UP), start_b)
        orphan = int(wait_for(lambda: log.read_text().strip(), timeout=10))
        Processes.stop(agent, signal.SIGKILL)  # the agent dies; its ExaBGP does not
        assert Path(f"/proc/{orphan}").exists()

        successor = Node(
            ExabgpSpeaker(workdir=workdir, router_id=A4, local_as=AS, netns=a.netns), a.netns
        )
        lab["a"] = successor  # so that the fixture stops it
        successor.speaker.set_neighbors([spec(B4, A4, "node-b")])
        start_b = b.mark()
        successor.speaker.start()
        wait_for(lambda: not Path(f"/proc/{orphan}").exists(), timeout=15, what="the orphan gone")
        successor.wait(successor.state(B4, PeerState.UP), timeout=40)
        b.wait(b.state(A4, PeerState.UP), start_b, timeout=40)
    finally:
        if orphan is not None:
            kill_exabgp_of(workdir, orphan)
        elif lab["a"] is a:
            kill_exabgp_of(workdir)


def test_reload_adds_and_removes_neighbors_without_resetting_others(
    lab: dict[str, Node], netns: Namespaces, tmp_path: Path
) -> None:
    a, b = lab["a"], lab["b"]
    c_ns = netns.add("c")
    netns.link(a.netns, c_ns, ["198.18.1.1/24"], ["198.18.1.3/24"], names=("eth2", "eth1"))
    c = Node(ExabgpSpeaker(workdir=tmp_path / "c", router_id=C4, local_as=AS, netns=c_ns), c_ns)
    try:
        c.speaker.set_neighbors([spec(A4_TO_C, C4, "node-a")])
        c.speaker.start()
        route = net("100.64.0.9/32")
        start_b = b.mark()
        assert a.speaker.send(api.announce(None, A4, [route]))
        wait_for(lambda: route in received(b, start_b)[0], timeout=15)

        start_a, start_b, start_c = a.mark(), b.mark(), c.mark()
        assert a.speaker.set_neighbors([spec(B4, A4, "node-b"), spec(C4, A4_TO_C, "node-c")])
        assert not a.speaker.set_neighbors([spec(C4, A4_TO_C, "node-c"), spec(B4, A4, "node-b")])
        a.wait(a.state(C4, PeerState.UP), start_a)
        c.wait(c.state(A4_TO_C, PeerState.UP), start_c)
        # API routes are not sent to a neighbour added by a reload...
        time.sleep(2)
        assert route not in received(c, start_c)[0]
        # ...so the owner replays to the new peer when it comes up.
        assert a.speaker.send(api.announce([C4], A4_TO_C, [route]))
        wait_for(lambda: route in received(c, start_c)[0], timeout=15)

        start_c = c.mark()
        assert a.speaker.set_neighbors([spec(B4, A4, "node-b")])
        c.wait(c.state(A4_TO_C, PeerState.DOWN), start_c)
        a.wait(a.state(C4, PeerState.DOWN), start_a)
        assert a.speaker.stats().reloads == 2
        # B's session lived through both reloads and kept its route.
        b.mark()
        assert not [e for e in b.seen[start_b:] if isinstance(e, PeerStateEvent)]
        assert route not in received(b, start_b)[1]
    finally:
        c.speaker.stop()


def test_wrong_md5_password_never_comes_up(lab: dict[str, Node]) -> None:
    a, b = lab["a"], lab["b"]
    start_a, start_b = a.mark(), b.mark()
    a.speaker.set_neighbors([replace(spec(B4, A4, "node-b"), md5_password="alpha")])
    b.speaker.set_neighbors([replace(spec(A4, B4, "node-a"), md5_password="beta")])
    b.wait(b.state(A4, PeerState.DOWN), start_b)
    before = md5_counters(b.netns)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        events = a.speaker.events(0.2) + b.speaker.events(0.2)
        a.seen += events  # keep them for the report if this fails
        assert not [e for e in events if isinstance(e, PeerStateEvent) and e.state is PeerState.UP]
    # ExaBGP says nothing about it; the kernel's TCP-MD5 counters do.
    after = md5_counters(b.netns)
    assert after["TCPMD5Failure"] > before["TCPMD5Failure"], (before, after)

    # With matching passwords the same neighbours come up: the wait above
    # could have failed.
    start_a = a.mark()
    b.speaker.set_neighbors([replace(spec(A4, B4, "node-a"), md5_password="alpha")])
    a.wait(a.state(B4, PeerState.UP), start_a, timeout=40)


def md5_counters(netns: str) -> dict[str, int]:
    """TcpExtTCPMD5* counters of a namespace: where MD5 mismatches show."""
    lines = ns_run(netns, ["cat", "/proc/net/netstat"]).splitlines()
    counters: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            for name, value in zip(names.split()[1:], values.split()[1:], strict=True):
                if name.startswith("TCPMD5"):
                    counters[name] = int(value)
    return counters


# -- the bridge on its own ----------------------------------------------------


def start_bridge(socket_path: Path, max_buffered: int) -> subprocess.Popen[bytes]:
    cmd = [*command_line(socket_path, sys.executable), "--max-buffered", str(max_buffered)]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def stop_bridge(proc: subprocess.Popen[bytes]) -> bytes:
    """Kill (by PID) if still running, reap, and return what it logged."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    err = proc.stderr.read() if proc.stderr else b""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return err


def test_bridge_reads_stdin_while_nobody_listens_and_reports_drops(tmp_path: Path) -> None:
    sock = tmp_path / "bridge.sock"
    proc = start_bridge(sock, max_buffered=1000)
    try:
        assert proc.stdin is not None
        started = time.monotonic()
        # 20 MB through a 64 KiB pipe: only possible if the bridge keeps reading.
        payload = b"".join(b'{"line": %d, "pad": "%s"}\n' % (i, b"x" * 300) for i in range(60000))
        proc.stdin.write(payload)
        proc.stdin.flush()
        assert time.monotonic() - started < 30
        ready: list[int] = []
        gaps: list[str] = []
        server = BridgeServer(
            sock,
            on_ready=ready.append,
            on_lines=lambda token, lines: None,
            on_gap=lambda token, reason: gaps.append(reason),
        )
        server.start()
        try:
            server.expect(os.getpid(), 7)  # the bridge's parent is this test
            wait_for(lambda: gaps, timeout=15, what="the gap report")
            assert "dropped 59000" in gaps[0]
            assert ready == []
        finally:
            server.stop()
    finally:
        err = stop_bridge(proc)
    assert b"dropped" in err


def test_bridge_relays_both_ways_in_order(tmp_path: Path) -> None:
    sock = tmp_path / "bridge.sock"
    got: list[str] = []
    ready: list[int] = []
    lock = threading.Lock()

    def on_lines(token: int, lines: list[str]) -> None:
        with lock:
            got.extend(lines)

    server = BridgeServer(sock, on_ready=ready.append, on_lines=on_lines, on_gap=lambda t, r: None)
    server.start()
    proc = start_bridge(sock, max_buffered=100000)
    try:
        server.expect(os.getpid(), 3)
        assert proc.stdin is not None and proc.stdout is not None
        lines = [f"event {i}" for i in range(5000)]
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()
        wait_for(lambda: len(got) == len(lines), timeout=20, what="all lines relayed")
        assert got == lines and ready == [3]
        # Commands: complete printable lines pass; a line with a control
        # character never reaches ExaBGP.
        assert server.send(b"announce eor ipv4 unicast\nbad\x07line\nreload\n")
        assert proc.stdout.readline() == b"announce eor ipv4 unicast\n"
        assert proc.stdout.readline() == b"reload\n"
        proc.stdin.close()  # ExaBGP went away: the bridge must exit
        assert proc.wait(timeout=10) == 0
    finally:
        stop_bridge(proc)
        server.stop()


# -- measurements ---------------------------------------------------------------


def test_throughput_and_latency(lab: dict[str, Node], record_property: Callable[..., None]) -> None:
    a, b = lab["a"], lab["b"]
    prefixes = [net(f"100.65.{i // 256}.{i % 256}/32") for i in range(10000)]
    start_b = b.mark()
    started = time.monotonic()
    assert a.speaker.send(api.announce([B4], A4, prefixes))
    wait_for(
        lambda: len(received(b, start_b)[0]) == len(prefixes),
        timeout=180,
        interval=0.2,
        what="10k routes on B",
    )
    elapsed = time.monotonic() - started
    rate = len(prefixes) / elapsed

    latencies = []
    for i in range(50):
        prefix = net(f"100.66.0.{i}/32")
        start_b = b.mark()
        sent = time.monotonic()
        assert a.speaker.send(api.announce([B4], A4, [prefix]))
        b.wait(functools.partial(carries, prefix=prefix), start_b, timeout=15)
        latencies.append(time.monotonic() - sent)
    p50 = statistics.median(latencies)
    record_property("routes_per_second", round(rate))
    record_property("latency_p50_ms", round(p50 * 1000, 1))
    print(f"\n10k /32 in {elapsed:.2f}s = {rate:.0f} routes/s; latency p50 {p50 * 1000:.1f} ms")
    assert rate > 200 and p50 < 2.0
