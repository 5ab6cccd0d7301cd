"""The errors of block IPAM, apart from the allocator because decoding a
damaged record (l3fabric.ipam.blocks) raises one too."""

from __future__ import annotations

from l3fabric.model import IPAddress


class IpamError(Exception):
    """An address cannot be assigned or released; the message says why."""


class PoolExhausted(IpamError):
    pass


class AddressNotInPool(IpamError):
    pass


class UnknownPool(IpamError):
    """A pool asked for by CIDR is not one of the node's pools."""


class AddressInUse(IpamError):
    def __init__(self, address: IPAddress, handle: str, node: str) -> None:
        super().__init__(f"{address} is in use by handle {handle} (assigned by node {node})")
        self.address = address
        self.handle = handle


class AffinityConflict(IpamError):
    """A requested address lies in another node's block under strict affinity."""
