"""Block IPAM on a real file datastore: examples, then a stateful property test
with several nodes sharing one store, then several processes at once."""

from __future__ import annotations

import ipaddress
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from l3fabric.datastore import Datastore, FileDatastore, KeyValue, WatchEvent
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.blocks import Allocation, Block
from l3fabric.ipam.errors import (
    AddressInUse,
    AddressNotInPool,
    AffinityConflict,
    IpamError,
    PoolExhausted,
)
from l3fabric.model import IPAddress

ip = ipaddress.ip_address
net = ipaddress.ip_network


@dataclass(frozen=True)
class Pool:
    cidr: IPv4Network | IPv6Network
    block_size: int


SMALL_V4 = Pool(IPv4Network("100.64.0.0/28"), 30)  # 4 blocks of 4
SMALL_V6 = Pool(IPv6Network("fd00:64::/125"), 127)  # 4 blocks of 2
BIG = (Pool(IPv4Network("100.64.0.0/16"), 26), Pool(IPv6Network("fd00:64::/48"), 122))


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Datastore]:
    opened = FileDatastore(tmp_path / "store")
    try:
        yield opened
    finally:
        opened.close()


def families(addresses: tuple[IPAddress, ...]) -> list[int]:
    return [a.version for a in addresses]


# -- examples ------------------------------------------------------------------------


def test_one_address_per_family_and_idempotent(store: Datastore) -> None:
    ipam = Ipam(store, "n1", BIG)
    first = ipam.assign("w1")
    assert families(first) == [4, 6]
    assert first[0] in BIG[0].cidr and first[1] in BIG[1].cidr
    assert ipam.assign("w1") == first
    # Another instance (an agent restart) sees the same.
    assert Ipam(store, "n1", BIG).assign("w1") == first
    assert ipam.addresses_of("w1") == first
    second = ipam.assign("w2")
    assert set(second).isdisjoint(first)
    assert ipam.owned_blocks() == [net("100.64.0.0/26"), net("fd00:64::/122")]


def test_single_family_pools(store: Datastore) -> None:
    assert families(Ipam(store, "n1", [BIG[1]]).assign("w6")) == [6]
    assert families(Ipam(store, "n1", [BIG[0]]).assign("w4")) == [4]


def test_release_frees_and_is_idempotent(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    taken = ipam.assign("w1")
    assert ipam.release("w1") == taken
    assert ipam.release("w1") == ()
    assert ipam.addresses_of("w1") == ()
    assert ipam.assign("w2") == taken, "a freed address is reused"
    assert store.list("/l3fabric/ipam/handles/w1") == []


def test_requested_addresses_are_honoured(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4, SMALL_V6])
    wanted = (ip("100.64.0.9"), ip("fd00:64::3"))
    assert ipam.assign("w1", wanted) == wanted
    assert ipam.assign("w1", wanted) == wanted
    assert ipam.assign("w1", [str(a) for a in wanted]) == wanted  # type: ignore[misc]
    assert ipam.addresses_of("w1") == wanted
    # The blocks holding them were claimed for this node.
    assert net("100.64.0.8/30") in ipam.owned_blocks()


