"""Assigning and releasing a handle's addresses.

The block record is the source of truth: an address is taken by a
compare-and-swap of its block (take) and given back the same way (remove),
retried while other writers win. The handle index is written before each
block (HandleIndex.list_in_index), and an assignment is all or nothing: on
error, whatever it took is given back. Not thread-safe: Ipam runs one
operation at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from l3fabric.datastore.base import VersionConflict
from l3fabric.ipam.blocks import Allocation, Block, HandleRecord, PoolLike, address_key
from l3fabric.ipam.claims import BlockClaims, Pick
from l3fabric.ipam.errors import IpamError, PoolExhausted
from l3fabric.ipam.handles import MAX_ATTEMPTS, HandleIndex, addresses_in
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork

log = logging.getLogger(__name__)


class Assignments:
    def __init__(
        self,
        records: IpamRecords,
        index: HandleIndex,
        claims: BlockClaims,
        node: str,
        families: Sequence[int],
        clock: Callable[[], float],
    ) -> None:
        self._records = records
        self._index = index
        self._claims = claims
        self._node = node
        self._families = families  # the IP versions the pools offer
        self._clock = clock

    def assign(
        self, handle: str, wanted: list[IPAddress], only: tuple[PoolLike, ...] | None = None
    ) -> tuple[IPAddress, ...]:
        """`wanted` (checked to lie in the pools), or one address per family
        of the pools (of `only`, a subset of the node's pools, when given)."""
        record = self._index.read(handle)
        held = self._index.held(handle, record)
        if wanted:
            extra = sorted(set(held) - set(wanted), key=address_key)
            if extra:
                raise IpamError(
                    f"handle {handle} already holds {', '.join(map(str, extra))}, which was "
                    "not requested; release the handle first"
                )
            picks = [self._claims.pick_exact(handle, a) for a in wanted if a not in held]
        else:
            offered = self._families if only is None else sorted({p.cidr.version for p in only})
            if not offered:
                raise PoolExhausted(f"node {self._node} has no pools to assign {handle} from")
            families = [f for f in offered if all(a.version != f for a in held)]
            picks = [self._claims.pick_any(family, only) for family in families]
        taken: list[tuple[IPAddress, IPNetwork]] = []
        try:
            record = self._index.list_in_index(handle, record, [p.cidr for p in picks])
            for first_pick in picks:
                record, pick = self._take(handle, first_pick, record, taken, only)
                held[pick.address] = pick.cidr
        except Exception:
            self._give_back(handle, taken)
            raise
        if wanted:
            return tuple(wanted)
        return tuple(sorted(held, key=address_key))

    def release(self, handle: str) -> list[IPAddress]:
        """Free every address of handle; returns them."""
        released: list[IPAddress] = []
        for _ in range(MAX_ATTEMPTS):
            record = self._index.read(handle)
            cidrs = (
                record.blocks if record else [b.cidr for b in self._index.blocks_holding(handle)]
            )
            for cidr in cidrs:
                released += self.remove(cidr, handle)
            if record is None:
                break
            try:
                self._records.delete_handle(record)
            except VersionConflict:
                continue  # assigned again meanwhile: release what that took too
            break
        else:
            raise IpamError(f"releasing {handle}: its handle record keeps changing")
        return released

    def holder(self, handle: str) -> str | None:
        """The node that holds addresses for handle, or None if none does."""
        record = self._index.read(handle)
        held = self._index.held(handle, record) if record else {}
        if record is not None and held:
            return record.node
        for block in self._index.blocks_holding(handle):
            for allocation in block.allocations.values():
                if allocation.handle == handle:
                    return allocation.node
        return None

    def addresses_of(self, handle: str) -> tuple[IPAddress, ...]:
        record = self._index.read(handle)
        if record is None:
            held = {
                a: b.cidr
                for b in self._index.blocks_holding(handle)
                for a in addresses_in(b, handle)
            }
        else:
            held = self._index.held(handle, record)
        return tuple(sorted(held, key=address_key))

    def remove(
        self, cidr: IPNetwork, handle: str, only: set[IPAddress] | None = None
    ) -> list[IPAddress]:
        """Drop handle's allocations (or just `only`) from a block, by CAS."""
        for _ in range(MAX_ATTEMPTS):
            block = self._records.read_block(cidr)
            if block is None:
                return []
            mine = [a for a in addresses_in(block, handle) if only is None or a in only]
            if not mine:
                return []
            try:
                self._records.write_block(block.without(mine), block.version)
            except VersionConflict:
                continue
            return mine
        raise IpamError(f"releasing {handle} from block {cidr}: too much contention")

    def _take(
        self,
        handle: str,
        pick: Pick,
        record: HandleRecord | None,
        taken: list[tuple[IPAddress, IPNetwork]],
        only: tuple[PoolLike, ...] | None = None,
    ) -> tuple[HandleRecord | None, Pick]:
        """CAS the pick into its block, picking again while others win races;
        returns what it took. The handle index must already list pick.cidr."""
        for _ in range(MAX_ATTEMPTS):
            if pick.already_held:
                return record, pick
            allocation = Allocation(handle, self._node, self._clock())
            if pick.block is None:
                block = Block(pick.cidr, self._node, {pick.address: allocation})
                expected = 0
            else:
                block = pick.block.with_allocation(pick.address, allocation)
                expected = pick.block.version
            try:
                self._records.write_block(block, expected)
            except VersionConflict:
                pick = self._claims.repick(handle, pick, only)
                record = self._index.list_in_index(handle, record, [pick.cidr])
                continue
            taken.append((pick.address, pick.cidr))
            if pick.block is None:
                log.info("claimed block", extra={"node": self._node, "block": str(pick.cidr)})
            elif block.node != self._node:
                log.info(
                    "borrowed address",
                    extra={
                        "node": self._node,
                        "address": str(pick.address),
                        "block_node": block.node,
                    },
                )
            self._claims.taken_from(block)
            return record, pick
        raise IpamError(f"assigning {pick.address} to {handle}: too much contention on its block")

    def _give_back(self, handle: str, taken: list[tuple[IPAddress, IPNetwork]]) -> None:
        for address, cidr in taken:
            self.remove(cidr, handle, {address})
        self._index.prune(handle)
