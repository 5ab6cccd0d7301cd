"""The datastore's key layout: the one place that spells a key.

Every backend stores the same keys under the fabric's prefix (default
`/l3fabric`); docs/datastore.md lists them. Everything that reads or writes
the datastore builds its keys here.

    PREFIX/nodes/NODE                  node record (NodeRecord as JSON)
    PREFIX/workloads/NODE/NAME         workload record (Workload as JSON)
    PREFIX/ipam/blocks/CIDR            IPAM block ("/" in the CIDR written "-")
    PREFIX/ipam/handles/HANDLE         IPAM handle index (a workload's addresses)
    PREFIX/services/NAMESPACE/NAME     service definition (datastore/services.py)

The DNS records of service discovery live outside the fabric's prefix, in
the SkyDNS layout under their own prefix (datastore/skydns.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from l3fabric.model import IPNetwork

DEFAULT_PREFIX = "/l3fabric"


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise ValueError(f"key prefix {self.prefix!r} must start with '/' and not end with one")

    # -- nodes ---------------------------------------------------------------

    @property
    def nodes(self) -> str:
        return f"{self.prefix}/nodes/"

    def node(self, name: str) -> str:
        return self.nodes + name

    def node_name(self, key: str) -> str:
        """The node a node key names."""
        return key[len(self.nodes) :]

    # -- workloads -------------------------------------------------------------

    @property
    def all_workloads(self) -> str:
        return f"{self.prefix}/workloads/"

    def workloads(self, node: str) -> str:
        return f"{self.all_workloads}{node}/"

    def workload(self, node: str, name: str) -> str:
        return self.workloads(node) + name

    def workload_owner(self, key: str) -> tuple[str, str]:
        """(node, name) of a workload key."""
        node, _, name = key[len(self.all_workloads) :].partition("/")
        return node, name

    # -- IPAM ------------------------------------------------------------------

    @property
    def blocks(self) -> str:
        return f"{self.prefix}/ipam/blocks/"

    def block(self, cidr: IPNetwork) -> str:
        return self.blocks + str(cidr).replace("/", "-")

    @property
    def handles(self) -> str:
        return f"{self.prefix}/ipam/handles/"

    def handle(self, handle: str) -> str:
        return self.handles + handle

    # -- services --------------------------------------------------------------

    @property
    def services(self) -> str:
        return f"{self.prefix}/services/"

    def service(self, namespace: str, name: str) -> str:
        return f"{self.services}{namespace}/{name}"
