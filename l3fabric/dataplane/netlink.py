"""NetlinkDataplane: the real Dataplane, for the namespace the agent runs in.

Workload wiring (links, addresses, neighbours) goes through pyroute2; route
programming and dumps go through RouteSocket's raw netlink path. Node-side
objects live in the current network namespace; the workload end is reached
through a netlink socket opened inside the workload's namespace.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from l3fabric.dataplane import codec
from l3fabric.dataplane.base import DataplaneError, RouteFailure
from l3fabric.dataplane.netns import netlink_socket_in, resolve_netns
from l3fabric.dataplane.routes import RouteSocket
from l3fabric.dataplane.sysctl import NODE_SETTINGS, Sysctls, host_iface_settings
from l3fabric.model import (
    GATEWAY_V4,
    RTPROT_L3FABRIC,
    WORKLOAD_IFACE,
    IPAddress,
    IPNetwork,
    Route,
    Workload,
    host_prefix,
    is_owned_iface,
    workload_routes,
)

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02
IFA_F_TENTATIVE = 0x40
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x04
_TEMP_PREFIX = "l3ftmp"  # not an owned name (is_owned_iface), so never reconciled
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


class NetlinkDataplane:
    """Dataplane over netlink for the current network namespace.

    Thread-safe: one lock serialises every operation, so the agent and the
    reconciler may call from different threads.
    """

    def __init__(
        self,
        *,
        protocol: int = RTPROT_L3FABRIC,
        sysctls: Sysctls | None = None,
        route_socket: RouteSocket | None = None,
        link_local_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.protocol = protocol
        self._sysctls = sysctls or Sysctls()
        self._routes = route_socket or RouteSocket(protocol=protocol)
        if self._routes.protocol != protocol:
            raise ValueError(
                f"route socket protocol {self._routes.protocol} differs from {protocol}"
            )
        self._link_local_timeout = link_local_timeout
        self._clock = clock
        self._ipr: IPRoute | None = None
        self._lock = threading.RLock()

    # -- Dataplane ----------------------------------------------------------

    def ensure_sysctls(self) -> None:
        with self._lock:
            self._sysctls.apply(NODE_SETTINGS)

    def owned_links(self) -> dict[str, int]:
        with self._lock:
            return {
                name: index for name, index in self._routes.links().items() if is_owned_iface(name)
            }

    def dump_routes(self) -> list[Route]:
        with self._lock:
            return self._routes.dump()

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[RouteFailure]:
        with self._lock:
            failures = self._routes.program(replace, delete)
        for failure in failures:
            log.warning("route programming failed: %s", failure)
        return failures

    def local_addresses(self) -> set[IPAddress]:
        with self._lock:
            return {
                ipaddress.ip_address(msg.get("IFA_ADDRESS"))
                for msg in self._node().get_addr()
                if msg.get("IFA_ADDRESS")
            }

    def close(self) -> None:
        with self._lock:
            self._routes.close()
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None

    def attach(self, workload: Workload) -> None:
        host = workload.host_iface
        with self._lock:
            path = resolve_netns(workload.netns)
            try:
                self._attach(workload, host, path)
            except NetlinkError as exc:
                raise DataplaneError(
                    f"attach {workload.name} ({host}): {os.strerror(exc.code)}"
                ) from exc
            except (DataplaneError, OSError) as exc:
                raise DataplaneError(f"attach {workload.name} ({host}): {exc}") from exc
        log.info("attached %s as %s", workload.name, host)

    def detach(self, host_iface: str) -> None:
        if not is_owned_iface(host_iface):
            raise DataplaneError(f"refusing to detach {host_iface!r}: not an l3fabric interface")
        with self._lock:
            index = self._link_index(host_iface)
            if index is None:
                return
            stale = self._routes_via(index)
            failures = self._routes.program([], stale)
            if failures:
                log.warning("detach %s: %d routes not deleted", host_iface, len(failures))
            try:
                self._node().link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise DataplaneError(f"detach {host_iface}: {os.strerror(exc.code)}") from exc
        log.info("detached %s", host_iface)

    # -- attach steps -------------------------------------------------------

    def _attach(self, workload: Workload, host: str, path: str) -> None:
        ipr = self._node()
        with _ipr_in(path) as wipr:
            host_index, created = self._ensure_veth(ipr, wipr, host, path)
            try:
                self._sysctls.apply(host_iface_settings(host))
                mac = ipr.link("get", index=host_index)[0].get("address")
                peer_index = _workload_iface(ipr, wipr, host_index)
                if peer_index is None:
                    raise DataplaneError(f"{WORKLOAD_IFACE} of {host} vanished from {path}")
                with _step(f"bring up {host} and its {WORKLOAD_IFACE}"):
                    wipr.link("set", index=peer_index, state="up")
                    wipr.link("set", index=_lo_index(wipr), state="up")
                    ipr.link("set", index=host_index, state="up")
                _sync_addresses(wipr, peer_index, workload.addresses)
                if any(addr.version == 4 for addr in workload.addresses):
                    with _step(f"IPv4 gateway {GATEWAY_V4} in {path}"):
                        _gateway_v4(wipr, peer_index, mac)
                need_v6 = any(addr.version == 6 for addr in workload.addresses)
                gateway = self._wait_ready(ipr, wipr, host_index, peer_index, host, need_v6)
                if gateway is not None:
                    with _step(f"IPv6 gateway {gateway} in {path}"):
                        _gateway_v6(wipr, peer_index, mac, gateway)
                self._host_routes(workload, host_index)
            except BaseException:
                if created:
                    self._remove_half_made(ipr, host_index, host)
                raise

    def _ensure_veth(self, ipr: IPRoute, wipr: IPRoute, host: str, path: str) -> tuple[int, bool]:
        """The host veth's ifindex, and whether it was made now."""
        index = self._link_index(host)
        if index is not None:
            if _workload_iface(ipr, wipr, index) is not None:
                return index, False
            # Exists, but its peer is not our eth0 in this namespace (a
            # crashed attach, or a moved workload): start over.
            log.warning("recreating %s: its peer is not %s in %s", host, WORKLOAD_IFACE, path)
            ipr.link("del", index=index)
        existing = wipr.link_lookup(ifname=WORKLOAD_IFACE)
        if existing:
            raise DataplaneError(
                f"{path} already has an {WORKLOAD_IFACE} that is not wired to {host}"
            )
        temp = _TEMP_PREFIX + secrets.token_hex(4)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with _step(f"create veth {host} with its peer in {path}"):
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": temp, "net_ns_fd": fd})
        finally:
            os.close(fd)
        index = self._link_index(host)
        if index is None:
            raise DataplaneError(f"{host} disappeared right after it was created")
        try:
            (peer,) = wipr.link_lookup(ifname=temp)
            with _step(f"rename {temp} to {WORKLOAD_IFACE} in {path}"):
                wipr.link("set", index=peer, ifname=WORKLOAD_IFACE)
        except BaseException:
            self._remove_half_made(ipr, index, host)
            raise
        return index, True

    def _wait_ready(
        self, ipr: IPRoute, wipr: IPRoute, index: int, peer: int, host: str, need_v6: bool
    ) -> IPAddress | None:
        """Wait until both veth ends are operationally up (the kernel attaches
        their queues only then, dropping packets before) and, if need_v6, the
        host end has a usable link-local address, the workloads' v6 gateway.

        Carrier changes are applied by the kernel's linkwatch, which may
        batch them for up to a second, hence a wait rather than a check.
        """
        deadline = self._clock() + self._link_local_timeout
        while True:
            up = _oper_up(ipr, index) and _oper_up(wipr, peer)
            gateway = _link_local(ipr, index) if up and need_v6 else None
            if up and (gateway is not None or not need_v6):
                return gateway
            if self._clock() > deadline:
                what = "operationally up" if not up else "an IPv6 link-local address"
                raise DataplaneError(
                    f"{host} did not become {what} within {self._link_local_timeout}s"
                )
            time.sleep(0.01)

    def _host_routes(self, workload: Workload, index: int) -> None:
        wanted = workload_routes(workload)
        keep = {route.prefix for route in wanted}
        stale = [prefix for prefix in self._routes_via(index) if prefix not in keep]
        failures = self._routes.program(wanted, stale, links={workload.host_iface: index})
        if failures:
            raise DataplaneError(
                f"host routes for {workload.name}: " + "; ".join(str(f) for f in failures)
            )

    def _routes_via(self, index: int) -> list[IPNetwork]:
        prefixes: list[IPNetwork] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for raw in self._routes.dump_raw(family, oif=index):
                address = ipaddress.ip_address(raw.dst)
                prefixes.append(ipaddress.ip_network((address, raw.dst_len)))
        return prefixes

    def _remove_half_made(self, ipr: IPRoute, index: int, host: str) -> None:
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                log.error("could not remove half-made %s: %s", host, os.strerror(exc.code))

    # -- helpers ------------------------------------------------------------

    def _node(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(groups=0)
        return self._ipr

    def _link_index(self, name: str) -> int | None:
        found = self._node().link_lookup(ifname=name)
        return int(found[0]) if found else None


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Name the step in the error: "add fd00::1/128 to eth0: Permission denied"."""
    try:
        yield
    except NetlinkError as exc:
        raise DataplaneError(f"{what}: {os.strerror(exc.code)}") from exc


@contextmanager
def _ipr_in(path: str) -> Iterator[IPRoute]:
    sock = netlink_socket_in(path)
    ipr = IPRoute(fileno=sock.detach(), groups=0)
    try:
        yield ipr
    finally:
        ipr.close()


def _oper_up(ipr: IPRoute, index: int) -> bool:
    return bool(ipr.link("get", index=index)[0].get("operstate") == "UP")


def _link_local(ipr: IPRoute, index: int) -> IPAddress | None:
    for msg in ipr.addr("dump", index=index, family=socket.AF_INET6):
        address = ipaddress.IPv6Address(msg.get("address"))
        if address in _LINK_LOCAL_V6 and not msg["flags"] & IFA_F_TENTATIVE:
            return address
    return None


def _lo_index(wipr: IPRoute) -> int:
    (index,) = wipr.link_lookup(ifname="lo")
    return int(index)


def _workload_iface(ipr: IPRoute, wipr: IPRoute, host_index: int) -> int | None:
    """eth0's ifindex if it is the peer of the host veth at host_index.

    Both ends name each other's ifindex (IFLA_LINK); checking both ways rules
    out an unrelated eth0 whose peer merely has the same ifindex elsewhere.
    """
    found = wipr.link_lookup(ifname=WORKLOAD_IFACE)
    if not found:
        return None
    peer: Any = wipr.link("get", index=found[0])[0]
    host: Any = ipr.link("get", index=host_index)[0]
    if (
        peer.get(("linkinfo", "kind")) != "veth"
        or host.get(("linkinfo", "kind")) != "veth"
        or peer.get("link") != host_index
        or host.get("link") != found[0]
    ):
        return None
    return int(found[0])


def _sync_addresses(wipr: IPRoute, index: int, addresses: Sequence[IPAddress]) -> None:
    """Exactly the workload's /32 and /128s on eth0 (link-local left alone)."""
    wanted = {host_prefix(addr) for addr in addresses}
    present: set[IPNetwork] = set()
    for msg in wipr.addr("dump", index=index):
        address, length = msg.get("address"), msg["prefixlen"]
        prefix = ipaddress.ip_network((address, length), strict=False)
        if prefix.version == 6 and prefix.network_address in _LINK_LOCAL_V6:
            continue
        if prefix in wanted:
            present.add(prefix)
        else:
            with _step(f"remove stale {address}/{length} from {WORKLOAD_IFACE}"):
                wipr.addr("del", index=index, address=address, prefixlen=length)
    for prefix in sorted(wanted - present, key=str):
        flags = IFA_F_NODAD if prefix.version == 6 else 0
        with _step(f"add {prefix} to {WORKLOAD_IFACE}"):
            wipr.addr(
                "add",
                index=index,
                address=str(prefix.network_address),
                prefixlen=prefix.prefixlen,
                flags=flags,
            )


def _gateway_v4(wipr: IPRoute, index: int, mac: str) -> None:
    gateway = str(GATEWAY_V4)
    # A permanent entry: the kernel does not proxy-ARP 169.254.1.1 when the
    # node has no default route, and a workload must not depend on that.
    wipr.neigh("replace", dst=gateway, lladdr=mac, ifindex=index, state=NUD_PERMANENT)
    wipr.route("replace", dst=f"{gateway}/32", oif=index, scope=codec.RT_SCOPE_LINK)
    wipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index, flags=RTNH_F_ONLINK)


def _gateway_v6(wipr: IPRoute, index: int, mac: str, gateway: IPAddress) -> None:
    wipr.neigh("replace", dst=str(gateway), lladdr=mac, ifindex=index, state=NUD_PERMANENT)
    wipr.route("replace", dst="::/0", gateway=str(gateway), oif=index)
