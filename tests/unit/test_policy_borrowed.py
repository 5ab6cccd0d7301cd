"""Import policy for addresses borrowed from another node's block."""

from __future__ import annotations

import ipaddress

from l3fabric.bgp.events import PathAttributes
from l3fabric.bgp.policy import ImportPolicy, PeerInfo

ip, net = ipaddress.ip_address, ipaddress.ip_network
PEER = PeerInfo(ip("198.18.0.2"), "mesh", 64512, 64512)
ATTRS = PathAttributes(next_hop=ip("198.18.0.2"))


def policy() -> ImportPolicy:
    return ImportPolicy(pools=(net("100.64.0.0/16"),)).with_local_addresses(
        [ip("100.64.0.1")], borrowed=[ip("100.64.0.66")]
    )


def test_the_owners_block_may_cover_a_borrowed_address() -> None:
    assert policy().evaluate(net("100.64.0.64/26"), ATTRS, PEER) is None


def test_a_borrowed_address_itself_may_not_be_announced() -> None:
    assert policy().evaluate(net("100.64.0.66/32"), ATTRS, PEER) == "covers-local-workload"


def test_own_block_addresses_may_not_be_covered() -> None:
    assert policy().evaluate(net("100.64.0.0/26"), ATTRS, PEER) == "covers-local-workload"
