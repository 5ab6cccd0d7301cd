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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from l3fabric.dataplane import codec, hostprotect, netns_guard, partial
from l3fabric.dataplane.base import DataplaneError, NetnsNotFound, Observed, RouteFailure
from l3fabric.dataplane.hostlink import HostLinkReader
from l3fabric.dataplane.kernel_watch import KernelChangeWatch
from l3fabric.dataplane.linklocal import LinkLocalReader
from l3fabric.dataplane.netns import netlink_socket_in, resolve_netns
from l3fabric.dataplane.onlink import OnLinkReader
from l3fabric.dataplane.routes import RouteSocket
from l3fabric.dataplane.sysctl import NODE_SETTINGS, Sysctls, host_iface_settings
from l3fabric.dataplane.workload_codec import DecodedLink
from l3fabric.dataplane.workload_side import read_workload_side
from l3fabric.model import (
    GATEWAY_V4,
    RTPROT_L3FABRIC,
    RUNTIME_PEER_PREFIX,
    IPAddress,
    IPNetwork,
    Route,
    Workload,
    host_prefix,
    is_owned_iface,
)

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x04
RUNTIME_CONFIGURED = "cnm"  # the owner whose runtime configures the container end
_TEMP_PREFIX = "l3ftmp"  # not an owned name (is_owned_iface), so never reconciled
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")
# Up to this many interfaces named by one program() call are looked up by name.
_LOOKUP_ONE_BY_ONE = 32


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
        link_locals: LinkLocalReader | None = None,
        on_link: OnLinkReader | None = None,
        kernel_watch: KernelChangeWatch | None = None,
        host_links: HostLinkReader | None = None,
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
        self._link_locals = link_locals or LinkLocalReader()
        self._on_link = on_link or OnLinkReader()
        self._kernel_watch = kernel_watch or KernelChangeWatch()
        self._host_links = host_links or HostLinkReader()
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

    def node_links(self) -> dict[str, int]:
        with self._lock:
            return self._routes.links()

    def dump_routes(self, links: Mapping[str, int] | None = None) -> list[Route]:
        with self._lock:
            return self._routes.dump(links)

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[RouteFailure]:
        with self._lock:
            failures = self._routes.program(replace, delete, links=self._links_for(replace))
            if failures:
                failures = partial.retry_reachable(
                    replace,
                    failures,
                    reachable=partial.gateway_on_link(self._node()),
                    program=lambda routes: self._routes.program(routes, [], links={}),
                )
        for failure in failures:
            log.warning(
                "route programming failed",
                extra={
                    "prefix": str(failure.route_prefix),
                    "op": failure.op,
                    "errno": failure.errno,
                    "error": failure.message,
                },
            )
        return failures

    def local_addresses(self) -> set[IPAddress]:
        with self._lock:
            return {
                ipaddress.ip_address(msg.get("IFA_ADDRESS"))
                for msg in self._node().get_addr()
                if msg.get("IFA_ADDRESS")
            }

    def on_link_networks(self) -> frozenset[IPNetwork]:
        with self._lock:
            return self._on_link.networks()

    def kernel_changed(self) -> bool:
        with self._lock:
            return self._kernel_watch.changed()

    def close(self) -> None:
        with self._lock:
            self._routes.close()
            self._link_locals.close()
            self._on_link.close()
            self._kernel_watch.close()
            self._host_links.close()
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
        log.info("attached workload", extra={"workload": workload.name, "iface": host})

    def attach_for_runtime(self, workload: Workload, container_ifname: str) -> None:
        host = workload.host_iface
        with self._lock:
            try:
                self._attach_for_runtime(workload, host, container_ifname)
            except NetlinkError as exc:
                raise DataplaneError(
                    f"attach {workload.name} ({host}): {os.strerror(exc.code)}"
                ) from exc
            except (DataplaneError, OSError) as exc:
                raise DataplaneError(f"attach {workload.name} ({host}): {exc}") from exc
        log.info(
            "attached workload for its runtime",
            extra={"workload": workload.name, "iface": host, "peer_iface": container_ifname},
        )

    def _attach_for_runtime(self, workload: Workload, host: str, peer_name: str) -> None:
        """Both veth ends in the node's namespace, up, the host end set up
        as for any workload; the runtime moves the other end and configures
        it. Once moved, the host end is left as it is: its peer is no longer
        here to check, and the runtime owns it."""
        ipr = self._node()
        index = self._link_index(host)
        peer = self._link_index(peer_name)
        created = False
        if index is not None:
            linked = peer is not None and _peers(ipr, index, peer)
            if not linked and self._peer_here(index):
                # The host end's peer is in this namespace under another
                # name: a half-made pair; start over.
                ipr.link("del", index=index)
                index = None
        if index is None:
            if peer is not None:
                raise DataplaneError(f"{peer_name} exists and is not the peer of {host}")
            with _step(f"create veth {host} with its peer {peer_name}"):
                ipr.link("add", ifname=host, kind="veth", peer={"ifname": peer_name})
            index = self._link_index(host)
            peer = self._link_index(peer_name)
            if index is None or peer is None:
                raise DataplaneError(f"{host} or {peer_name} disappeared right after creation")
            created = True
        try:
            self._sysctls.apply(host_iface_settings(host))
            with _step(f"bring up {host} and {peer_name}"):
                if peer is not None:
                    ipr.link("set", index=peer, state="up")
                ipr.link("set", index=index, state="up")
            if any(a.version == 4 for a in workload.addresses):
                # The runtime configures the container end, so no permanent
                # neighbour for the gateway there (attach's way); proxy ARP
                # answers for it only when the node routes 169.254.1.1, so
                # the host end has it itself and answers as for any address.
                with _step(f"gateway {GATEWAY_V4} on {host}"):
                    ipr.addr(
                        "replace",
                        index=index,
                        address=str(GATEWAY_V4),
                        prefixlen=32,
                        scope=codec.RT_SCOPE_LINK,
                    )
            if peer is not None and any(a.version == 6 for a in workload.addresses):
                self._wait_ready(ipr, ipr, index, peer, host, True)
        except BaseException:
            if created:
                self._remove_half_made(ipr, index, host)
            raise

    def inspect(self, workload: Workload) -> Observed:
        with self._lock:
            try:
                path = resolve_netns(workload.netns)
            except NetnsNotFound:
                # The host end may still be here: a runtime's sandbox that
                # does not exist yet (Docker's Join comes before it).
                return self._inspect_host(workload)
            if workload.owner == RUNTIME_CONFIGURED or self._awaits_runtime(workload.host_iface):
                # Docker moves and configures the container end itself
                # (addresses, gateway routes), at a moment of its own: the
                # inside of its sandbox is not ours to compare, nor to repair
                # while Docker is at it.
                return self._inspect_host(workload)
            return self._inspect(workload, path)

    def _awaits_runtime(self, host: str) -> bool:
        """The host veth's peer is still in the node's namespace: made by
        attach_for_runtime, not yet moved into the sandbox by the runtime."""
        link = self._host_links.get(name=host)
        return link is not None and self._waits_here(link)

    def _inspect_host(self, workload: Workload) -> Observed:
        link = self._host_links.get(name=workload.host_iface)
        if link is None:
            return Observed(netns_present=False)
        return Observed(False, True, link.mac, self._link_locals.of(link.index))

    def _inspect(self, workload: Workload, path: str) -> Observed:
        host = self._host_links.get(name=workload.host_iface)
        host_mac = host_ll = None
        if host is not None:
            host_mac = host.mac
            host_ll = self._link_locals.of(host.index)
        side = read_workload_side(path, workload.ifname)
        if side is None:
            return Observed(True, host is not None, host_mac, host_ll)
        return Observed(
            netns_present=True,
            host_present=host is not None,
            host_mac=host_mac,
            host_link_local=host_ll,
            container_present=True,
            container_mac=side.mac,
            container_addresses=side.addresses,
            neighbours=side.neighbours,
            default_routes=side.default_routes,
        )

    def ensure_host_protection(
        self, refused_tcp_ports: Sequence[int] | None, workload_sources: Sequence[IPNetwork] = ()
    ) -> None:
        if refused_tcp_ports is None:
            hostprotect.remove()
        else:
            hostprotect.apply(hostprotect.HostProtection.of(refused_tcp_ports, workload_sources))

    def netns_refusal(self, path: str, ifname: str) -> str | None:
        return netns_guard.refusal(path, ifname)

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
                log.warning(
                    "detach left routes behind",
                    extra={"iface": host_iface, "routes": len(failures)},
                )
            try:
                self._node().link("del", index=index)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise DataplaneError(f"detach {host_iface}: {os.strerror(exc.code)}") from exc
        log.info("detached workload", extra={"iface": host_iface})

    # -- attach steps -------------------------------------------------------

    def _attach(self, workload: Workload, host: str, path: str) -> None:
        ipr = self._node()
        with _ipr_in(path) as wipr:
            host_index, created = self._ensure_veth(ipr, wipr, host, path, workload.ifname)
            try:
                self._sysctls.apply(host_iface_settings(host))
                mac = ipr.link("get", index=host_index)[0].get("address")
                peer_index = _workload_iface(ipr, wipr, host_index, workload.ifname)
                if peer_index is None:
                    raise DataplaneError(f"{workload.ifname} of {host} vanished from {path}")
                with _step(f"bring up {host} and its {workload.ifname}"):
                    wipr.link("set", index=peer_index, state="up")
                    wipr.link("set", index=codec.LOOPBACK_IFINDEX, state="up")
                    ipr.link("set", index=host_index, state="up")
                _sync_addresses(wipr, peer_index, workload.addresses, workload.ifname)
                if any(addr.version == 4 for addr in workload.addresses):
                    with _step(f"IPv4 gateway {GATEWAY_V4} in {path}"):
                        _gateway_v4(wipr, peer_index, mac)
                need_v6 = any(addr.version == 6 for addr in workload.addresses)
                gateway = self._wait_ready(ipr, wipr, host_index, peer_index, host, need_v6)
                if gateway is not None:
                    with _step(f"IPv6 gateway {gateway} in {path}"):
                        _gateway_v6(wipr, peer_index, mac, gateway)
            except BaseException:
                if created:
                    self._remove_half_made(ipr, host_index, host)
                raise

    def _ensure_veth(
        self, ipr: IPRoute, wipr: IPRoute, host: str, path: str, ifname: str
    ) -> tuple[int, bool]:
        """The host veth's ifindex, and whether it was made now."""
        index = self._link_index(host)
        if index is not None:
            if _workload_iface(ipr, wipr, index, ifname) is not None:
                return index, False
            if self._peer_here(index):
                # attach_for_runtime's pair, the runtime about to move its
                # end: taking it away would break the runtime's setup.
                raise DataplaneError(f"{host}'s peer waits in the node's namespace for its runtime")
            # Exists, but its peer is not our interface in this namespace (a
            # crashed attach, or a moved workload): start over.
            log.warning(
                "recreating a veth whose peer is elsewhere",
                extra={"iface": host, "peer_iface": ifname, "netns": path},
            )
            ipr.link("del", index=index)
        existing = wipr.link_lookup(ifname=ifname)
        if existing:
            raise DataplaneError(f"{path} already has an {ifname} that is not wired to {host}")
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
            with _step(f"rename {temp} to {ifname} in {path}"):
                wipr.link("set", index=peer, ifname=ifname)
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
            gateway = self._link_locals.of(index) if up and need_v6 else None
            if up and (gateway is not None or not need_v6):
                return gateway
            if self._clock() > deadline:
                what = "operationally up" if not up else "an IPv6 link-local address"
                raise DataplaneError(
                    f"{host} did not become {what} within {self._link_local_timeout}s"
                )
            time.sleep(0.01)

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
                log.error(
                    "could not remove a half-made veth",
                    extra={"iface": host, "error": os.strerror(exc.code)},
                )

    # -- helpers ------------------------------------------------------------

    def _node(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(groups=0)
        return self._ipr

    def _links_for(self, routes: Sequence[Route]) -> dict[str, int] | None:
        """The ifindex of each interface the routes name. A few are looked up
        one by one: dumping every link of a node with 10k workload veths takes
        seconds, which must not happen for each workload added. Many (a full
        resync) take one dump; None lets the route socket do it."""
        names = {hop.ifname for route in routes for hop in route.nexthops if hop.ifname}
        if len(names) > _LOOKUP_ONE_BY_ONE:
            return None
        found = {name: self._link_index(name) for name in names}
        return {name: index for name, index in found.items() if index is not None}

    def _link_index(self, name: str) -> int | None:
        # A get by name, which the kernel answers from its index (a dump
        # filtered in Python would be O(N) per call with N workloads).
        link = self._host_links.get(name=name)
        return link.index if link is not None else None

    def _peer_here(self, host_index: int) -> bool:
        """The host veth's peer is a runtime's end waiting in this namespace
        (no IFLA_LINK_NETNSID, and named as attach_for_runtime names it)."""
        host = self._host_links.get(index=host_index)
        return host is not None and self._waits_here(host)

    def _waits_here(self, host: DecodedLink) -> bool:
        if host.peer_elsewhere or not host.peer_index:
            return False
        peer = self._host_links.get(index=host.peer_index)
        return peer is not None and peer.name.startswith(RUNTIME_PEER_PREFIX)


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


def _workload_iface(ipr: IPRoute, wipr: IPRoute, host_index: int, ifname: str) -> int | None:
    """ifname's ifindex if it is the peer of the host veth at host_index.

    Both ends name each other's ifindex (IFLA_LINK); checking both ways rules
    out an unrelated interface whose peer merely has the same ifindex elsewhere.
    """
    found = wipr.link_lookup(ifname=ifname)
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


def _peers(ipr: IPRoute, host_index: int, peer_index: int) -> bool:
    """Two veths of this namespace that name each other as their peer."""
    host: Any = ipr.link("get", index=host_index)[0]
    peer: Any = ipr.link("get", index=peer_index)[0]
    return bool(
        host.get(("linkinfo", "kind")) == "veth"
        and peer.get(("linkinfo", "kind")) == "veth"
        and host.get("link") == peer_index
        and peer.get("link") == host_index
        and host.get("link_netnsid") is None
    )


def _sync_addresses(wipr: IPRoute, index: int, addresses: Sequence[IPAddress], ifname: str) -> None:
    """Exactly the workload's /32 and /128s on its interface (link-local left alone)."""
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
            with _step(f"remove stale {address}/{length} from {ifname}"):
                wipr.addr("del", index=index, address=address, prefixlen=length)
    for prefix in sorted(wanted - present, key=str):
        flags = IFA_F_NODAD if prefix.version == 6 else 0
        with _step(f"add {prefix} to {ifname}"):
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
