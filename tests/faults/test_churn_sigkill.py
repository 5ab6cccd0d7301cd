"""Workload and IPAM churn while the agent is SIGKILLed at random moments.

Two nodes in a mesh. A thread adds and deletes workloads on node1 through
the CLI, one after another, while the test SIGKILLs node1's agent at random
moments (in the middle of an add or a delete, or between them) and starts
it again. The decisions are drawn from one seed, printed and named in every
failure (L3F_FAULT_SEED=N runs the same draws again; the timing of a kill
against an operation cannot be replayed).

Afterwards, one `l3fabric reconcile`, and then: every add that succeeded
and was not deleted is there, every successful delete is gone, no address
is held twice, node1 has exactly the veths of its workloads, `ipam check`
finds nothing, and once its grace period is over (the test reads the store
as if it were) the only problems are leaked addresses of operations a kill
cut short, which `--repair` releases. Every remaining workload answers
pings from another workload on its node and on node2, both families.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import pytest

from l3fabric.datastore import FileDatastore
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.check import DEFAULT_LEAK_GRACE
from tests.integration.agentlab import (
    AgentNode,
    start_agent,
    start_mesh,
    stop_orphaned_speaker,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# The churn goes on until it has this many kills, successful adds and
# successful deletes, however long that takes on a loaded machine.
KILLS, ADDS, DELETES = 6, 3, 1
MAX_KILLS = 60  # and gives up after this many
MAX_WORKLOADS = 10
KILL_AFTER = (0.3, 2.5)  # seconds of a live agent before the next kill


@dataclass(frozen=True)
class Pool:
    cidr: IPv4Network | IPv6Network
    block_size: int


# The pools of tests/integration/agentlab.py's node config.
POOLS = (Pool(ip_network("100.64.0.0/16"), 26), Pool(ip_network("fd00:64::/48"), 122))


@dataclass
class Ledger:
    """What the CLI said about each workload name: its netns, and whether the
    last operation on it succeeded (True: there, False: gone) or failed
    (None: a kill may have cut it short, either outcome is fine)."""

    netns: dict[str, str] = field(default_factory=dict)
    state: dict[str, bool | None] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, name: str, ok: bool) -> None:
        with self.lock:
            self.state[name] = (op == "add") if ok else None
            self.ops.append(f"{op} {name} {'ok' if ok else 'failed'}")

    def succeeded(self, op: str) -> int:
        with self.lock:
            return sum(o.startswith(f"{op} ") and o.endswith(" ok") for o in self.ops)

    def enough(self, kills: int) -> bool:
        return kills >= KILLS and self.succeeded("add") >= ADDS and self.succeeded("del") >= DELETES

    def maybe_there(self) -> list[str]:
        with self.lock:
            return sorted(n for n, s in self.state.items() if s is not False)


def churn(
    node: AgentNode, netns: Namespaces, ledger: Ledger, rng: random.Random, stop: threading.Event
) -> None:
    """Add and delete workloads one after another until stop is set."""
    count = 0
    while not stop.is_set():
        candidates = ledger.maybe_there()
        if candidates and (len(candidates) >= MAX_WORKLOADS or rng.random() < 0.4):
            op, name = "del", rng.choice(candidates)
            args = ["workload", "del", name]
        else:
            unsure = [n for n in candidates if ledger.state[n] is None]
            if unsure and rng.random() < 0.5:
                name = rng.choice(unsure)  # a retry, as a runtime makes
            else:
                name = f"c{count}"
                count += 1
                ledger.netns[name] = netns.add("c")
            op = "add"
            args = ["workload", "add", name, "--netns", ledger.netns[name]]
        ledger.record(op, name, node.cli(*args, check=False).returncode == 0)


@dataclass(frozen=True)
class Probe:
    ns: str
    addresses: list[str]


def answers(src: str, address: str) -> bool:
    cmd = ["ip", "netns", "exec", src, "ping", "-c", "1", "-W", "1", address]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def owned_links(ns: str) -> set[str]:
    out = ns_run(ns, ["ip", "-o", "link", "show"])
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if n.startswith("l3f")}


def ipam_after_grace(
    store_path: Path, live: dict[str, set[str]], nodes: set[str], repair: bool
) -> dict[str, Any]:
    """The check as the agent makes it, with the clock past the leak grace."""
    store = FileDatastore(store_path)
    try:
        later = time.time() + DEFAULT_LEAK_GRACE + 1
        ipam = Ipam(store, "node1", POOLS, clock=lambda: later)
        return ipam.check(live, nodes, repair=repair)
    finally:
        store.close()


@contextlib.contextmanager
def seed_in_failures(seed: int, ledger: Ledger) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        tail = "\n".join(ledger.ops[-15:])
        raise AssertionError(
            f"seed {seed} (L3F_FAULT_SEED={seed} to draw the same): {exc}\nlast operations:\n{tail}"
        ) from exc


def test_workload_churn_with_agent_sigkills_leaves_a_consistent_node(
    netns: Namespaces, procs: Processes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("L3F_FAULT_SEED") or random.SystemRandom().randrange(2**31))
    print(f"churn seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    with seed_in_failures(seed, ledger):
        a, b = start_mesh(netns, procs, tmp_path)
        request.addfinalizer(lambda: stop_orphaned_speaker(a))
        probes = []
        for node, name in ((a, "probe1"), (b, "probe2")):
            ns = netns.add("p")
            probes.append(
                Probe(ns, node.cli_json("workload", "add", name, "--netns", ns)["addresses"])
            )

        stop = threading.Event()
        worker = threading.Thread(
            target=churn, args=(a, netns, ledger, random.Random(rng.random()), stop), daemon=True
        )
        kills = 0
        worker.start()
        try:
            while not ledger.enough(kills) and kills < MAX_KILLS:
                # The agent's lifetime before a kill: drawn, and waited out
                # while the churn thread works on it.
                stop.wait(rng.uniform(*KILL_AFTER))
                assert a.proc is not None
                os.kill(a.proc.pid, signal.SIGKILL)
                a.proc.wait()
                kills += 1
                start_agent(procs, a, timeout=40)
        finally:
            stop.set()
            worker.join(timeout=90)
        assert not worker.is_alive(), "the churn thread hung"
        adds, dels = ledger.succeeded("add"), ledger.succeeded("del")
        done = f"{len(ledger.ops)} operations ({adds} adds, {dels} deletes ok)"
        print(f"churn: {kills} kills, {done}")
        assert ledger.enough(kills), "too little churn to mean anything"

        result = a.cli_json("reconcile")
        assert result["errors"] == [] and result["orphans"] == [], result
        listed = {w["name"]: w for w in a.cli_json("workload", "list")}
        for name, state in ledger.state.items():
            if state is True:
                assert name in listed, f"{name} was added, never deleted, and is gone"
            if state is False:
                assert name not in listed, f"{name} was deleted and is back"
            if name in listed:
                assert listed[name]["netns"] == f"/run/netns/{ledger.netns[name]}", listed[name]
        everyone = [*listed.values(), *b.cli_json("workload", "list")]
        addresses = [address for w in everyone for address in w["addresses"]]
        assert len(addresses) == len(set(addresses)), (
            f"an address is held twice: {sorted(addresses)}"
        )
        assert owned_links(a.netns) == {w["host_iface"] for w in listed.values()}

        assert a.cli_json("ipam", "check")["problems"] == []
        live = {"node1": set(listed), "node2": {"probe2"}}
        report = ipam_after_grace(tmp_path / "store", live, {"node1", "node2"}, repair=True)
        unsure = {n for n, s in ledger.state.items() if s is None}
        for problem in report["problems"]:
            assert problem["kind"] == "leaked-address", problem
            assert problem["handle"] in unsure, f"a leak no kill explains: {problem}"
        assert {r["action"] for r in report["repaired"]} <= {"released"}, report
        print(f"after the grace: {len(report['problems'])} leaked addresses, released")
        again = ipam_after_grace(tmp_path / "store", live, {"node1", "node2"}, repair=False)
        assert again["problems"] == [], again

        # Reachable, both families, from its own node and from the other.
        for w in listed.values():
            for probe in probes:
                for address in w["addresses"]:
                    wait_for(
                        lambda p=probe.ns, a=address: answers(p, a),
                        timeout=30,
                        what=f"{w['name']} ({address}) answering {probe.ns}",
                    )

        for name, workload in sorted(listed.items()):
            for probe in probes:
                for address in workload["addresses"]:
                    wait_for(
                        lambda p=probe, x=address: answers(p.ns, x),
                        timeout=30,
                        what=f"{name} ({address}) answers {probe.ns}",
                    )
