"""The data plane seam: errors, per-route failures and the Dataplane protocol.

The agent and the reconciler only ever see this protocol, so their unit tests
can fake it; NetlinkDataplane is the real implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class Dataplane(Protocol):
    def ensure_sysctls(self) -> None:
        """Node-wide forwarding and reverse-path settings, current netns.

        Call before attaching workloads: IPv6 forwards nothing while
        net.ipv6.conf.all.forwarding is 0, whatever the interface says.
        """

    def attach(self, workload: Workload) -> None:
        """Wire a workload: veth, addresses, gateway, host routes. Idempotent."""

    def detach(self, host_iface: str) -> None:
        """Remove a workload's veth and routes. No error if already gone."""

    def owned_links(self) -> dict[str, int]:
        """Host interface name -> ifindex, l3fabric's veths only."""

    def dump_routes(self) -> list[Route]:
        """Routes in the main table carrying l3fabric's protocol, v4 and v6."""

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[RouteFailure]:
        """Install/replace and remove routes in bulk; returns what failed.

        Deletes go first, so a prefix in both lists ends up installed. A
        delete of a route that is not there succeeds. Each route that fails
        gets one RouteFailure; the others in the same batch still apply.
        """

    def local_addresses(self) -> set[IPAddress]:
        """Every address configured on an interface of the node."""
        ...

    def close(self) -> None:
        """Release sockets. The object may be used again afterwards."""
