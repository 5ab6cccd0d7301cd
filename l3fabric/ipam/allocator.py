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

Ipam is the front; the work is done by records (datastore access), handles
(the handle index), claims (where an address comes from), assignments
(assign and release by CAS), reports (read-only views) and check.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from l3fabric.datastore.base import Datastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam import check, reports
from l3fabric.ipam.assignments import Assignments
from l3fabric.ipam.blocks import PoolLike, address_key, check_pools, pool_of
from l3fabric.ipam.claims import BlockClaims
from l3fabric.ipam.errors import AddressNotInPool, IpamError, UnknownPool
from l3fabric.ipam.handles import HandleIndex
from l3fabric.ipam.records import IpamRecords
from l3fabric.model import IPAddress, IPNetwork, valid_name

log = logging.getLogger(__name__)


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
        try:
            keys = KeyLayout(prefix)
        except ValueError as exc:
            raise IpamError(str(exc)) from None
        self._pools = check_pools(pools)
        self.node = node
        self.strict_affinity = strict_affinity
        self._clock = clock
        self._records = IpamRecords(store, keys)
        self._index = HandleIndex(self._records, node)
        claims = BlockClaims(self._records, node, self._pools, strict_affinity)
        families = sorted({p.cidr.version for p in self._pools})
        self._assignments = Assignments(self._records, self._index, claims, node, families, clock)
        self._lock = threading.Lock()

    # -- assignment ------------------------------------------------------------

    def assign(
        self,
        handle: str,
        requested: Sequence[IPAddress] = (),
        *,
        pools: Sequence[IPNetwork] | None = None,
    ) -> tuple[IPAddress, ...]:
        """Addresses for handle: the requested ones, or one per pool family.
        With `pools` (CIDRs of the node's pools), only those pools are used;
        one that is not the node's is UnknownPool, before anything is taken.

        Idempotent: the handle's current addresses are reused. All or nothing:
        on error, whatever this call took is given back.
        """
        _check_handle(handle)
        only = None if pools is None else self._select(pools)
        wanted = self._check_requested(requested, only)
        with self._lock:
            return self._assignments.assign(handle, wanted, only)

    def release(self, handle: str) -> tuple[IPAddress, ...]:
        """Free every address of handle; returns them (none if it held none)."""
        _check_handle(handle)
        with self._lock:
            released = self._assignments.release(handle)
        if released:
            log.info(
                "released addresses",
                extra={"handle": handle, "addresses": [str(a) for a in released]},
            )
        return tuple(sorted(released, key=address_key))

    def holder(self, handle: str) -> str | None:
        """The node that holds addresses for handle, or None if none does."""
        _check_handle(handle)
        return self._assignments.holder(handle)

    def addresses_of(self, handle: str) -> tuple[IPAddress, ...]:
        _check_handle(handle)
        return self._assignments.addresses_of(handle)

    # -- inspection ----------------------------------------------------------------

    def owned_blocks(self) -> list[IPNetwork]:
        return reports.owned_blocks(self._records, self.node)

    def borrowed(self) -> list[tuple[IPAddress, str]]:
        return reports.borrowed(self._records, self.node)

    def show(self) -> dict[str, Any]:
        return reports.show(self._records, self.node, self._pools, self.strict_affinity)

    def lookup(self, address: IPAddress) -> dict[str, Any]:
        """Which pool, block and handle `address` belongs to (whole store)."""
        return reports.address_info(self._records, self._pools, address, self._clock())

    def block_details(self) -> list[dict[str, Any]]:
        return reports.block_details(self._records, self._pools)

    def release_address(self, address: IPAddress, handle: str) -> bool:
        """Free `address` if `handle` still holds it, by CAS on its block,
        and drop the handle's index record once it leads to nothing. The
        caller decides that the handle is not live. False: not held by it."""
        _check_handle(handle)
        with self._lock:
            block = next((b for b in self._records.all_blocks() if address in b.cidr), None)
            if block is None:
                return False
            freed = self._assignments.remove(block.cidr, handle, {address})
            self._index.prune(handle)
        if freed:
            log.info("released address", extra={"handle": handle, "address": str(address)})
        return bool(freed)

    def check(
        self,
        live_handles: Mapping[str, set[str]] | None = None,
        live_nodes: set[str] | None = None,
        repair: bool = False,
        *,
        leak_grace: float = check.DEFAULT_LEAK_GRACE,
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
            return check.find_problems(
                check.CheckParts(self._records, self._index, self._assignments, self._pools),
                now=self._clock(),
                live_handles=live_handles,
                live_nodes=live_nodes,
                repair=repair,
                leak_grace=leak_grace,
            )

    # -- validation ----------------------------------------------------------------

    def _select(self, cidrs: Sequence[IPNetwork]) -> tuple[PoolLike, ...]:
        by_cidr = {p.cidr: p for p in self._pools}
        unknown = [c for c in cidrs if c not in by_cidr]
        if unknown or not cidrs:
            configured = ", ".join(str(p.cidr) for p in self._pools) or "none"
            what = ", ".join(map(str, unknown)) or "an empty list"
            raise UnknownPool(
                f"pools {what}: not a pool of node {self.node} (its pools: {configured})"
            )
        return tuple(by_cidr[c] for c in dict.fromkeys(cidrs))

    def _check_requested(
        self, requested: Sequence[IPAddress], only: tuple[PoolLike, ...] | None = None
    ) -> list[IPAddress]:
        if isinstance(requested, str):
            raise IpamError(f"requested addresses must be a sequence, not the string {requested!r}")
        wanted: list[IPAddress] = []
        for item in requested:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                raise IpamError(f"requested address {item!r} is not an IP address") from None
            if pool_of(only if only is not None else self._pools, address) is None:
                pools = ", ".join(str(p.cidr) for p in (only or self._pools)) or "none"
                raise AddressNotInPool(f"{address} is not in any pool (pools: {pools})")
            if address not in wanted:
                wanted.append(address)
        return wanted


def _check_handle(handle: str) -> None:
    if not isinstance(handle, str) or not valid_name(handle):
        raise IpamError(
            f"invalid handle {handle!r}: letters, digits, '.', '_' and '-', at most 253 characters"
        )
