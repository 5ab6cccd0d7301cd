"""The records of block IPAM and the arithmetic of pools and blocks.

A block record holds a block's affinity and every allocation in it; a handle
record indexes the blocks that may hold a handle's addresses. Both are JSON in
the datastore, read and written by l3fabric.ipam.records, always with
compare-and-swap.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from l3fabric.datastore.base import KeyValue
from l3fabric.ipam.errors import IpamError
from l3fabric.model import IPAddress, IPNetwork


class PoolLike(Protocol):
    @property
    def cidr(self) -> IPv4Network | IPv6Network: ...

    @property
    def block_size(self) -> int: ...


@dataclass(frozen=True)
class Allocation:
    handle: str
    node: str  # the node that assigned it: not the block's node when borrowed
    assigned_at: float  # wall clock, for check's grace period


@dataclass(frozen=True)
class Block:
    cidr: IPNetwork
    node: str  # affinity
    allocations: Mapping[IPAddress, Allocation]
    version: int = 0  # datastore version it was read at; 0 if not stored yet

    def first_free(self) -> IPAddress | None:
        base = int(self.cidr.network_address)
        used = {int(a) for a in self.allocations}
        for number in range(base, base + self.cidr.num_addresses):
            if number not in used:
                return type(self.cidr.network_address)(number)
        return None

    def free(self) -> int:
        return self.cidr.num_addresses - len(self.allocations)

    def with_allocation(self, address: IPAddress, allocation: Allocation) -> Block:
        return replace(self, allocations={**self.allocations, address: allocation})

    def without(self, addresses: Iterable[IPAddress]) -> Block:
        gone = set(addresses)
        kept = {a: al for a, al in self.allocations.items() if a not in gone}
        return replace(self, allocations=kept)

    def encode(self) -> bytes:
        # Offsets into the block, not address strings, which are slow to parse.
        base = int(self.cidr.network_address)
        allocations = {
            str(int(a) - base): [al.handle, al.node, round(al.assigned_at, 3)]
            for a, al in self.allocations.items()
        }
        data = {"cidr": str(self.cidr), "node": self.node, "allocations": allocations}
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, kv: KeyValue) -> Block:
        try:
            data = json.loads(kv.value)
            cidr = ipaddress.ip_network(data["cidr"])
            base = cidr.network_address
            allocations = {
                base + int(offset): Allocation(str(handle), str(node), float(at))
                for offset, (handle, node, at) in data["allocations"].items()
            }
            return cls(cidr, str(data["node"]), allocations, kv.version)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IpamError(f"block record {kv.key} is damaged: {exc!r}") from None


@dataclass(frozen=True)
class HandleRecord:
    handle: str
    node: str  # the node that last assigned for it
    blocks: tuple[IPNetwork, ...]  # may hold the handle's addresses; a superset
    version: int = 0

    def encode(self) -> bytes:
        data = {"handle": self.handle, "node": self.node, "blocks": [str(b) for b in self.blocks]}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, kv: KeyValue) -> HandleRecord:
        try:
            data = json.loads(kv.value)
            blocks = tuple(ipaddress.ip_network(b) for b in data["blocks"])
            return cls(str(data["handle"]), str(data["node"]), blocks, kv.version)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IpamError(f"handle record {kv.key} is damaged: {exc!r}") from None


# --- pool and block arithmetic ------------------------------------------------


def check_pools(pools: Sequence[PoolLike]) -> tuple[PoolLike, ...]:
    checked: list[PoolLike] = []
    for pool in pools:
        cidr = pool.cidr
        if not isinstance(cidr, IPv4Network | IPv6Network):
            raise IpamError(f"pool cidr {cidr!r} is not an IP network")
        if not cidr.prefixlen <= pool.block_size <= cidr.max_prefixlen:
            raise IpamError(
                f"pool {cidr}: block size /{pool.block_size} must be between "
                f"/{cidr.prefixlen} and /{cidr.max_prefixlen}"
            )
        for other in checked:
            if other.cidr.version == cidr.version and other.cidr.overlaps(cidr):
                raise IpamError(f"pools {other.cidr} and {cidr} overlap")
        checked.append(pool)
    return tuple(checked)


def block_of(pool: PoolLike, address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network((address, pool.block_size), strict=False)


def first_unclaimed(pool: PoolLike, claimed: Sequence[IPNetwork]) -> IPNetwork | None:
    """The lowest block of pool that overlaps no claimed block."""
    taken = [c for c in claimed if c.version == pool.cidr.version and c.overlaps(pool.cidr)]
    exact = {c for c in taken if c.prefixlen == pool.block_size}
    odd = [c for c in taken if c.prefixlen != pool.block_size]
    count = 2 ** (pool.block_size - pool.cidr.prefixlen)
    step = 2 ** (pool.cidr.max_prefixlen - pool.block_size)
    base = int(pool.cidr.network_address)
    # Past as many candidates as the claimed blocks can cover, one is free.
    covered = len(exact) + sum(2 ** max(0, pool.block_size - c.prefixlen) for c in odd)
    for index in range(min(count, covered + 1)):
        candidate = ipaddress.ip_network((base + index * step, pool.block_size))
        if candidate in exact or any(candidate.overlaps(c) for c in odd):
            continue
        return candidate
    return None


def within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def address_key(address: IPAddress) -> tuple[int, int]:
    return (address.version, int(address))


def network_key(network: IPNetwork) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), network.prefixlen)


def pool_of(pools: Sequence[PoolLike], address: IPAddress) -> PoolLike | None:
    """The pool that holds `address`, or None."""
    return next((p for p in pools if address in p.cidr), None)
