"""The data plane seam: errors, per-route failures and the Dataplane protocol.

The agent and the reconciler only ever see this protocol, so their unit tests
can fake it; NetlinkDataplane is the real implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from l3fabric.model import IPAddress, IPNetwork, Route, Workload


class DataplaneError(Exception):
    """Kernel state could not be brought to what was asked for."""


class NetnsNotFound(DataplaneError):
    """A network namespace given by name or path does not exist."""


@dataclass(frozen=True)
class RouteFailure:
    """One route that program() could not install or remove.

    errno is the kernel's (positive) error number, or the one l3fabric chose
    when the route never reached the kernel (ENODEV for an unknown interface).
    """

    route_prefix: IPNetwork
    op: str  # "replace" | "delete"
    errno: int
    message: str

    def __str__(self) -> str:
        return f"{self.op} {self.route_prefix}: {self.message} (errno {self.errno})"


@dataclass(frozen=True)
class Observed:
    """What the kernel has of one workload's wiring (Dataplane.inspect), for
    drift.workload_drift to compare with what it should have."""

    netns_present: bool
    host_present: bool = False
    host_mac: str | None = None
    host_link_local: IPAddress | None = None  # the workload's IPv6 gateway
    container_present: bool = False
    container_mac: str | None = None
    # On the container interface, link-local ones left out.
    container_addresses: tuple[IPNetwork, ...] = ()
    # (address, lladdr) of the container interface's neighbour entries.
    neighbours: tuple[tuple[IPAddress, str], ...] = ()
    # (gateway, out interface name) of each default route in the namespace,
    # v4 and v6; gateway None for a route without one.
    default_routes: tuple[tuple[IPAddress | None, str | None], ...] = ()


class Dataplane(Protocol):
    def ensure_sysctls(self) -> None:
        """Node-wide forwarding and reverse-path settings, current netns.

        Call before attaching workloads: IPv6 forwards nothing while
        net.ipv6.conf.all.forwarding is 0, whatever the interface says.
        """

    def ensure_host_protection(
        self, refused_tcp_ports: Sequence[int] | None, workload_sources: Sequence[IPNetwork] = ()
    ) -> None:
        """Workloads (on this node's interfaces, or from these source
        networks) may not reach these node ports (our nftables table,
        dataplane/hostprotect.py); None removes the table."""

    def attach(self, workload: Workload) -> None:
        """Wire a workload: veth, addresses, gateway, proxy ARP/NDP. Idempotent.

        Its host routes are the route table's (agent/routetable.py): the
        one writer of routes calls program() for them.
        """

    def attach_for_runtime(self, workload: Workload, container_ifname: str) -> None:
        """Make the workload's veth with both ends in the node's namespace:
        the host end set up as attach() does, the other named
        container_ifname for a runtime to move into the sandbox and configure
        (Docker's Join). Idempotent, and once the runtime has moved the other
        end, the pair is left as it is.
        """

    def inspect(self, workload: Workload) -> Observed:
        """Read (never change) what the kernel has of the workload's wiring:
        its host veth, its container interface, addresses, gateway
        neighbours and default routes."""

    def netns_refusal(self, path: str, ifname: str) -> str | None:
        """Why the namespace at path must not become a new workload's (the
        host's, the node's, another node's or network's), or None."""

    def detach(self, host_iface: str) -> None:
        """Remove a workload's veth and routes. No error if already gone."""

    def owned_links(self) -> dict[str, int]:
        """Host interface name -> ifindex, l3fabric's veths only."""

    def node_links(self) -> dict[str, int]:
        """Interface name -> ifindex, every link of the node."""
        ...

    def dump_routes(self, links: Mapping[str, int] | None = None) -> list[Route]:
        """Routes in the main table carrying l3fabric's protocol, v4 and v6.
        `links` (from node_links(), with nothing added since) names the routes'
        interfaces without another link dump."""

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[RouteFailure]:
        """Install/replace and remove routes in bulk; returns what failed.

        Deletes go first, so a prefix in both lists ends up installed. A
        delete of a route that is not there succeeds. Each route that fails
        gets one RouteFailure; the others in the same batch still apply.
        """

    def local_addresses(self) -> set[IPAddress]:
        """Every address configured on an interface of the node."""
        ...

    def on_link_networks(self) -> frozenset[IPNetwork] | None:
        """The networks the node reaches without a gateway, where a BGP next
        hop can be (l3fabric/dataplane/onlink.py); None: not known."""
        ...

    def kernel_changed(self) -> bool:
        """Whether the node's links, addresses or routes may have changed
        since the last call (dataplane/kernel_watch.py): False only when the
        kernel notified nothing; True on the first call or when unsure."""
        ...

    def close(self) -> None:
        """Release sockets. The object may be used again afterwards."""
