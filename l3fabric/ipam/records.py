"""IPAM's records in the datastore: one read or one compare-and-swap write
of a block or handle record at a time, no retries (the callers decide what
a lost race means), and a cache of decoded blocks.
"""

from __future__ import annotations

from dataclasses import replace

from l3fabric.datastore.base import Datastore, KeyValue
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.blocks import Block, HandleRecord, network_key
from l3fabric.model import IPNetwork


class IpamRecords:
    """Writes raise VersionConflict when the record's version is not the
    expected one (0: the record must not exist yet)."""

    def __init__(self, store: Datastore, keys: KeyLayout) -> None:
        self._store = store
        self._keys = keys
        # Decoded blocks by key. A key's version never repeats, so a block read
        # at the version we decoded before is that block: decoding was most of
        # an assignment's CPU time.
        self._decoded: dict[str, Block] = {}

    # -- blocks -----------------------------------------------------------------

    def read_block(self, cidr: IPNetwork) -> Block | None:
        kv = self._store.get(self._keys.block(cidr))
        return self._decode(kv) if kv is not None else None

    def all_blocks(self) -> list[Block]:
        """Every node's blocks, in address order."""
        blocks = [self._decode(kv) for kv in self._store.list(self._keys.blocks)]
        return sorted(blocks, key=lambda b: network_key(b.cidr))

    def write_block(self, block: Block, expect_version: int) -> None:
        key = self._keys.block(block.cidr)
        version = self._store.put(key, block.encode(), expect_version=expect_version)
        self._decoded[key] = replace(block, version=version)

    def delete_block(self, block: Block) -> None:
        """Delete `block` as read (at its version)."""
        self._store.delete(self._keys.block(block.cidr), expect_version=block.version)

    def _decode(self, kv: KeyValue) -> Block:
        block = self._decoded.get(kv.key)
        if block is None or block.version != kv.version:
            block = self._decoded[kv.key] = Block.decode(kv)
        return block

    # -- handles ----------------------------------------------------------------

    def read_handle(self, handle: str) -> HandleRecord | None:
        kv = self._store.get(self._keys.handle(handle))
        return HandleRecord.decode(kv) if kv is not None else None

    def all_handles(self) -> list[HandleRecord]:
        return [HandleRecord.decode(kv) for kv in self._store.list(self._keys.handles)]

    def count_handles(self) -> int:
        return len(self._store.list(self._keys.handles))

    def write_handle(self, record: HandleRecord, expect_version: int) -> HandleRecord:
        """Write `record`; returns it with its new version."""
        version = self._store.put(
            self._keys.handle(record.handle), record.encode(), expect_version=expect_version
        )
        return replace(record, version=version)

    def delete_handle(self, record: HandleRecord) -> bool:
        """Delete `record` as read (at its version); False if it was gone."""
        return self._store.delete(self._keys.handle(record.handle), expect_version=record.version)
