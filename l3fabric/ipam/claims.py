"""Where a node's next address comes from: block claiming and affinity.

A free address is taken from the node's own blocks first, else from a newly
claimed block, else (unless strict affinity forbids it) borrowed from
another node's block. Picks are made from snapshots and only proposals: the
caller takes one by compare-and-swap on its block and picks again when it
loses a race.
"""

from __future__ import annotations

from dataclasses import dataclass

from l3fabric.ipam.blocks import Block, PoolLike, block_of, first_unclaimed, pool_of, within
from l3fabric.ipam.errors import AddressInUse, AffinityConflict, IpamError, PoolExhausted
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork


@dataclass(frozen=True)
class Pick:
    """An address chosen from a block snapshot, to be taken by CAS on it."""

    address: IPAddress
    cidr: IPNetwork
    block: Block | None  # None: the block does not exist yet and is claimed
    requested: bool = False
    already_held: bool = False  # by this handle, though the index missed it


class BlockClaims:
    def __init__(
        self,
        records: IpamRecords,
        node: str,
        pools: tuple[PoolLike, ...],
        strict_affinity: bool,
    ) -> None:
        self._records = records
        self._node = node
        self._pools = pools
        self._strict = strict_affinity
        # Blocks believed to be ours, the one that last had room first. Only a
        # hint to save listing every block: each is re-read before use.
        self._own: list[IPNetwork] = []

    def pick_exact(self, handle: str, address: IPAddress) -> Pick:
        """`address` for `handle`, or why it cannot have it."""
        pool = pool_of(self._pools, address)
        assert pool is not None  # Ipam checked the requested addresses
        cidr = block_of(pool, address)
        block = self._records.read_block(cidr)
        if block is None:
            for other in self._records.all_blocks():
                if other.cidr.version == cidr.version and other.cidr.overlaps(cidr):
                    raise IpamError(
                        f"block {cidr} for {address} overlaps existing block {other.cidr} "
                        "(was the pool's block size changed?)"
                    )
            return Pick(address, cidr, None, requested=True)
        allocation = block.allocations.get(address)
        if allocation is not None:
            if allocation.handle == handle:
                return Pick(address, cidr, block, requested=True, already_held=True)
            raise AddressInUse(address, allocation.handle, allocation.node)
        if block.node != self._node and self._strict:
            raise AffinityConflict(
                f"{address} is in block {cidr} of node {block.node}, and strict affinity "
                f"forbids node {self._node} to take addresses from other nodes' blocks"
            )
        return Pick(address, cidr, block, requested=True)

    def pick_any(self, family: int, only: tuple[PoolLike, ...] | None = None) -> Pick:
        """A free address: in our blocks, else in a newly claimed block, else
        (unless strict) borrowed from another node's block; from the pools
        `only` when given (a subset of the node's)."""
        allowed = self._pools if only is None else only
        for cidr in [c for c in self._own if c.version == family]:
            if only is not None and not any(within(cidr, p.cidr) for p in only):
                continue
            block = self._records.read_block(cidr)
            if block is None or block.node != self._node:
                self._own.remove(cidr)
                continue
            address = block.first_free()
            if address is not None:
                return Pick(address, cidr, block)
        pools = [p for p in allowed if p.cidr.version == family]
        blocks = self._records.all_blocks()
        in_pools = [b for b in blocks if any(within(b.cidr, p.cidr) for p in pools)]
        own = [b for b in in_pools if b.node == self._node]
        if only is None:  # the hint lists every own block of the family
            self._own = [c for c in self._own if c.version != family] + [b.cidr for b in own]
        for block in own:
            address = block.first_free()
            if address is not None:
                return Pick(address, block.cidr, block)
        for pool in pools:
            free_block = first_unclaimed(pool, [b.cidr for b in blocks])
            if free_block is not None:
                return Pick(free_block.network_address, free_block, None)
        if not self._strict:
            for block in in_pools:
                address = block.first_free()
                if address is not None:
                    return Pick(address, block.cidr, block)
        cidrs = ", ".join(str(p.cidr) for p in pools)
        why = (
            "on: every block is claimed, this node's are full, and borrowing from other "
            "nodes' blocks is not allowed"
            if self._strict
            else "off: every block is claimed and full"
        )
        raise PoolExhausted(
            f"no free address in pools {cidrs} for node {self._node} (strict affinity: {why})"
        )

    def repick(self, handle: str, lost: Pick, only: tuple[PoolLike, ...] | None = None) -> Pick:
        """Pick again after `lost`'s block changed under it."""
        if lost.requested:
            return self.pick_exact(handle, lost.address)
        return self.pick_any(lost.address.version, only)

    def taken_from(self, block: Block) -> None:
        """An address of `block` was just taken: an own block with room is
        the first place to look next time."""
        if block.node == self._node:
            if block.cidr in self._own:
                self._own.remove(block.cidr)
            self._own.insert(0, block.cidr)
