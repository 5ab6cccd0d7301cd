"""The one set of fakes for unit tests: a kernel (Dataplane), an ExaBGP
speaker and a clock. Each fakes a seam the agent already has (Dataplane,
Speaker, clock callables); integration tests use the real things."""

from __future__ import annotations

import errno
import ipaddress
import threading
from collections.abc import Iterable, Mapping, Sequence

from l3fabric.bgp.events import BgpEvent
from l3fabric.bgp.exabgp import NeighborSpec
from l3fabric.dataplane.base import Observed, RouteFailure
from l3fabric.model import GATEWAY_V4, IPAddress, IPNetwork, Route, Workload, host_prefix


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


HOST_MAC = "ee:ee:ee:ee:ee:ee"
CONTAINER_MAC = "02:00:00:00:00:01"


class FakeKernel:
    """A Dataplane: owned links and routes in dicts, with injectable failures.

    Routes whose next hop names an interface that is not attached fail with
    ENODEV, as the kernel answers; `fail_prefixes` fail with EINVAL.
    """

    def __init__(
        self,
        routes: Iterable[Route] = (),
        *,
        addresses: Iterable[IPAddress] = (ipaddress.ip_address("198.18.0.1"),),
    ) -> None:
        self.routes: dict[IPNetwork, Route] = {r.prefix: r for r in routes}
        self.links: dict[str, Workload] = {}
        self.runtime_ifnames: dict[str, str] = {}  # host iface -> the end left for the runtime
        self.addresses = set(addresses)
        self.fail_prefixes: set[IPNetwork] = set()
        self.attach_error: Exception | None = None
        self.refused: dict[str, str] = {}
        self.protected_ports: tuple[int, ...] | None = None  # netns path -> why it is refused
        self.observed: dict[str, Observed] = {}  # host iface -> what inspect says instead
        self.program_calls: list[tuple[list[Route], list[IPNetwork]]] = []
        self.sysctls_applied = False
        self.closed = False
        # The networks next hops may be on; None: not known (not checked).
        self.on_link: frozenset[IPNetwork] | None = None
        self._seen: object = None  # what kernel_changed() last saw

    # -- Dataplane ------------------------------------------------------------

    def ensure_sysctls(self) -> None:
        self.sysctls_applied = True

    def attach(self, workload: Workload) -> None:
        if self.attach_error is not None:
            raise self.attach_error
        self.links[workload.host_iface] = workload

    def attach_for_runtime(self, workload: Workload, container_ifname: str) -> None:
        self.attach(workload)
        self.runtime_ifnames[workload.host_iface] = container_ifname

    def inspect(self, workload: Workload) -> Observed:
        """What attach made, as the kernel would show it; tests break it by
        editing `observed` (keyed by host interface) or the routes."""
        if workload.host_iface in self.observed:
            return self.observed[workload.host_iface]
        wired = self.links.get(workload.host_iface)
        if wired is None:
            return Observed(netns_present=True)
        ll = ipaddress.IPv6Address("fe80::1")
        v4 = any(a.version == 4 for a in wired.addresses)
        v6 = any(a.version == 6 for a in wired.addresses)
        gateways = ([GATEWAY_V4] if v4 else []) + ([ll] if v6 else [])
        return Observed(
            netns_present=True,
            host_present=True,
            host_mac=HOST_MAC,
            host_link_local=ll,
            container_present=True,
            container_mac=CONTAINER_MAC,
            container_addresses=tuple(host_prefix(a) for a in wired.addresses),
            neighbours=tuple((g, HOST_MAC) for g in gateways),
            default_routes=tuple((g, wired.ifname) for g in gateways),
        )

    def ensure_host_protection(
        self, refused_tcp_ports: Sequence[int] | None, workload_sources: Sequence[IPNetwork] = ()
    ) -> None:
        self.protected_ports = None if refused_tcp_ports is None else tuple(refused_tcp_ports)

    def netns_refusal(self, path: str, ifname: str) -> str | None:
        return self.refused.get(path)

    def detach(self, host_iface: str) -> None:
        self.links.pop(host_iface, None)
        # The kernel drops a link's routes with it.
        for prefix in [p for p, r in self.routes.items() if _uses(r, host_iface)]:
            del self.routes[prefix]

    def owned_links(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(sorted(self.links), start=10)}

    def node_links(self) -> dict[str, int]:
        return {"eth1": 2, **self.owned_links()}

    def dump_routes(self, links: Mapping[str, int] | None = None) -> list[Route]:
        return list(self.routes.values())

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[RouteFailure]:
        self.program_calls.append((list(replace), list(delete)))
        failures: list[RouteFailure] = []
        for prefix in delete:
            if prefix in self.fail_prefixes:
                failures.append(RouteFailure(prefix, "delete", errno.EINVAL, "Invalid argument"))
                continue
            self.routes.pop(prefix, None)
        for route in replace:
            if route.prefix in self.fail_prefixes:
                failures.append(
                    RouteFailure(route.prefix, "replace", errno.EINVAL, "Invalid argument")
                )
                continue
            missing = [h.ifname for h in route.nexthops if h.ifname and h.ifname not in self.links]
            if missing:
                failures.append(
                    RouteFailure(route.prefix, "replace", errno.ENODEV, f"no device {missing[0]}")
                )
                continue
            self.routes[route.prefix] = route
        return failures

    def local_addresses(self) -> set[IPAddress]:
        return set(self.addresses)

    def on_link_networks(self) -> frozenset[IPNetwork] | None:
        return self.on_link

    def kernel_changed(self) -> bool:
        """As the kernel's notifications would say: anything different in
        the links, routes or addresses since the last call (tests edit the
        dicts directly, as someone with `ip` would)."""
        now = (dict(self.routes), dict(self.links), frozenset(self.addresses))
        changed = now != self._seen
        self._seen = now
        return changed

    def close(self) -> None:
        self.closed = True


def _uses(route: Route, ifname: str) -> bool:
    return any(h.ifname == ifname for h in route.nexthops)


class FakeSpeaker:
    """ExaBGP as the agent sees it: neighbours set, lines sent, events queued."""

    def __init__(self) -> None:
        self.started = False
        self.neighbors: list[NeighborSpec] = []
        self.sent: list[str] = []
        self._idle = threading.Event()

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False
        self._idle.set()

    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool:
        new = list(neighbors)
        changed = new != self.neighbors
        self.neighbors = new
        return changed

    def send(self, lines: Sequence[str]) -> bool:
        self.sent.extend(lines)
        return self.started

    def events(self, timeout: float = 0.0) -> list[BgpEvent]:
        """Tests hand events to the service directly; the pump thread that
        calls this only waits (a real speaker blocks here too)."""
        self._idle.wait(timeout)
        return []

    @property
    def pid(self) -> int | None:
        return 1 if self.started else None
