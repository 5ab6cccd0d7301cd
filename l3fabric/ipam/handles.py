"""The handle index: one record per handle (workload) listing the blocks
that may hold its addresses, and what a handle holds according to it.

The index is written *before* the block (list_in_index, then the block's
CAS), so after a crash it always leads to every address the handle holds;
it may list more blocks than that, which prune() tidies up.
"""

from __future__ import annotations

from collections.abc import Iterable

from l3fabric.datastore.base import VersionConflict
from l3fabric.ipam.blocks import Block, HandleRecord
from l3fabric.ipam.errors import IpamError
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork

# Compare-and-swap retries before an operation gives up. Each retry means
# another writer changed the same record in between, so this only runs out
# under pathological contention.
MAX_ATTEMPTS = 100


def addresses_in(block: Block, handle: str) -> list[IPAddress]:
    """The addresses of `block` that `handle` holds."""
    return [a for a, al in block.allocations.items() if al.handle == handle]


class HandleIndex:
    def __init__(self, records: IpamRecords, node: str) -> None:
        self._records = records
        self._node = node

    def read(self, handle: str) -> HandleRecord | None:
        return self._records.read_handle(handle)

    def list_in_index(
        self, handle: str, record: HandleRecord | None, cidrs: Iterable[IPNetwork]
    ) -> HandleRecord | None:
        """Make the handle record list cidrs before their blocks are written.
        `record` is the record as last read (None: absent); returns it as
        written."""
        wanted = list(dict.fromkeys(cidrs))
        for _ in range(MAX_ATTEMPTS):
            current = record.blocks if record else ()
            missing = [c for c in wanted if c not in current]
            if not missing:
                return record
            updated = HandleRecord(handle, self._node, (*current, *missing))
            try:
                return self._records.write_handle(
                    updated, expect_version=record.version if record else 0
                )
            except VersionConflict:
                record = self._records.read_handle(handle)
                continue
        raise IpamError(f"updating the index of handle {handle}: too much contention")

    def prune(self, handle: str) -> bool:
        """Delete the handle record if it leads to no address. True if deleted."""
        record = self._records.read_handle(handle)
        if record is None or self.held(handle, record):
            return False
        try:
            return self._records.delete_handle(record)
        except VersionConflict:
            return False  # in use again

    def held(self, handle: str, record: HandleRecord | None) -> dict[IPAddress, IPNetwork]:
        """The addresses `handle` holds in the blocks its record lists."""
        if record is None:
            return {}
        held: dict[IPAddress, IPNetwork] = {}
        for cidr in record.blocks:
            block = self._records.read_block(cidr)
            if block is not None:
                held.update((a, cidr) for a in addresses_in(block, handle))
        return held

    def blocks_holding(self, handle: str) -> list[Block]:
        """Every block with an address of handle, by reading them all: only
        for handles without an index record, which normally hold nothing."""
        return [b for b in self._records.all_blocks() if addresses_in(b, handle)]
