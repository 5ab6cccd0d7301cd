"""Block-based IP address management on the datastore, in Calico's model.

Pools are cut into blocks (a /26 or /122 by default). A node claims blocks,
which gives them affinity to it, and assigns workload addresses from them, so
that it can announce one route per block instead of one per workload. When
its blocks are full it claims a free block; when no block is free it borrows
an address from another node's block, unless strict affinity forbids that.

The block record is the source of truth for which address belongs to whom,
and every change to it is a compare-and-swap on its datastore version, so no
two assignments can take one address, whichever nodes or processes they run
in. Handle records (one per workload) are only an index of the blocks that
may hold the handle's addresses; they are written *before* the block, so that
after a crash the index always leads to every address the handle holds. See
docs/ipam.md for the full argument.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from l3fabric.datastore.base import Datastore, KeyValue, VersionConflict
from l3fabric.ipam_blocks import (
    AddressInUse,
    AddressNotInPool,
    AffinityConflict,
    Allocation,
    Block,
    HandleRecord,
    IpamError,
    PoolExhausted,
    PoolLike,
    address_key,
    block_of,
    check_pools,
    first_unclaimed,
    network_key,
    within,
)
from l3fabric.model import IPAddress, IPNetwork, valid_name

# Re-exported: callers import the records and errors from here.
__all__ = [
    "DEFAULT_LEAK_GRACE",
    "MAX_ATTEMPTS",
    "AddressInUse",
    "AddressNotInPool",
    "AffinityConflict",
    "Allocation",
    "Block",
    "Ipam",
    "IpamError",
    "PoolExhausted",
    "PoolLike",
]

log = logging.getLogger(__name__)

# Compare-and-swap retries before an operation gives up. Each retry means
# another writer changed the same record in between, so this only runs out
# under pathological contention.
MAX_ATTEMPTS = 100

# `check` treats an address whose handle has no live workload as leaked only
# once it is this old: an agent assigns before it records the workload.
DEFAULT_LEAK_GRACE = 300.0


@dataclass(frozen=True)
class _Pick:
    """An address chosen from a block snapshot, to be taken by CAS on it."""

    address: IPAddress
    cidr: IPNetwork
    block: Block | None  # None: the block does not exist yet and is claimed
    requested: bool = False
    already_held: bool = False  # by this handle, though the index missed it


class Ipam:
    """Address assignment for one node. Any number of instances, in any
    processes, may share a datastore: blocks are only changed by CAS. One
    instance runs one operation at a time, so that operations on one handle
    never overlap (the index-before-block order relies on that)."""

    def __init__(
        self,
        store: Datastore,
        node: str,
        pools: Sequence[PoolLike],
        *,
        strict_affinity: bool = False,
        prefix: str = "/l3fabric",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not valid_name(node):
            raise IpamError(f"invalid node name {node!r}")
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise IpamError(f"key prefix {prefix!r} must start with '/' and not end with one")
        self._pools = check_pools(pools)
        self._store = store
        self.node = node
        self.strict_affinity = strict_affinity
        self._clock = clock
        self._blocks_prefix = f"{prefix}/ipam/blocks/"
        self._handles_prefix = f"{prefix}/ipam/handles/"
        # Blocks believed to be ours, the one that last had room first. Only a
        # hint to save listing every block: each is re-read before use.
        self._own: list[IPNetwork] = []
        # Decoded blocks by key. A key's version never repeats, so a block read
        # at the version we decoded before is that block: decoding was most of
        # an assignment's CPU time.
        self._decoded: dict[str, Block] = {}
        self._lock = threading.Lock()

    # -- assignment ------------------------------------------------------------

    def assign(self, handle: str, requested: Sequence[IPAddress] = ()) -> tuple[IPAddress, ...]:
        """Addresses for handle: the requested ones, or one per pool family.

        Idempotent: the handle's current addresses are reused. All or nothing:
        on error, whatever this call took is given back.
        """
        _check_handle(handle)
        wanted = self._check_requested(requested)
        with self._lock:
            return self._assign(handle, wanted)

    def _assign(self, handle: str, wanted: list[IPAddress]) -> tuple[IPAddress, ...]:
        record = self._read_handle(handle)
        held = self._held(handle, record)
        if wanted:
            extra = sorted(set(held) - set(wanted), key=address_key)
            if extra:
                raise IpamError(
                    f"handle {handle} already holds {', '.join(map(str, extra))}, which was "
                    "not requested; release the handle first"
                )
            picks = [self._pick_exact(handle, a) for a in wanted if a not in held]
        else:
            if not self._pools:
                raise PoolExhausted(f"node {self.node} has no pools to assign {handle} from")
            families = [f for f in self._families() if all(a.version != f for a in held)]
            picks = [self._pick_any(family) for family in families]
        taken: list[tuple[IPAddress, IPNetwork]] = []
        try:
            record = self._list_in_index(handle, record, [p.cidr for p in picks])
            for first_pick in picks:
                record, pick = self._take(handle, first_pick, record, taken)
                held[pick.address] = pick.cidr
        except Exception:
            self._give_back(handle, taken)
            raise
        if wanted:
            return tuple(wanted)
        return tuple(sorted(held, key=address_key))

    def release(self, handle: str) -> tuple[IPAddress, ...]:
        """Free every address of handle; returns them (none if it held none)."""
        _check_handle(handle)
        with self._lock:
            released = self._release(handle)
        if released:
            log.info("released %s from handle %s", ", ".join(map(str, released)), handle)
        return tuple(sorted(released, key=address_key))

    def _release(self, handle: str) -> list[IPAddress]:
        released: list[IPAddress] = []
        for _ in range(MAX_ATTEMPTS):
            record = self._read_handle(handle)
            cidrs = record.blocks if record else [b.cidr for b in self._blocks_holding(handle)]
            for cidr in cidrs:
                released += self._remove(cidr, handle)
            if record is None:
                break
            try:
                self._store.delete(self._handle_key(handle), expect_version=record.version)
            except VersionConflict:
                continue  # assigned again meanwhile: release what that took too
            break
        else:
            raise IpamError(f"releasing {handle}: its handle record keeps changing")
        return released

    def holder(self, handle: str) -> str | None:
        """The node that holds addresses for handle, or None if none does."""
        _check_handle(handle)
        record = self._read_handle(handle)
        held = self._held(handle, record) if record else {}
        if record is not None and held:
            return record.node
        for block in self._blocks_holding(handle):
            for allocation in block.allocations.values():
                if allocation.handle == handle:
                    return allocation.node
        return None

    def addresses_of(self, handle: str) -> tuple[IPAddress, ...]:
        _check_handle(handle)
        record = self._read_handle(handle)
        if record is None:
            held = {a: b.cidr for b in self._blocks_holding(handle) for a in self._mine(b, handle)}
        else:
            held = self._held(handle, record)
        return tuple(sorted(held, key=address_key))

    # -- inspection ----------------------------------------------------------------

    def owned_blocks(self) -> list[IPNetwork]:
        return sorted((b.cidr for b in self._all_blocks() if b.node == self.node), key=network_key)

    def borrowed(self) -> list[tuple[IPAddress, str]]:
        found = [
            (address, block.node)
            for block in self._all_blocks()
            if block.node != self.node
            for address, allocation in block.allocations.items()
            if allocation.node == self.node
        ]
        return sorted(found, key=lambda item: address_key(item[0]))

    def show(self) -> dict[str, Any]:
        blocks = self._all_blocks()
        handles = len(self._store.list(self._handles_prefix))
        pools = []
        for pool in self._pools:
            inside = [b for b in blocks if within(b.cidr, pool.cidr)]
            pools.append(
                {
                    "cidr": str(pool.cidr),
                    "block_size": pool.block_size,
                    "size": pool.cidr.num_addresses,
                    "used": sum(len(b.allocations) for b in inside),
                    "blocks": len(inside),
                    "blocks_total": 2 ** (pool.block_size - pool.cidr.prefixlen),
                }
            )
        size = sum(p.cidr.num_addresses for p in self._pools)
        used = sum(len(b.allocations) for b in blocks)
        return {
            "node": self.node,
            "strict_affinity": self.strict_affinity,
            "pools": pools,
            "blocks": [
                {
                    "cidr": str(b.cidr),
                    "node": b.node,
                    "used": len(b.allocations),
                    "free": b.free(),
                    "pool": next(
                        (str(p.cidr) for p in self._pools if within(b.cidr, p.cidr)), None
                    ),
                }
                for b in sorted(blocks, key=lambda b: network_key(b.cidr))
            ],
            "totals": {
                "size": size,
                "used": used,
                "free": size - sum(p["used"] for p in pools),
                "blocks": len(blocks),
                "handles": handles,
            },
        }

    def check(
        self,
        live_handles: Mapping[str, set[str]] | None = None,
        live_nodes: set[str] | None = None,
        repair: bool = False,
        *,
        leak_grace: float = DEFAULT_LEAK_GRACE,
    ) -> dict[str, Any]:
        """Find what is wrong in the whole store (every node's blocks).

        live_handles maps each node to the handles of its live workloads (a
        node missing from it has none); when None, leaks are not looked for.
        An address is leaked only once it is leak_grace seconds old, since an
        agent assigns before it records the workload. live_nodes names the
        nodes that exist; when None, orphan blocks are not looked for. Repair
        releases leaked addresses, indexes addresses the handle index misses
        and deletes empty blocks of departed nodes: never an address that
        might be live.
        """
        with self._lock:
            return self._check(live_handles, live_nodes, repair, leak_grace)

    def _check(
        self,
        live_handles: Mapping[str, set[str]] | None,
        live_nodes: set[str] | None,
        repair: bool,
        leak_grace: float,
    ) -> dict[str, Any]:
        problems: list[dict[str, Any]] = []
        repaired: list[dict[str, Any]] = []
        indexed = {
            record.handle: record.blocks
            for record in map(HandleRecord.decode, self._store.list(self._handles_prefix))
        }
        holders: dict[IPAddress, list[str]] = {}
        now = self._clock()
        for block in self._all_blocks():
            where = {"block": str(block.cidr), "node": block.node}
            if not any(within(block.cidr, pool.cidr) for pool in self._pools):
                detail = f"block {block.cidr} of node {block.node} is in no pool"
                problems.append({"kind": "block-outside-pools", "detail": detail, **where})
            for address, allocation in block.allocations.items():
                handle = allocation.handle
                holders.setdefault(address, []).append(f"{handle} in {block.cidr}")
                this = {**where, "address": str(address), "handle": handle}
                if address not in block.cidr:
                    detail = f"{address} is recorded in block {block.cidr}, which does not hold it"
                    problems.append({"kind": "address-outside-block", "detail": detail, **this})
                if block.cidr not in indexed.get(handle, ()):
                    # A retried assign would not find it and take a second address.
                    detail = f"{address} of handle {handle} is missing from the handle index"
                    problems.append({"kind": "unindexed-address", "detail": detail, **this})
                    if repair:
                        self._list_in_index(handle, self._read_handle(handle), [block.cidr])
                        repaired.append({"action": "indexed", **this})
                if (
                    live_handles is not None
                    and handle not in live_handles.get(allocation.node, set())
                    and now - allocation.assigned_at >= leak_grace
                ):
                    detail = (
                        f"{address} is held by handle {handle} of node {allocation.node}, "
                        "which has no such workload"
                    )
                    problems.append({"kind": "leaked-address", "detail": detail, **this})
                    if repair and self._remove(block.cidr, handle, {address}):
                        self._prune_index(handle)
                        repaired.append({"action": "released", **this})
            if live_nodes is not None and block.node not in live_nodes:
                detail = (
                    f"block {block.cidr} belongs to node {block.node}, which does not exist "
                    f"({len(block.allocations)} addresses in use before repair)"
                )
                problems.append({"kind": "orphan-block", "detail": detail, **where})
                if repair and self._free_if_empty(block.cidr):
                    repaired.append({"action": "freed-block", **where})
        for address, names in holders.items():
            if len(names) > 1:
                detail = f"{address} is assigned more than once: {', '.join(names)}"
                problems.append(
                    {"kind": "duplicate-address", "detail": detail, "address": str(address)}
                )
        return {"problems": problems, "repaired": repaired}

    def _free_if_empty(self, cidr: IPNetwork) -> bool:
        block = self._read_block(cidr)
        if block is None or block.allocations:
            return False
        try:
            self._store.delete(self._block_key(cidr), expect_version=block.version)
        except VersionConflict:
            return False  # someone took an address from it meanwhile
        log.info("freed block %s of departed node %s", cidr, block.node)
        return True

    # -- internals: picking and taking -------------------------------------------------

    def _pick_exact(self, handle: str, address: IPAddress) -> _Pick:
        pool = self._pool_of(address)
        assert pool is not None  # _check_requested made sure
        cidr = block_of(pool, address)
        block = self._read_block(cidr)
        if block is None:
            for other in self._all_blocks():
                if other.cidr.version == cidr.version and other.cidr.overlaps(cidr):
                    raise IpamError(
                        f"block {cidr} for {address} overlaps existing block {other.cidr} "
                        "(was the pool's block size changed?)"
                    )
            return _Pick(address, cidr, None, requested=True)
        allocation = block.allocations.get(address)
        if allocation is not None:
            if allocation.handle == handle:
                return _Pick(address, cidr, block, requested=True, already_held=True)
            raise AddressInUse(address, allocation.handle, allocation.node)
        if block.node != self.node and self.strict_affinity:
            raise AffinityConflict(
                f"{address} is in block {cidr} of node {block.node}, and strict affinity "
                f"forbids node {self.node} to take addresses from other nodes' blocks"
            )
        return _Pick(address, cidr, block, requested=True)

    def _pick_any(self, family: int) -> _Pick:
        """A free address: in our blocks, else in a newly claimed block, else
        (unless strict) borrowed from another node's block."""
        for cidr in [c for c in self._own if c.version == family]:
            block = self._read_block(cidr)
            if block is None or block.node != self.node:
                self._own.remove(cidr)
                continue
            address = block.first_free()
            if address is not None:
                return _Pick(address, cidr, block)
        pools = [p for p in self._pools if p.cidr.version == family]
        blocks = self._all_blocks()
        in_pools = [b for b in blocks if any(within(b.cidr, p.cidr) for p in pools)]
        own = [b for b in in_pools if b.node == self.node]
        self._own = [c for c in self._own if c.version != family] + [b.cidr for b in own]
        for block in own:
            address = block.first_free()
            if address is not None:
                return _Pick(address, block.cidr, block)
        for pool in pools:
            free_block = first_unclaimed(pool, [b.cidr for b in blocks])
            if free_block is not None:
                return _Pick(free_block.network_address, free_block, None)
        if not self.strict_affinity:
            for block in in_pools:
                address = block.first_free()
                if address is not None:
                    return _Pick(address, block.cidr, block)
        cidrs = ", ".join(str(p.cidr) for p in pools)
        why = (
            "on: every block is claimed, this node's are full, and borrowing from other "
            "nodes' blocks is not allowed"
            if self.strict_affinity
            else "off: every block is claimed and full"
        )
        raise PoolExhausted(
            f"no free address in pools {cidrs} for node {self.node} (strict affinity: {why})"
        )

    def _take(
        self,
        handle: str,
        pick: _Pick,
        record: HandleRecord | None,
        taken: list[tuple[IPAddress, IPNetwork]],
    ) -> tuple[HandleRecord | None, _Pick]:
        """CAS the pick into its block, picking again while others win races;
        returns what it took. The handle index must already list pick.cidr."""
        for _ in range(MAX_ATTEMPTS):
            if pick.already_held:
                return record, pick
            allocation = Allocation(handle, self.node, self._clock())
            if pick.block is None:
                block = Block(pick.cidr, self.node, {pick.address: allocation})
                expected = 0
            else:
                block = pick.block.with_allocation(pick.address, allocation)
                expected = pick.block.version
            try:
                self._write_block(block, expected)
            except VersionConflict:
                if pick.requested:
                    pick = self._pick_exact(handle, pick.address)
                else:
                    pick = self._pick_any(pick.address.version)
                record = self._list_in_index(handle, record, [pick.cidr])
                continue
            taken.append((pick.address, pick.cidr))
            if pick.block is None:
                log.info("node %s claimed block %s", self.node, pick.cidr)
            elif block.node != self.node:
                log.info("node %s borrowed %s from node %s", self.node, pick.address, block.node)
            if block.node == self.node:
                if pick.cidr in self._own:
                    self._own.remove(pick.cidr)
                self._own.insert(0, pick.cidr)
            return record, pick
        raise IpamError(f"assigning {pick.address} to {handle}: too much contention on its block")

    def _give_back(self, handle: str, taken: list[tuple[IPAddress, IPNetwork]]) -> None:
        for address, cidr in taken:
            self._remove(cidr, handle, {address})
        self._prune_index(handle)

    def _remove(
        self, cidr: IPNetwork, handle: str, only: set[IPAddress] | None = None
    ) -> list[IPAddress]:
        """Drop handle's allocations (or just `only`) from a block, by CAS."""
        for _ in range(MAX_ATTEMPTS):
            block = self._read_block(cidr)
            if block is None:
                return []
            mine = [a for a in self._mine(block, handle) if only is None or a in only]
            if not mine:
                return []
            try:
                self._write_block(block.without(mine), block.version)
            except VersionConflict:
                continue
            return mine
        raise IpamError(f"releasing {handle} from block {cidr}: too much contention")

    # -- internals: the handle index -------------------------------------------------------

    def _list_in_index(
        self, handle: str, record: HandleRecord | None, cidrs: Iterable[IPNetwork]
    ) -> HandleRecord | None:
        """Make the handle record list cidrs before their blocks are written."""
        wanted = list(dict.fromkeys(cidrs))
        for _ in range(MAX_ATTEMPTS):
            current = record.blocks if record else ()
            missing = [c for c in wanted if c not in current]
            if not missing:
                return record
            updated = HandleRecord(handle, self.node, (*current, *missing))
            try:
                version = self._store.put(
                    self._handle_key(handle),
                    updated.encode(),
                    expect_version=record.version if record else 0,
                )
            except VersionConflict:
                record = self._read_handle(handle)
                continue
            return replace(updated, version=version)
        raise IpamError(f"updating the index of handle {handle}: too much contention")

    def _prune_index(self, handle: str) -> bool:
        """Delete the handle record if it leads to no address. True if deleted."""
        record = self._read_handle(handle)
        if record is None or self._held(handle, record):
            return False
        try:
            return self._store.delete(self._handle_key(handle), expect_version=record.version)
        except VersionConflict:
            return False  # in use again

    def _held(self, handle: str, record: HandleRecord | None) -> dict[IPAddress, IPNetwork]:
        if record is None:
            return {}
        held: dict[IPAddress, IPNetwork] = {}
        for cidr in record.blocks:
            block = self._read_block(cidr)
            if block is not None:
                held.update((a, cidr) for a in self._mine(block, handle))
        return held

    def _blocks_holding(self, handle: str) -> list[Block]:
        """Every block with an address of handle, by reading them all: only
        for handles without an index record, which normally hold nothing."""
        return [b for b in self._all_blocks() if self._mine(b, handle)]

    @staticmethod
    def _mine(block: Block, handle: str) -> list[IPAddress]:
        return [a for a, al in block.allocations.items() if al.handle == handle]

    # -- internals: store access and validation --------------------------------------------

    def _block_key(self, cidr: IPNetwork) -> str:
        return self._blocks_prefix + str(cidr).replace("/", "-")

    def _handle_key(self, handle: str) -> str:
        return self._handles_prefix + handle

    def _read_block(self, cidr: IPNetwork) -> Block | None:
        kv = self._store.get(self._block_key(cidr))
        return self._decode(kv) if kv is not None else None

    def _decode(self, kv: KeyValue) -> Block:
        block = self._decoded.get(kv.key)
        if block is None or block.version != kv.version:
            block = self._decoded[kv.key] = Block.decode(kv)
        return block

    def _write_block(self, block: Block, expect_version: int) -> None:
        key = self._block_key(block.cidr)
        version = self._store.put(key, block.encode(), expect_version=expect_version)
        self._decoded[key] = replace(block, version=version)

    def _read_handle(self, handle: str) -> HandleRecord | None:
        kv = self._store.get(self._handle_key(handle))
        return HandleRecord.decode(kv) if kv is not None else None

    def _all_blocks(self) -> list[Block]:
        blocks = [self._decode(kv) for kv in self._store.list(self._blocks_prefix)]
        return sorted(blocks, key=lambda b: network_key(b.cidr))

    def _families(self) -> list[int]:
        return sorted({p.cidr.version for p in self._pools})

    def _pool_of(self, address: IPAddress) -> PoolLike | None:
        return next((p for p in self._pools if address in p.cidr), None)

    def _check_requested(self, requested: Sequence[IPAddress]) -> list[IPAddress]:
        if isinstance(requested, str):
            raise IpamError(f"requested addresses must be a sequence, not the string {requested!r}")
        wanted: list[IPAddress] = []
        for item in requested:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                raise IpamError(f"requested address {item!r} is not an IP address") from None
            if self._pool_of(address) is None:
                pools = ", ".join(str(p.cidr) for p in self._pools) or "none"
                raise AddressNotInPool(f"{address} is not in any pool (pools: {pools})")
            if address not in wanted:
                wanted.append(address)
        return wanted


def _check_handle(handle: str) -> None:
    if not isinstance(handle, str) or not valid_name(handle):
        raise IpamError(
            f"invalid handle {handle!r}: letters, digits, '.', '_' and '-', at most 253 characters"
        )
