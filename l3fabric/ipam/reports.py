"""Read-only views of IPAM for a node: its blocks, the addresses it borrowed
from other nodes' blocks, and the usage of every pool and block."""

from __future__ import annotations

from typing import Any

from l3fabric.ipam.blocks import PoolLike, address_key, network_key, within
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork


def owned_blocks(records: IpamRecords, node: str) -> list[IPNetwork]:
    return sorted((b.cidr for b in records.all_blocks() if b.node == node), key=network_key)


def borrowed(records: IpamRecords, node: str) -> list[tuple[IPAddress, str]]:
    """(address, the node whose block it is in) for every address `node`
    took from another node's block."""
    found = [
        (address, block.node)
        for block in records.all_blocks()
        if block.node != node
        for address, allocation in block.allocations.items()
        if allocation.node == node
    ]
    return sorted(found, key=lambda item: address_key(item[0]))


def show(
    records: IpamRecords, node: str, pools: tuple[PoolLike, ...], strict_affinity: bool
) -> dict[str, Any]:
    blocks = records.all_blocks()
    handles = records.count_handles()
    per_pool = []
    for pool in pools:
        inside = [b for b in blocks if within(b.cidr, pool.cidr)]
        per_pool.append(
            {
                "cidr": str(pool.cidr),
                "block_size": pool.block_size,
                "size": pool.cidr.num_addresses,
                "used": sum(len(b.allocations) for b in inside),
                "blocks": len(inside),
                "blocks_total": 2 ** (pool.block_size - pool.cidr.prefixlen),
            }
        )
    size = sum(p.cidr.num_addresses for p in pools)
    used = sum(len(b.allocations) for b in blocks)
    return {
        "node": node,
        "strict_affinity": strict_affinity,
        "pools": per_pool,
        "blocks": [
            {
                "cidr": str(b.cidr),
                "node": b.node,
                "used": len(b.allocations),
                "free": b.free(),
                "pool": next((str(p.cidr) for p in pools if within(b.cidr, p.cidr)), None),
            }
            for b in sorted(blocks, key=lambda b: network_key(b.cidr))
        ],
        "totals": {
            "size": size,
            "used": used,
            "free": size - sum(p["used"] for p in per_pool),
            "blocks": len(blocks),
            "handles": handles,
        },
    }


def address_info(
    records: IpamRecords, pools: tuple[PoolLike, ...], address: IPAddress, now: float
) -> dict[str, Any]:
    """Who holds `address`: its pool, its block and the block's affinity,
    and the allocation (handle, the node that assigned it, when), if any."""
    pool = next((p for p in pools if address in p.cidr), None)
    block = next((b for b in records.all_blocks() if address in b.cidr), None)
    allocation = block.allocations.get(address) if block is not None else None
    return {
        "address": str(address),
        "pool": str(pool.cidr) if pool is not None else None,
        "block": str(block.cidr) if block is not None else None,
        "block_node": block.node if block is not None else None,
        "allocated": allocation is not None,
        "handle": allocation.handle if allocation is not None else None,
        "node": allocation.node if allocation is not None else None,
        "borrowed": allocation is not None and block is not None and allocation.node != block.node,
        "assigned_at": allocation.assigned_at if allocation is not None else None,
        "age": round(now - allocation.assigned_at, 3) if allocation is not None else None,
    }


def block_details(records: IpamRecords, pools: tuple[PoolLike, ...]) -> list[dict[str, Any]]:
    """Every block: its affinity, its use, and the addresses other nodes
    borrowed from it."""
    rows = []
    for block in records.all_blocks():
        size = block.cidr.num_addresses
        used = len(block.allocations)
        lent = sorted(
            ((a, al) for a, al in block.allocations.items() if al.node != block.node),
            key=lambda item: address_key(item[0]),
        )
        rows.append(
            {
                "cidr": str(block.cidr),
                "node": block.node,
                "pool": next((str(p.cidr) for p in pools if within(block.cidr, p.cidr)), None),
                "size": size,
                "used": used,
                "free": size - used,
                "utilisation": round(100.0 * used / size, 1),
                "borrowed": [
                    {"address": str(a), "node": al.node, "handle": al.handle} for a, al in lent
                ],
            }
        )
    return rows
