"""Crash safety: processes writing to one store are SIGKILLed at random points,
many times, and the store must still hold every acknowledged write, no
address twice, and give a retried handle back what it already holds.

No namespaces are needed: a "node" here is just a process with a node name.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from l3fabric.datastore import FileDatastore
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.blocks import Block
from l3fabric.ipam.errors import PoolExhausted
from l3fabric.model import IPAddress

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# A workload belongs to one node, and one node works on a handle at a time:
# the agent serialises operations per workload, as CNI runtimes do.
HANDLES = {"n1": [f"a{n}" for n in range(20)], "n2": [f"b{n}" for n in range(20)]}
ALL_HANDLES = HANDLES["n1"] + HANDLES["n2"]


@dataclass(frozen=True)
class Pool:
    cidr: IPv4Network | IPv6Network
    block_size: int


# 32 IPv4 addresses for up to 40 handles: blocks run out, nodes borrow, and
# sometimes the pool is exhausted.
POOLS = (Pool(IPv4Network("100.64.0.0/27"), 29), Pool(IPv6Network("fd00:64::/120"), 125))


# -- the children -------------------------------------------------------------------


def child_assign(path: str, node: str, seed: int) -> None:
    """Assign and release random handles of this node until killed."""
    store = FileDatastore(Path(path))
    ipam = Ipam(store, node, POOLS)
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        handle = rng.choice(HANDLES[node])
        if rng.random() < 0.7:
            with contextlib.suppress(PoolExhausted):
                ipam.assign(handle)
        else:
            ipam.release(handle)


def child_count(path: str, acked: str) -> None:
    """Increment a counter by CAS, noting each acknowledged value."""
    store = FileDatastore(Path(path), journal_limit=1_000_000)
    fd = os.open(acked, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    print("ready", flush=True)
    while True:
        kv = store.get("/counter")
        assert kv is not None
        value = int(kv.value) + 1
        store.put("/counter", str(value).encode(), expect_version=kv.version)
        os.write(fd, f"{value}\n".encode())


# -- running and killing them ------------------------------------------------------------


class Children:
    """Child processes of this test, killed by PID at the end whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, call: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from tests.integration.test_ipam_crash import *; {call}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", f"child did not start: {line!r}"
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL, f"child died by itself: {proc.returncode}"

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def children() -> Iterator[Children]:
    started = Children()
    try:
        yield started
    finally:
        started.cleanup()


# -- the tests ---------------------------------------------------------------------------------


def test_killed_ipam_writers_never_hand_out_an_address_twice(
    tmp_path: Path, children: Children
) -> None:
    path = tmp_path / "store"
    rng = random.Random(20240601)
    kills = 0
    for round_ in range(30):
        # Two nodes at once, so kills land while the other is mid-CAS too.
        procs = [
            children.start(f"child_assign({str(path)!r}, 'n{n}', {round_ * 2 + n})") for n in (1, 2)
        ]
        rng.shuffle(procs)
        for proc in procs:
            time.sleep(rng.uniform(0.01, 0.25))
            children.kill(proc)
            kills += 1
    assert kills == 60

    store = FileDatastore(path)
    try:
        assert store.revision() > 200, "the children hardly wrote anything"
        holdings: dict[str, list[IPAddress]] = {}
        for kv in store.list("/l3fabric/ipam/blocks/"):
            for address, allocation in Block.decode(kv).allocations.items():
                holdings.setdefault(allocation.handle, []).append(address)
        assert set(holdings) <= set(ALL_HANDLES)
        for handle, addresses in holdings.items():
            # A retry after a crash must have found what the crashed try took.
            assert sorted(a.version for a in addresses) in ([4], [6], [4, 6]), (
                f"{handle} holds {addresses}: a retry took a second address"
            )

        ipam = Ipam(store, "n3", POOLS)
        assert ipam.check()["problems"] == []
        borrowed = 0
        for node, handles in HANDLES.items():
            ipam = Ipam(store, node, POOLS)
            borrowed += len(ipam.borrowed())
            for handle in handles:
                held = sorted(holdings.get(handle, []), key=lambda a: (a.version, int(a)))
                assert list(ipam.addresses_of(handle)) == held
                try:
                    got = ipam.assign(handle)
                except PoolExhausted:
                    assert list(ipam.addresses_of(handle)) == held
                    continue
                assert set(held) <= set(got), f"{handle} held {held} but was given {got}"
                assert ipam.assign(handle) == got
        assert borrowed > 0, "no node ever borrowed; the pools are too big for this test"
        assert ipam.check()["problems"] == []
    finally:
        store.close()


def test_killed_datastore_writers_lose_no_acknowledged_write(
    tmp_path: Path, children: Children
) -> None:
    path, acked = tmp_path / "store", tmp_path / "acked"
    store = FileDatastore(path)
    store.put("/counter", b"0")
    store.close()
    rng = random.Random(7)
    known = 0  # the counter as last seen: acknowledged, or committed by a killed put
    for _ in range(30):
        proc = children.start(f"child_count({str(path)!r}, {str(acked)!r})")
        time.sleep(rng.uniform(0.01, 0.2))
        children.kill(proc)
        known = max([known, *(int(v) for v in acked.read_text().split())])
        reopened = FileDatastore(path)
        try:
            kv = reopened.get("/counter")
            assert kv is not None
            # The put the kill interrupted may or may not have committed;
            # every acknowledged one has.
            assert int(kv.value) in (known, known + 1)
            assert reopened.revision() == int(kv.value) + 1
            known = int(kv.value)
        finally:
            reopened.close()
    store = FileDatastore(path)
    try:
        final = int(store.get("/counter").value)  # type: ignore[union-attr]
        assert final > 100, "the children hardly wrote anything"
        # The history is whole: every revision once, every value in order.
        revision, events = store.watch("/", 0, timeout=0)
        assert [e.revision for e in events] == list(range(1, revision + 1))
        assert [int(e.value or b"") for e in events] == list(range(final + 1))
    finally:
        store.close()