def test_requested_address_in_use_names_the_holder(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    ipam.assign("w1", [ip("100.64.0.5")])
    with pytest.raises(AddressInUse, match=r"100\.64\.0\.5 is in use by handle w1"):
        Ipam(store, "n2", [SMALL_V4]).assign("w2", [ip("100.64.0.5")])
    assert Ipam(store, "n2", [SMALL_V4]).addresses_of("w2") == ()


def test_requested_address_outside_pools(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    with pytest.raises(AddressNotInPool, match=r"10\.0\.0\.1 is not in any pool.*100\.64\.0\.0/28"):
        ipam.assign("w1", [ip("10.0.0.1")])
    with pytest.raises(IpamError, match="'banana' is not an IP address"):
        ipam.assign("w1", ["banana"])  # type: ignore[list-item]


def test_a_handle_keeps_its_addresses_unless_released(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    held = ipam.assign("w1")
    with pytest.raises(IpamError, match=f"already holds {held[0]}.*release the handle first"):
        ipam.assign("w1", [ip("100.64.0.12")])
    assert ipam.addresses_of("w1") == held


def test_all_or_nothing_when_one_requested_address_fails(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4, SMALL_V6])
    ipam.assign("w1", [ip("fd00:64::1")])
    with pytest.raises(AddressInUse):
        ipam.assign("w2", [ip("100.64.0.1"), ip("fd00:64::1")])
    assert ipam.addresses_of("w2") == ()
    assert ipam.assign("w3", [ip("100.64.0.1")]) == (ip("100.64.0.1"),)


def test_all_or_nothing_when_one_family_is_exhausted(store: Datastore) -> None:
    tiny_v6 = Pool(IPv6Network("fd00:64::/127"), 127)  # two addresses
    ipam = Ipam(store, "n1", [SMALL_V4, tiny_v6])
    ipam.assign("a")
    ipam.assign("b")
    before = ipam.show()["totals"]["used"]
    with pytest.raises(PoolExhausted, match="fd00:64::/127"):
        ipam.assign("c")
    assert ipam.addresses_of("c") == ()
    assert ipam.show()["totals"]["used"] == before
    assert store.get("/l3fabric/ipam/handles/c") is None


def test_claims_a_new_block_when_its_blocks_are_full(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    taken = [ipam.assign(f"w{n}")[0] for n in range(5)]
    assert taken[:4] == [ip(f"100.64.0.{n}") for n in range(4)]
    assert taken[4] == ip("100.64.0.4")
    assert ipam.owned_blocks() == [net("100.64.0.0/30"), net("100.64.0.4/30")]
    assert ipam.borrowed() == []


def test_borrows_only_when_no_block_is_free(store: Datastore) -> None:
    n1, n2 = Ipam(store, "n1", [SMALL_V4]), Ipam(store, "n2", [SMALL_V4])
    n2.assign("x")  # n2 owns block .0/30 with 3 free
    for n in range(12):  # n1 claims the other three blocks and fills them
        n1.assign(f"w{n}")
    assert n1.borrowed() == []
    assert len(n1.owned_blocks()) == 3
    borrowed = n1.assign("w12")[0]
    assert borrowed in net("100.64.0.0/30")
    assert n1.borrowed() == [(borrowed, "n2")]
    # Released by handle like any other.
    assert n1.release("w12") == (borrowed,)
    assert n1.borrowed() == []


def test_strict_affinity_never_borrows(store: Datastore) -> None:
    Ipam(store, "n2", [SMALL_V4]).assign("x")
    strict = Ipam(store, "n1", [SMALL_V4], strict_affinity=True)
    for n in range(12):
        strict.assign(f"w{n}")
    with pytest.raises(PoolExhausted) as info:
        strict.assign("w12")
    message = str(info.value)
    assert "no free address in pools 100.64.0.0/28" in message
    assert "strict affinity: on" in message
    with pytest.raises(AffinityConflict, match=r"block 100\.64\.0\.0/30 of node n2"):
        strict.assign("w13", [ip("100.64.0.3")])
    assert strict.borrowed() == []


def test_exhaustion_message_without_strict_affinity(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    for n in range(16):
        ipam.assign(f"w{n}")
    with pytest.raises(PoolExhausted, match=r"pools 100\.64\.0\.0/28 .*strict affinity: off"):
        ipam.assign("w16")


@pytest.mark.parametrize(
    ("pools", "complaint"),
    [
        ([Pool(IPv4Network("100.64.0.0/24"), 20)], "block size /20 must be between /24 and /32"),
        ([Pool(IPv4Network("100.64.0.0/24"), 33)], "must be between"),
        (
            [Pool(IPv4Network("100.64.0.0/24"), 26), Pool(IPv4Network("100.64.0.128/25"), 26)],
            "overlap",
        ),
    ],
)
def test_bad_pools_are_rejected(store: Datastore, pools: list[Pool], complaint: str) -> None:
    with pytest.raises(IpamError, match=complaint):
        Ipam(store, "n1", pools)


def test_bad_names_are_rejected(store: Datastore) -> None:
    with pytest.raises(IpamError, match="invalid node name"):
        Ipam(store, "../n1", [SMALL_V4])
    ipam = Ipam(store, "n1", [SMALL_V4])
    for bad in ["", "a/b", "a b", "-x", "x" * 300]:
        with pytest.raises(IpamError, match="invalid handle"):
            ipam.assign(bad)
        with pytest.raises(IpamError, match="invalid handle"):
            ipam.release(bad)


def test_no_pools_means_no_address(store: Datastore) -> None:
    with pytest.raises(PoolExhausted, match="no pools"):
        Ipam(store, "n1", []).assign("w1")


def test_show_counts(store: Datastore) -> None:
    n1, n2 = Ipam(store, "n1", [SMALL_V4, SMALL_V6]), Ipam(store, "n2", [SMALL_V4, SMALL_V6])
    for n in range(5):
        n1.assign(f"a{n}")
    n2.assign("b0")
    shown = n1.show()
    v4 = shown["pools"][0]
    assert v4 == {
        "cidr": "100.64.0.0/28",
        "block_size": 30,
        "size": 16,
        "used": 6,
        "blocks": 3,
        "blocks_total": 4,
    }
    blocks = {b["cidr"]: b for b in shown["blocks"]}
    assert blocks["100.64.0.0/30"] == {
        "cidr": "100.64.0.0/30",
        "node": "n1",
        "used": 4,
        "free": 0,
        "pool": "100.64.0.0/28",
    }
    assert blocks["100.64.0.8/30"]["node"] == "n2"
    assert shown["totals"] == {"size": 24, "used": 12, "free": 12, "blocks": 7, "handles": 6}


Events = list[WatchEvent]  # RacingStore.list shadows the builtin inside the class


class RacingStore:
    """A datastore through which another node wins the race for the next
    block write: its write lands between our read and our compare-and-swap."""

    def __init__(self, inner: Datastore, rival: Callable[[], object]) -> None:
        self.inner = inner
        self.rival: Callable[[], object] | None = rival

    def put(self, key: str, value: bytes, *, expect_version: int | None = None) -> int:
        if "/ipam/blocks/" in key and self.rival is not None:
            rival, self.rival = self.rival, None
            rival()
        return self.inner.put(key, value, expect_version=expect_version)

    def get(self, key: str) -> KeyValue | None:
        return self.inner.get(key)

    def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        return self.inner.delete(key, expect_version=expect_version)

    def list(self, prefix: str) -> list[KeyValue]:
        return self.inner.list(prefix)

    def revision(self) -> int:
        return self.inner.revision()

    def watch(self, prefix: str, since: int, timeout: float) -> tuple[int, Events]:
        return self.inner.watch(prefix, since, timeout)

    def close(self) -> None:
        self.inner.close()


def test_losing_a_race_picks_again_and_returns_what_it_got(store: Datastore) -> None:
    rival = Ipam(store, "n2", [SMALL_V4])
    racing = RacingStore(store, lambda: rival.assign("rival", [ip("100.64.0.0")]))
    ipam = Ipam(racing, "n1", [SMALL_V4])
    got = ipam.assign("w1")
    assert racing.rival is None, "the race did not happen"
    assert got == (ip("100.64.0.4"),), "lost the claim of .0/30, so claimed .4/30"
    assert ipam.addresses_of("w1") == got
    assert rival.addresses_of("rival") == (ip("100.64.0.0"),)
    assert ipam.owned_blocks() == [net("100.64.0.4/30")]


def test_losing_a_race_for_a_requested_address_leaves_nothing_behind(store: Datastore) -> None:
    first = Ipam(store, "n1", [SMALL_V4, SMALL_V6])
    first.assign("seed", [ip("100.64.0.0")])  # so the block exists
    rival = Ipam(store, "n2", [SMALL_V4, SMALL_V6])
    racing = RacingStore(store, lambda: rival.assign("rival", [ip("100.64.0.1")]))
    ipam = Ipam(racing, "n1", [SMALL_V4, SMALL_V6])
    with pytest.raises(AddressInUse, match="in use by handle rival"):
        ipam.assign("w1", [ip("fd00:64::1"), ip("100.64.0.1")])
    assert ipam.addresses_of("w1") == ()
    assert rival.addresses_of("rival") == (ip("100.64.0.1"),)


# -- check -----------------------------------------------------------------------------------


def raw_block(store: Datastore, cidr: str, node: str, allocations: dict[str, str]) -> None:
    block = Block(
        net(cidr), node, {ip(a): Allocation(h, node, 0.0) for a, h in allocations.items()}
    )
    store.put(f"/l3fabric/ipam/blocks/{cidr.replace('/', '-')}", block.encode())


def test_check_finds_nothing_wrong_in_a_healthy_store(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4, SMALL_V6])
    ipam.assign("w1")
    assert ipam.check() == {"problems": [], "repaired": []}
    assert ipam.check({"n1": {"w1"}}, {"n1"}, repair=True, leak_grace=0) == {
        "problems": [],
        "repaired": [],
    }


def test_check_reports_duplicates_and_blocks_outside_pools(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    raw_block(store, "100.64.0.0/30", "n1", {"100.64.0.1": "a"})
    raw_block(store, "100.64.0.0/29", "n2", {"100.64.0.1": "b"})
    raw_block(store, "10.9.0.0/30", "n2", {})
    kinds = [p["kind"] for p in ipam.check()["problems"]]
    assert kinds.count("duplicate-address") == 1
    assert kinds.count("block-outside-pools") == 1
    duplicate = next(p for p in ipam.check()["problems"] if p["kind"] == "duplicate-address")
    assert "100.64.0.1 is assigned more than once" in duplicate["detail"]
    assert (
        "a in 100.64.0.0/30" in duplicate["detail"] and "b in 100.64.0.0/29" in duplicate["detail"]
    )


def test_check_releases_leaks_only_after_the_grace_period(store: Datastore) -> None:
    clock = Clock()
    ipam = Ipam(store, "n1", [SMALL_V4], clock=clock)
    kept = ipam.assign("live")
    leaked = ipam.assign("dead")
    clock.now += 10
    assert ipam.check({"n1": {"live"}}, repair=True, leak_grace=60)["problems"] == []
    clock.now += 100
    report = ipam.check({"n1": {"live"}}, repair=True, leak_grace=60)
    assert [(p["kind"], p["handle"]) for p in report["problems"]] == [("leaked-address", "dead")]
    assert [(r["action"], r["address"]) for r in report["repaired"]] == [
        ("released", str(leaked[0]))
    ]
    assert ipam.addresses_of("dead") == ()
    assert ipam.addresses_of("live") == kept
    assert store.get("/l3fabric/ipam/handles/dead") is None
    assert ipam.check({"n1": {"live"}}, leak_grace=60)["problems"] == []


def test_check_without_repair_changes_nothing(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    held = ipam.assign("dead")
    revision = store.revision()
    report = ipam.check({"n1": set()}, {"n0"}, leak_grace=0)
    assert {p["kind"] for p in report["problems"]} == {"leaked-address", "orphan-block"}
    assert report["repaired"] == []
    assert store.revision() == revision
    assert ipam.addresses_of("dead") == held


def test_check_frees_only_empty_blocks_of_departed_nodes(store: Datastore) -> None:
    gone = Ipam(store, "gone", [SMALL_V4])
    gone.assign("a")
    gone.assign("b", [ip("100.64.0.5")])
    gone.release("b")  # block .4/30 is now empty
    here = Ipam(store, "here", [SMALL_V4])
    report = here.check(None, {"here"}, repair=True)
    orphans = [p["block"] for p in report["problems"] if p["kind"] == "orphan-block"]
    assert orphans == ["100.64.0.0/30", "100.64.0.4/30"]
    assert report["repaired"] == [
        {"action": "freed-block", "block": "100.64.0.4/30", "node": "gone"}
    ]
    assert [b["cidr"] for b in here.show()["blocks"]] == ["100.64.0.0/30"]


def test_check_reindexes_an_address_missing_from_the_index(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    held = ipam.assign("w1")
    store.delete("/l3fabric/ipam/handles/w1")
    # Found by scanning the blocks even without an index record...
    assert ipam.addresses_of("w1") == held
    report = ipam.check(repair=True)
    assert [p["kind"] for p in report["problems"]] == ["unindexed-address"]
    assert [r["action"] for r in report["repaired"]] == ["indexed"]
    # ...and once indexed, a retried assign finds it instead of taking another.
    assert ipam.assign("w1") == held
    assert ipam.check()["problems"] == []


def test_an_index_entry_without_a_block_write_is_harmless(store: Datastore) -> None:
    """What a crash between writing the index and the block leaves."""
    ipam = Ipam(store, "n1", [SMALL_V4])
    store.put(
        "/l3fabric/ipam/handles/w1",
        b'{"handle":"w1","node":"n1","blocks":["100.64.0.0/30"]}',
    )
    assert ipam.addresses_of("w1") == ()
    assert ipam.assign("w1") == (ip("100.64.0.0"),)
    assert ipam.release("w1") == (ip("100.64.0.0"),)


def test_damaged_records_are_reported(store: Datastore) -> None:
    ipam = Ipam(store, "n1", [SMALL_V4])
    store.put("/l3fabric/ipam/blocks/100.64.0.0-30", b"{not json")
    with pytest.raises(IpamError, match=r"block record /l3fabric/ipam/blocks/100\.64\.0\.0-30"):
        ipam.assign("w1")


# -- properties: several nodes, one store ------------------------------------------------------

NODES = ("a", "b", "c")  # c has strict affinity
TINY_V6 = Pool(IPv6Network("fd00:64::/126"), 127)  # 2 blocks of 2: runs out first
HANDLES = st.sampled_from([f"h{n}" for n in range(14)])
POOL_ADDRESSES = st.sampled_from(
    [SMALL_V4.cidr.network_address + n for n in range(16)]
    + [TINY_V6.cidr.network_address + n for n in range(4)]
)


class IpamMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="l3f-ipam-test-"))
        # One store instance per node, as if each were its own process.
        self.stores = [FileDatastore(self.dir) for _ in NODES]
        self.ipams = {
            node: Ipam(store, node, [SMALL_V4, TINY_V6], strict_affinity=node == "c")
            for node, store in zip(NODES, self.stores, strict=True)
        }
        self.held: dict[str, tuple[IPAddress, ...]] = {}

    def teardown(self) -> None:
        for store in self.stores:
            store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def owner_of(self, address: IPAddress) -> str | None:
        return next((h for h, addrs in self.held.items() if address in addrs), None)

    def room(self, node: str, pool: Pool) -> dict[str, Any]:
        blocks = [b for b in self.ipams[node].show()["blocks"] if b["pool"] == str(pool.cidr)]
        total = 2 ** (pool.block_size - pool.cidr.prefixlen)
        return {
            "unclaimed": total - len(blocks),
            "own_free": sum(b["free"] for b in blocks if b["node"] == node),
            "any_free": sum(b["free"] for b in blocks),
            "owners": {b["cidr"]: b["node"] for b in blocks},
        }

    @rule(node=st.sampled_from(NODES), handle=HANDLES)
    def assign(self, node: str, handle: str) -> None:
        ipam = self.ipams[node]
        before = {pool.cidr.version: self.room(node, pool) for pool in (SMALL_V4, TINY_V6)}
        had = self.held.get(handle, ())
        try:
            got = ipam.assign(handle)
        except PoolExhausted as exc:
            assert ipam.addresses_of(handle) == had, "a failed assign must change nothing"
            assert "no free address in pools" in str(exc)
            event("assign: pool exhausted")
            # A family the handle lacked really had nothing this node may take.
            assert any(
                room["unclaimed"] == 0
                and (room["own_free"] if node == "c" else room["any_free"]) == 0
                for family, room in before.items()
                if family not in families(had)
            )
            return
        assert families(got) == [4, 6]
        assert set(had) <= set(got), "a handle keeps what it holds"
        for address in set(got) - set(had):
            assert self.owner_of(address) is None, f"{address} handed out twice"
            room = before[address.version]
            # An address in an unclaimed block: the block is claimed for us.
            owner = next((n for c, n in room["owners"].items() if address in net(c)), node)
            if owner != node:
                event("assign: borrowed")
                assert node != "c", "strict affinity borrowed"
                assert room["unclaimed"] == 0 and room["own_free"] == 0, "borrowed too early"
        self.held[handle] = got

    @rule(node=st.sampled_from(NODES), handle=HANDLES, address=POOL_ADDRESSES)
    def assign_requested(self, node: str, handle: str, address: IPAddress) -> None:
        ipam = self.ipams[node]
        holder = self.owner_of(address)
        room = self.room(node, SMALL_V4 if address.version == 4 else TINY_V6)
        block_owner = next((n for c, n in room["owners"].items() if address in net(c)), None)
        mine = self.held.get(handle, ())
        try:
            got = ipam.assign(handle, [address])
        except AddressInUse as exc:
            assert holder is not None and holder != handle
            assert f"in use by handle {holder}" in str(exc)
            event("requested: in use")
            return
        except AffinityConflict:
            assert node == "c" and block_owner not in (None, "c") and holder is None
            event("requested: strict affinity refused")
            return
        except IpamError as exc:
            assert set(mine) - {address}, f"unexpected refusal: {exc}"
            assert "release the handle first" in str(exc)
            return
        assert got == (address,)
        assert holder in (None, handle) and set(mine) <= {address}
        assert holder == handle or not (node == "c" and block_owner not in (None, "c"))
        self.held[handle] = got

    @rule(node=st.sampled_from(NODES), handle=HANDLES)
    def release(self, node: str, handle: str) -> None:
        released = self.ipams[node].release(handle)
        assert set(released) == set(self.held.pop(handle, ()))
        event("release: freed" if released else "release: nothing held")

    @rule(node=st.sampled_from(NODES))
    def outside_pool_is_refused(self, node: str) -> None:
        with pytest.raises(AddressNotInPool):
            self.ipams[node].assign("h0", [ip("100.64.1.1")])

    @invariant()
    def store_agrees_with_what_was_handed_out(self) -> None:
        ipam = self.ipams["a"]
        for handle, addresses in self.held.items():
            assert ipam.addresses_of(handle) == tuple(
                sorted(addresses, key=lambda a: (a.version, int(a)))
            )
        everything = [a for addresses in self.held.values() for a in addresses]
        assert len(everything) == len(set(everything))
        assert ipam.show()["totals"]["used"] == len(everything)
        assert ipam.check()["problems"] == []


IpamMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)
TestIpamProperties = IpamMachine.TestCase


# -- properties: several processes, one store ---------------------------------------------------


def _assign_many(path: Path, node: str, handles: list[str]) -> dict[str, list[str]]:
    store = FileDatastore(path)
    ipam = Ipam(store, node, [Pool(IPv4Network("100.64.0.0/26"), 29)])
    got: dict[str, list[str]] = {}
    try:
        for handle in handles:
            try:
                got[handle] = [str(a) for a in ipam.assign(handle)]
            except PoolExhausted:
                got[handle] = []
    finally:
        store.close()
    return got


def test_processes_assigning_at_once_never_share_an_address(tmp_path: Path) -> None:
    path = tmp_path / "store"
    jobs = [(path, f"n{p}", [f"p{p}-w{n}" for n in range(30)]) for p in range(3)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        results = pool.starmap(_assign_many, jobs)
    handed_out = {h: addrs for result in results for h, addrs in result.items() if addrs}
    addresses = [a for addrs in handed_out.values() for a in addrs]
    # 90 requests, 64 addresses: the pool runs dry and nodes borrow.
    assert len(addresses) == 64
    assert len(set(addresses)) == len(addresses)
    store = FileDatastore(path)
    try:
        ipam = Ipam(store, "n0", [Pool(IPv4Network("100.64.0.0/26"), 29)])
        for handle, addrs in handed_out.items():
            assert [str(a) for a in ipam.addresses_of(handle)] == addrs
        assert ipam.check()["problems"] == []
    finally:
        store.close()
