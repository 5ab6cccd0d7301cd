"""A node's uplink is cut while its other uplink stays (tests/faults/uplinklab.py
draws the fabric): a 10 ms ping per family between workloads on the two
nodes runs through the cut and the BGP settling after it, counted.

Each node holds a two-way ECMP route to the other's workloads, and the kernel
hashes a flow onto one path per direction. A path-blind test could ping
around the cut link and prove nothing, so the workloads pinged are chosen
(by asking the kernels, `ip route get`) so that the IPv4 flow and the IPv6
flow both cross the link that is cut, in both directions.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.uplinklab import Fabric, build, next_hops, router_end
from tests.integration.agentlab import AgentNode
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD 2 is not installed"),
]

# At 10 ms, 20 s: the cut, the 9 s hold timer of the node's dead sessions and
# the reprogramming after it all happen inside (asserted, not assumed).
PINGS = 2000
CANDIDATES = 32  # workloads tried on node1 to find flows across the cut link
CUT = 1  # node1's uplink to router 1 (its eth1)
BURST = 50


def route_via(ns: str, dst: str, src: str, iif: str) -> str:
    """The device the node's kernel forwards a packet src -> dst from iif on."""
    v6 = ":" in dst
    # The protocol too: an IPv6 flow's hash includes its next header.
    proto = "ipv6-icmp" if v6 else "icmp"
    family = "-6" if v6 else "-4"
    out = ns_run(ns, ["ip", family, "route", "get", dst, "from", src, "iif", iif, "ipproto", proto])
    fields = out.split()
    return fields[fields.index("dev") + 1]


def of_version(w: dict[str, object], v: int) -> str:
    addresses = w["addresses"]
    assert isinstance(addresses, list)
    return str(next(x for x in addresses if (":" in x) == (v == 6)))


def crosses_cut(fabric: Fabric, wa: dict[str, object], wb: dict[str, object], v: int) -> bool:
    """Whether the flow between wa (node1) and wb (node2) of IP version v
    leaves node1 on eth1 and comes back from node2 on eth1 (router 1)."""
    a, b = fabric.nodes
    addr_a, addr_b = of_version(wa, v), of_version(wb, v)
    out = route_via(a.netns, addr_b, addr_a, str(wa["host_iface"]))
    back = route_via(b.netns, addr_a, addr_b, str(wb["host_iface"]))
    return out == back == f"eth{CUT}"


def tx_packets(ns: str, dev: str) -> int:
    (link,) = json.loads(ns_run(ns, ["ip", "-j", "-s", "link", "show", "dev", dev]))
    return int(link["stats64"]["tx"]["packets"])


def answers(ns: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def workload(netns: Namespaces, node: AgentNode, name: str) -> tuple[str, dict[str, object]]:
    ns = netns.add("w")
    # Flow label 0, and 0 reflected: an IPv6 flow hashes as `ip route get`
    # predicts (an automatic label is random per socket).
    ns_run(ns, ["sysctl", "-qw", "net.ipv6.auto_flowlabels=0"])
    return ns, node.cli_json("workload", "add", name, "--netns", ns)


def ping(ns: str, address: str) -> subprocess.Popen[str]:
    # -D: a timestamp on every reply, so a loss can be placed against the cut.
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, "ping", "-D", "-i", "0.01", "-c", str(PINGS), address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@dataclass(frozen=True)
class Count:
    sent: int
    lost: int
    runs: int  # how many runs of consecutive losses
    recovered: bool  # the last ping was answered
    gaps: str  # the lost sequence numbers, with the time of the reply before each run

    @classmethod
    def of(cls, proc: subprocess.Popen[str], cut_at: float) -> Count:
        out, _ = proc.communicate(timeout=120)
        match = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert match, out
        replies = {
            int(m[2]): float(m[1])
            for m in re.finditer(
                r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) ", out, re.MULTILINE
            )
        }
        sent = int(match[1])
        missing = [seq for seq in range(1, sent + 1) if seq not in replies]
        gaps = []
        for seq in missing:
            if seq - 1 in missing:
                continue
            end = seq
            while end + 1 in missing:
                end += 1
            before = replies.get(seq - 1)
            when = f"{before - cut_at:+.2f}s" if before is not None else "start"
            gaps.append(f"{seq}-{end} (after the reply at {when} from the cut)")
        lost = sent - int(match[2])
        return cls(sent, lost, len(gaps), sent in replies, ", ".join(gaps))


@pytest.fixture
def fabric(netns: Namespaces, procs: Processes, tmp_path: Path) -> Fabric:
    return build(netns, procs, tmp_path)


def cut_down(fabric: Fabric) -> None:
    ns_run(fabric.nodes[0].netns, ["ip", "link", "set", f"eth{CUT}", "down"])


