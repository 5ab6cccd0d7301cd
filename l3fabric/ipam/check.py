"""The consistency check and repair of block IPAM over the whole store.

Ipam.check runs it under the instance's lock; it reads and changes records
only through the same compare-and-swap paths as assignment (the handle index,
Assignments.remove, a block deleted at the version read), so a repair never
takes an address a concurrent assignment just wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from l3fabric.datastore.base import VersionConflict
from l3fabric.ipam.assignments import Assignments
from l3fabric.ipam.blocks import PoolLike, within
from l3fabric.ipam.handles import HandleIndex
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork

log = logging.getLogger(__name__)

# `check` treats an address whose handle has no live workload as leaked only
# once it is this old: an agent assigns before it records the workload.
DEFAULT_LEAK_GRACE = 300.0


@dataclass(frozen=True)
class CheckParts:
    """What the check reads and repairs through: one Ipam's parts."""

    records: IpamRecords
    index: HandleIndex
    assignments: Assignments
    pools: tuple[PoolLike, ...]


def find_problems(
    parts: CheckParts,
    *,
    now: float,
    live_handles: Mapping[str, set[str]] | None,
    live_nodes: set[str] | None,
    repair: bool,
    leak_grace: float,
) -> dict[str, Any]:
    """What Ipam.check reports: {"problems": [...], "repaired": [...]}."""
    problems: list[dict[str, Any]] = []
    repaired: list[dict[str, Any]] = []
    indexed = {record.handle: record.blocks for record in parts.records.all_handles()}
    holders: dict[IPAddress, list[str]] = {}
    for block in parts.records.all_blocks():
        where = {"block": str(block.cidr), "node": block.node}
        if not any(within(block.cidr, pool.cidr) for pool in parts.pools):
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
                    parts.index.list_in_index(handle, parts.index.read(handle), [block.cidr])
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
                if repair and parts.assignments.remove(block.cidr, handle, {address}):
                    parts.index.prune(handle)
                    repaired.append({"action": "released", **this})
        if live_nodes is not None and block.node not in live_nodes:
            detail = (
                f"block {block.cidr} belongs to node {block.node}, which does not exist "
                f"({len(block.allocations)} addresses in use before repair)"
            )
            problems.append({"kind": "orphan-block", "detail": detail, **where})
            if repair and _free_if_empty(parts.records, block.cidr):
                repaired.append({"action": "freed-block", **where})
    for address, names in holders.items():
        if len(names) > 1:
            detail = f"{address} is assigned more than once: {', '.join(names)}"
            problems.append(
                {"kind": "duplicate-address", "detail": detail, "address": str(address)}
            )
    return {"problems": problems, "repaired": repaired}


def _free_if_empty(records: IpamRecords, cidr: IPNetwork) -> bool:
    block = records.read_block(cidr)
    if block is None or block.allocations:
        return False
    try:
        records.delete_block(block)
    except VersionConflict:
        return False  # someone took an address from it meanwhile
    log.info("freed block of departed node", extra={"block": str(cidr), "node": block.node})
    return True
