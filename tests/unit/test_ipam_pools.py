"""Ipam.assign restricted to some of the node's pools (CNI's `pools`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from l3fabric.datastore import Datastore, FileDatastore
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.errors import AddressNotInPool, PoolExhausted, UnknownPool

net = ipaddress.ip_network


@dataclass(frozen=True)
class Pool:
    cidr: IPv4Network | IPv6Network
    block_size: int


A = Pool(IPv4Network("100.64.0.0/28"), 30)
B = Pool(IPv4Network("100.65.0.0/28"), 30)
V6 = Pool(IPv6Network("fd00:64::/120"), 126)
POOLS = (A, B, V6)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Datastore]:
    opened = FileDatastore(tmp_path / "store")
    try:
        yield opened
    finally:
        opened.close()


def test_only_the_named_pools_are_used(store: Datastore) -> None:
    ipam = Ipam(store, "n1", POOLS)
    (only_b,) = ipam.assign("w1", pools=[B.cidr])
    assert only_b in B.cidr
    both = ipam.assign("w2", pools=[B.cidr, V6.cidr])
    assert [a in B.cidr or a in V6.cidr for a in both] == [True, True]
    assert [a.version for a in both] == [4, 6]
    # Without a restriction the node's own blocks come first, whatever their pool.
    first = ipam.assign("w3")
    assert first[0] in B.cidr and first[1] in V6.cidr


def test_an_own_block_of_another_pool_is_not_used(store: Datastore) -> None:
    ipam = Ipam(store, "n1", POOLS)
    assert ipam.assign("w1")[0] in A.cidr  # A's first block is now the node's
    for n in range(8):  # B has 4 blocks of 4: 16 addresses, none from A
        (address,) = ipam.assign(f"b{n}", pools=[B.cidr])
        assert address in B.cidr


def test_an_exhausted_restriction_does_not_spill_into_other_pools(store: Datastore) -> None:
    ipam = Ipam(store, "n1", POOLS)
    for n in range(16):
        ipam.assign(f"b{n}", pools=[B.cidr])
    with pytest.raises(PoolExhausted, match=re.escape("100.65.0.0/28")):
        ipam.assign("more", pools=[B.cidr])
    assert ipam.addresses_of("more") == ()


def test_an_unknown_pool_names_the_configured_ones_and_takes_nothing(store: Datastore) -> None:
    ipam = Ipam(store, "n1", POOLS)
    with pytest.raises(UnknownPool) as info:
        ipam.assign("w1", pools=[B.cidr, net("10.0.0.0/8")])
    message = str(info.value)
    assert "10.0.0.0/8" in message
    assert all(str(p.cidr) in message for p in POOLS)
    assert ipam.addresses_of("w1") == ()
    assert ipam.owned_blocks() == []


def test_requested_addresses_must_lie_in_the_named_pools(store: Datastore) -> None:
    ipam = Ipam(store, "n1", POOLS)
    with pytest.raises(AddressNotInPool, match=re.escape("100.64.0.1")):
        ipam.assign("w1", [ipaddress.ip_address("100.64.0.1")], pools=[B.cidr])
    got = ipam.assign("w1", [ipaddress.ip_address("100.65.0.3")], pools=[B.cidr])
    assert got == (ipaddress.ip_address("100.65.0.3"),)