def cut_carrier(fabric: Fabric) -> None:
    # The far end goes: node1 sees only its carrier drop (a pulled cable, a
    # failed router port), so its next hops there are "linkdown", not dead.
    ns_run(fabric.routers[CUT - 1], ["ip", "link", "set", "eth1", "down"])


def cut_delete(fabric: Fabric) -> None:
    ns_run(fabric.nodes[0].netns, ["ip", "link", "del", f"eth{CUT}"])


CUTS: dict[str, Callable[[Fabric], None]] = {
    "down": cut_down,
    "carrier": cut_carrier,
    "delete": cut_delete,
}


def loses_until_a_pass(how: str, version: int) -> bool:
    """Whether the cut loses pings until the agent's next reconcile pass. A
    deleted link takes every IPv4 route through it out of the kernel as a
    whole, ECMP or not (IPv6 only drops the one next hop); nothing tells the
    agent, whose next pass (every reconcile.interval) puts the route back
    with the next hops still on a link (l3fabric/dataplane/partial.py) and
    refuses the paths via the gone link (unreachable-next-hop). Every other
    cut loses nothing: the kernel skips the dead next hop at once."""
    return how == "delete" and version == 4


@pytest.mark.parametrize("how", list(CUTS))
def test_uplink_cut_while_the_other_stays(how: str, fabric: Fabric, netns: Namespaces) -> None:
    a, b = fabric.nodes
    _wb_ns, wb = workload(netns, b, "wb")
    flows: dict[int, tuple[str, str, str]] = {}  # IP version -> (source ns, source, destination)
    for i in range(CANDIDATES):
        wa_ns, wa = workload(netns, a, f"wa{i}")
        for v in (4, 6):
            src, dst = of_version(wa, v), of_version(wb, v)
            for ns, address in ((a.netns, dst), (b.netns, src)):
                wait_for(
                    lambda n=ns, d=address: len(next_hops(n, d)) == 2,
                    timeout=30,
                    what=f"a two-way ECMP route to {address}",
                )
            if v not in flows and crosses_cut(fabric, wa, wb, v):
                flows[v] = (wa_ns, src, dst)
        if len(flows) == 2:
            break
    assert len(flows) == 2, f"no flow of {CANDIDATES} workloads crosses eth{CUT}: {flows}"
    for v, (ns, _src, dst) in flows.items():
        # The kernels' answer checked with packets: a burst goes out on eth1
        # of both nodes (a few BGP packets may come on top).
        before = [tx_packets(n.netns, f"eth{CUT}") for n in (a, b)]
        ns_run(ns, ["ping", "-q", "-i", "0.01", "-c", str(BURST), dst])
        sent = [
            tx_packets(n.netns, f"eth{CUT}") - was for n, was in zip((a, b), before, strict=True)
        ]
        assert min(sent) >= BURST, f"IPv{v}: {sent} packets out on eth{CUT}, not {BURST} each way"

    dead_peers = set(router_end(CUT, 1))

    def settled() -> bool:
        """node1's sessions over the cut link are down and both nodes route
        each flow over router 2 alone."""
        states = a.peer_states()
        if any(states[p] == "Established" for p in dead_peers):
            return False
        return all(
            next_hops(a.netns, dst) == ["eth2"] and next_hops(b.netns, src) == ["eth2"]
            for _ns, src, dst in flows.values()
        )

    before = [tx_packets(n.netns, f"eth{CUT}") for n in (a, b)]
    pings = {v: ping(ns, dst) for v, (ns, _src, dst) in flows.items()}
    try:
        # Cut once both flows cross the link each way, not while the pings
        # start: a first echo still on its way when the far end went down
        # was lost by the cut's timing, not by the fabric.
        wait_for(
            lambda: all(
                tx_packets(n.netns, f"eth{CUT}") - was >= 2 * len(flows)
                for n, was in zip((a, b), before, strict=True)
            ),
            timeout=10,
            interval=0.01,
            what="the pings crossing the link to be cut",
        )
        cut_at = time.time()
        CUTS[how](fabric)
        wait_for(settled, timeout=60, interval=0.2, what="both nodes settled on router 2")
        assert all(p.poll() is None for p in pings.values()), "pings ended before it settled"
        counts = {v: Count.of(p, cut_at) for v, p in pings.items()}
    finally:
        for p in pings.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    print(f"uplink cut ({how}): {counts}")
    for v, count in counts.items():
        assert count.sent == PINGS, count
        if loses_until_a_pass(how, v):
            # One outage, from the cut until the pass, and none after it:
            # its length is the interval's business (bench/), not a test's.
            assert count.runs <= 1 and count.recovered, f"IPv{v}: {count}"
        else:
            assert count.lost == 0, f"IPv{v}: {count.lost} of {count.sent} lost: {count.gaps}"
