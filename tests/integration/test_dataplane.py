"""NetlinkDataplane against real namespaces, veths and the kernel's tables.

The data plane always works on the current network namespace, and the test
process must never change its own (root) namespace. So every dataplane call
runs on one worker thread that has setns()ed into the node namespace: sockets
opened there, and /proc/sys/net as seen from there, belong to the node.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyroute2 import netns as pyroute2_netns

from l3fabric.dataplane import (
    DataplaneError,
    NetlinkDataplane,
    NetnsNotFound,
    RouteFailure,
    resolve_netns,
)
from l3fabric.dataplane.linklocal import LinkLocalReader
from l3fabric.dataplane.nlsocket import NetlinkSocket
from l3fabric.dataplane.routes import RouteSocket
from l3fabric.model import (
    RTPROT_L3FABRIC,
    IPNetwork,
    NextHop,
    Route,
    RouteKind,
    Workload,
    host_iface_name,
    workload_routes,
)
from tests.nettools import Namespaces, ns_run

pytestmark = pytest.mark.integration

T = TypeVar("T")

NODE_V4 = "198.18.0.1"
NODE_V6 = "fd00:198:18::1"
UPLINK = "up0"  # a veth in the node, for routes that need a real device
UPLINK_V4 = ("198.18.1.1/24", "198.18.1.2", "198.18.1.3")
UPLINK_V6 = ("fd00:198:18:1::1/64", "fd00:198:18:1::2", "fd00:198:18:1::3")


class InNetns:
    """Runs callables on a single thread that lives in a network namespace."""

    def __init__(self, name: str) -> None:
        path = resolve_netns(name)
        self._pool = ThreadPoolExecutor(
            max_workers=1, initializer=lambda: pyroute2_netns.setns(path, flags=0)
        )

    def call(self, func: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(func, *args).result(timeout=120)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


ROOT_WATCHED = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv6.conf.all.forwarding",
)


@dataclass
class Node:
    name: str
    runner: InNetns
    dataplane: NetlinkDataplane
    root_sysctls_before: dict[str, str]

    def __getattr__(self, method: str) -> Callable[..., Any]:
        """node.attach(w) runs dataplane.attach(w) inside the node namespace."""
        target = getattr(self.dataplane, method)
        return lambda *args: self.runner.call(target, *args)

    def wire(self, workload: Workload) -> None:
        """What the agent does for an add: attach, then the route table
        programs the workload's host routes."""
        self.attach(workload)
        assert self.program(workload_routes(workload), []) == []


@contextmanager
def node_in(netns: Namespaces, route_socket: RouteSocket | None = None) -> Iterator[Node]:
    name = netns.add("node")
    ns_run(name, ["ip", "addr", "add", f"{NODE_V4}/32", "dev", "lo"])
    ns_run(name, ["ip", "addr", "add", f"{NODE_V6}/128", "dev", "lo"])
    # The uplink's far end is in a namespace of its own so the node sees it
    # up with carrier; gateway routes need an on-link gateway on it.
    far = netns.add("far")
    netns.link(
        name,
        far,
        addrs_a=[UPLINK_V4[0], UPLINK_V6[0]],
        addrs_b=["198.18.1.2/24", "fd00:198:18:1::2/64"],
        names=(UPLINK, "eth1"),
    )
    runner = InNetns(name)
    dataplane = NetlinkDataplane(route_socket=route_socket)
    root_before = {key: sysctl(None, key) for key in ROOT_WATCHED}
    try:
        # As the agent does at start: IPv6 forwards only with all.forwarding=1.
        runner.call(dataplane.ensure_sysctls)
        yield Node(name, runner, dataplane, root_before)
    finally:
        runner.call(dataplane.close)
        runner.close()


@pytest.fixture
def node(netns: Namespaces) -> Iterator[Node]:
    with node_in(netns) as made:
        yield made


def workload(netns: Namespaces, tag: str, *addresses: str) -> Workload:
    name = netns.add(tag)
    return Workload(
        name=f"wl-{name}",
        node="node",
        netns=f"/run/netns/{name}",
        addresses=tuple(ipaddress.ip_address(a) for a in addresses),
    )


def ns_of(w: Workload) -> str:
    return os.path.basename(w.netns)


def ping(ns: str, address: str) -> None:
    ns_run(ns, ["ping", "-c", "1", "-W", "2", address])


def ip_json(ns: str, *args: str) -> Any:
    return json.loads(ns_run(ns, ["ip", "-j", *args]) or "[]")


def our_kernel_routes(ns: str) -> list[str]:
    """Every route with our protocol in any table, as `ip` prints it."""
    out = []
    for family in ("-4", "-6"):
        out += ns_run(ns, ["ip", family, "route", "show", "table", "all", "proto", "76"]).split(
            "\n"
        )
    return sorted(line for line in out if line.strip())


def workload_state(w: Workload) -> dict[str, Any]:
    """What a workload sees, without fields the kernel changes on its own."""
    ns = ns_of(w)
    links = {
        link["ifname"]: (link["address"], link["operstate"], link.get("link_index"))
        for link in ip_json(ns, "link", "show")
    }
    addresses = sorted(
        (a["ifname"], info["local"], info["prefixlen"])
        for a in ip_json(ns, "addr", "show")
        for info in a["addr_info"]
        if not info["local"].startswith("fe80")
    )
    routes = sorted(json.dumps(r, sort_keys=True) for r in ip_json(ns, "route", "show"))
    routes += sorted(json.dumps(r, sort_keys=True) for r in ip_json(ns, "-6", "route", "show"))
    neighbours = sorted(
        (n["dst"], n.get("lladdr"), tuple(n.get("state", ())))
        for family in ("-4", "-6")
        for n in ip_json(ns, family, "neigh", "show", "nud", "permanent")
    )
    return {"links": links, "addresses": addresses, "routes": routes, "neigh": neighbours}


def sysctl(ns: str | None, key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    if ns is None:
        return Path(path).read_text().strip()
    return ns_run(ns, ["cat", path]).strip()


def net(prefix: str) -> IPNetwork:
    return ipaddress.ip_network(prefix)


def dev_route(prefix: str, ifname: str = UPLINK) -> Route:
    return Route(net(prefix), (NextHop(ifname=ifname),))


def via(prefix: str, *gateways: str) -> Route:
    return Route(net(prefix), tuple(NextHop(gateway=ipaddress.ip_address(g)) for g in gateways))


# -- workload wiring ----------------------------------------------------------


def test_workloads_ping_each_other_and_the_node(node: Node, netns: Namespaces) -> None:
    w1 = workload(netns, "w", "100.64.0.1", "fd00:64::1")
    w2 = workload(netns, "w", "100.64.0.2", "fd00:64::2")
    node.wire(w1)
    node.wire(w2)

    for src, dst in ((w1, w2), (w2, w1)):
        for address in dst.addresses:
            ping(ns_of(src), str(address))
        ping(ns_of(src), NODE_V4)
        ping(ns_of(src), NODE_V6)

    assert sysctl(node.name, "net.ipv4.ip_forward") == "1"
    assert sysctl(node.name, "net.ipv6.conf.all.forwarding") == "1"
    assert sysctl(node.name, "net.ipv4.conf.all.rp_filter") == "2"
    assert sysctl(node.name, "net.ipv4.conf.default.rp_filter") == "2"
    host = w1.host_iface
    assert sysctl(node.name, f"net.ipv4.conf.{host}.proxy_arp") == "1"
    assert sysctl(node.name, f"net.ipv6.conf.{host}.proxy_ndp") == "1"
    assert sysctl(node.name, f"net.ipv6.conf.{host}.forwarding") == "1"
    # All of that happened in the node namespace, none in the test's own.
    assert {key: sysctl(None, key) for key in ROOT_WATCHED} == node.root_sysctls_before

    assert sorted(node.owned_links()) == sorted([w1.host_iface, w2.host_iface])
    assert sorted(node.dump_routes(), key=str) == sorted(
        (
            Route(net(f"{a}/{a.max_prefixlen}"), (NextHop(ifname=w.host_iface),))
            for w in (w1, w2)
            for a in w.addresses
        ),
        key=str,
    )
    assert all(r.kind is RouteKind.LOCAL_WORKLOAD for r in node.dump_routes())


class CountingSocket(NetlinkSocket):
    """Counts the address messages a dump brought back."""

    def __init__(self) -> None:
        super().__init__(rcvbuf=1 << 20)
        self.received = 0

    def dump(self, make_request: Callable[[int], bytes]) -> list[Any]:
        messages = super().dump(make_request)
        self.received += len(messages)
        return messages


def test_link_local_reads_only_the_interface_asked_for(node: Node, netns: Namespaces) -> None:
    workloads = [
        workload(netns, "w", f"100.64.0.{20 + i}", f"fd00:64::{20 + i:x}") for i in range(4)
    ]
    for w in workloads:
        node.wire(w)
    counting = CountingSocket()
    reader = LinkLocalReader(counting)
    try:
        for w in workloads:
            (link,) = ip_json(node.name, "-6", "addr", "show", "dev", w.host_iface, "scope", "link")
            (expected,) = [a["local"] for a in link["addr_info"]]
            index = int(link["ifindex"])
            assert node.runner.call(reader.of, index) == ipaddress.IPv6Address(expected)
        # The kernel filtered each dump to the one interface: one address each,
        # not every link-local address of the node.
        assert counting.received == len(workloads)
        assert node.runner.call(reader.of, 2**31 - 1) is None  # no such interface
    finally:
        node.runner.call(reader.close)


def test_on_link_networks_are_the_nodes_links_not_its_routes(node: Node, netns: Namespaces) -> None:
    """The uplink's subnets and a gateway-less route an operator added are on
    link; the workloads' host routes, gateway routes and fe80::/64 are not."""
    w = workload(netns, "w", "100.64.0.30", "fd00:64::30")
    node.wire(w)
    ns_run(node.name, ["ip", "route", "add", "198.18.5.0/24", "dev", UPLINK])
    ns_run(node.name, ["ip", "route", "add", "198.18.6.0/24", "via", UPLINK_V4[1]])
    ns_run(node.name, ["ip", "-6", "route", "add", "fd00:198:18:6::/64", "via", UPLINK_V6[1]])
    # A learned route of ours without a gateway is not a link either.
    assert node.program([dev_route("100.64.9.0/26", UPLINK)], []) == []
    assert node.on_link_networks() == {
        ipaddress.ip_network("198.18.1.0/24"),
        ipaddress.ip_network("fd00:198:18:1::/64"),
        ipaddress.ip_network("198.18.5.0/24"),
    }


def test_workload_side_wiring(node: Node, netns: Namespaces) -> None:
    w = workload(netns, "w", "100.64.0.7", "fd00:64::7")
    node.wire(w)
    ns = ns_of(w)
    host_mac = ip_json(node.name, "link", "show", w.host_iface)[0]["address"]
    (eth0,) = [link for link in ip_json(ns, "link", "show") if link["ifname"] == "eth0"]
    assert eth0["operstate"] == "UP"
    assert workload_state(w)["addresses"] == [
        ("eth0", "100.64.0.7", 32),
        ("eth0", "fd00:64::7", 128),
        ("lo", "127.0.0.1", 8),
        ("lo", "::1", 128),
    ]
    neigh4 = ip_json(ns, "-4", "neigh", "show", "dev", "eth0")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh4] == [
        ("169.254.1.1", host_mac, ["PERMANENT"])
    ]
    default4 = ns_run(ns, ["ip", "-4", "route", "show", "default"])
    assert "via 169.254.1.1 dev eth0" in default4 and "onlink" in default4
    default6 = ip_json(ns, "-6", "route", "show", "default")[0]
    gateway6 = ipaddress.ip_address(default6["gateway"])
    assert gateway6.is_link_local and default6["dev"] == "eth0"
    host_addrs = ip_json(node.name, "-6", "addr", "show", "dev", w.host_iface)[0]["addr_info"]
    assert str(gateway6) in [a["local"] for a in host_addrs]


def test_attach_is_idempotent_and_repairs(node: Node, netns: Namespaces) -> None:
    w = workload(netns, "w", "100.64.0.3", "fd00:64::3")
    node.wire(w)
    host_before = ip_json(node.name, "link", "show", w.host_iface)[0]["ifindex"]
    state = workload_state(w)
    routes = our_kernel_routes(node.name)
    assert len(routes) == 2

    node.attach(w)
    assert workload_state(w) == state
    assert our_kernel_routes(node.name) == routes
    assert ip_json(node.name, "link", "show", w.host_iface)[0]["ifindex"] == host_before

    # Break the workload side the way a crash or an operator might; attach
    # puts it back (the node's routes are the route table's to repair).
    ns = ns_of(w)
    ns_run(ns, ["ip", "route", "del", "default"])
    ns_run(ns, ["ip", "neigh", "del", "169.254.1.1", "dev", "eth0"])
    ns_run(ns, ["ip", "addr", "del", "100.64.0.3/32", "dev", "eth0"])
    ns_run(ns, ["ip", "addr", "add", "100.64.9.9/32", "dev", "eth0"])
    node.attach(w)
    assert workload_state(w) == state
    assert our_kernel_routes(node.name) == routes
    ping(ns, NODE_V4)


def test_attach_replaces_a_veth_whose_peer_is_not_the_workloads(
    node: Node, netns: Namespaces
) -> None:
    w = workload(netns, "w", "100.64.0.4")
    # A leftover: right name, but its peer is still in the node namespace.
    ns_run(node.name, ["ip", "link", "add", w.host_iface, "type", "veth", "peer", "name", "junk"])
    node.wire(w)
    links = [link["ifname"] for link in ip_json(node.name, "link", "show")]
    assert "junk" not in links and w.host_iface in links
    ping(ns_of(w), NODE_V4)


def test_failed_attach_leaves_no_veth_behind(node: Node, netns: Namespaces) -> None:
    w = workload(netns, "w", "100.64.0.5", "fd00:64::5")
    for key in ("all", "default"):
        ns_run(ns_of(w), ["sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1"])
    with pytest.raises(DataplaneError, match=w.name):
        node.attach(w)
    assert w.host_iface not in [link["ifname"] for link in ip_json(node.name, "link", "show")]
    assert [link["ifname"] for link in ip_json(ns_of(w), "link", "show")] == ["lo"]
    assert our_kernel_routes(node.name) == []


def test_attach_refuses_a_foreign_eth0(node: Node, netns: Namespaces) -> None:
    w = workload(netns, "w", "100.64.0.6")
    other = netns.add("o")
    netns.link(ns_of(w), other, names=("eth0", "eth0"))
    with pytest.raises(DataplaneError, match="already has an eth0"):
        node.attach(w)
    assert w.host_iface not in [link["ifname"] for link in ip_json(node.name, "link", "show")]


def test_attach_to_a_missing_namespace_names_it(node: Node) -> None:
    w = Workload("ghost", "node", "/run/netns/l3f-test-does-not-exist")
    with pytest.raises(NetnsNotFound, match="l3f-test-does-not-exist"):
        node.attach(w)


def test_detach_leaves_nothing_and_is_idempotent(node: Node, netns: Namespaces) -> None:
    w1 = workload(netns, "w", "100.64.0.8", "fd00:64::8")
    w2 = workload(netns, "w", "100.64.0.9", "fd00:64::9")
    node.wire(w1)
    node.wire(w2)
    ping(ns_of(w1), "100.64.0.9")  # leaves neighbour entries on the node
    ping(ns_of(w1), "fd00:64::9")
    neighbours = ns_run(node.name, ["ip", "neigh", "show", "dev", w1.host_iface])
    assert neighbours.strip()

    node.detach(w1.host_iface)
    assert w1.host_iface not in [link["ifname"] for link in ip_json(node.name, "link", "show")]
    assert w1.host_iface not in ns_run(node.name, ["ip", "neigh", "show"])
    assert w1.host_iface not in "\n".join(our_kernel_routes(node.name))
    assert [link["ifname"] for link in ip_json(ns_of(w1), "link", "show")] == ["lo"]
    assert sorted(node.owned_links()) == [w2.host_iface]
    assert len(our_kernel_routes(node.name)) == 2  # w2's

    node.detach(w1.host_iface)
    node.detach(host_iface_name("never-attached"))
    with pytest.raises(DataplaneError, match="not an l3fabric interface"):
        node.detach(UPLINK)
    assert UPLINK in [link["ifname"] for link in ip_json(node.name, "link", "show")]


def test_owned_links_ignores_other_links(node: Node, netns: Namespaces) -> None:
    ns_run(node.name, ["ip", "link", "add", "l3fnotours", "type", "veth", "peer", "name", "x0"])
    w = workload(netns, "w", "100.64.0.10")
    node.attach(w)
    links = node.owned_links()
    assert list(links) == [w.host_iface]
    assert links[w.host_iface] == ip_json(node.name, "link", "show", w.host_iface)[0]["ifindex"]


# -- route programming ----------------------------------------------------------


def thousand_routes() -> list[Route]:
    v4 = [dev_route(f"100.64.{i // 256}.{i % 256}/32") for i in range(600)]
    v6 = [dev_route(f"fd00:64:1::{i:x}/128") for i in range(300)]
    learned = [via(f"100.65.{i}.0/26", UPLINK_V4[1]) for i in range(50)]
    learned += [via(f"fd00:65:{i:x}::/64", UPLINK_V6[1]) for i in range(50)]
    return v4 + v6 + learned


@pytest.mark.parametrize("batch_size", [512, 7])
def test_program_replace_and_delete_1000_routes(netns: Namespaces, batch_size: int) -> None:
    with node_in(netns, RouteSocket(protocol=RTPROT_L3FABRIC, batch_size=batch_size)) as node:
        routes = thousand_routes()
        assert node.program(routes, []) == []
        assert sorted(node.dump_routes(), key=str) == sorted(routes, key=str)
        assert len(our_kernel_routes(node.name)) == 1000

        # Replacing in place: same prefixes, new next hops.
        moved = [via(str(r.prefix), UPLINK_V4[2]) for r in routes[:600]]
        assert node.program(moved, []) == []
        assert sorted(node.dump_routes(), key=str) == sorted(moved + routes[600:], key=str)

        gone = [r.prefix for r in routes[::2]]
        assert node.program([], gone) == []
        left = {r.prefix for r in node.dump_routes()}
        assert left == {r.prefix for r in routes[1::2]}

        # Deleting what is not there is success.
        assert node.program([], gone) == []
        assert node.program([], [r.prefix for r in routes]) == []
        assert node.dump_routes() == []
        assert our_kernel_routes(node.name) == []


def test_ecmp_routes_round_trip(node: Node) -> None:
    ecmp4 = via("100.66.0.0/24", UPLINK_V4[1], UPLINK_V4[2])
    ecmp6 = via("fd00:66::/48", UPLINK_V6[1], UPLINK_V6[2])
    assert node.program([ecmp4, ecmp6], []) == []
    assert sorted(node.dump_routes(), key=str) == sorted([ecmp4, ecmp6], key=str)
    shown = ns_run(node.name, ["ip", "route", "show", "100.66.0.0/24"])
    assert shown.count("nexthop via") == 2

    # Back to one path, then to the other pair order: equality holds.
    single = via("100.66.0.0/24", UPLINK_V4[2])
    assert node.program([single], []) == []
    assert via("100.66.0.0/24", UPLINK_V4[2]) in node.dump_routes()
    assert node.program([via("100.66.0.0/24", UPLINK_V4[2], UPLINK_V4[1])], []) == []
    assert ecmp4 in node.dump_routes()


@pytest.mark.parametrize("batch_size", [512, 3])
def test_a_bad_route_fails_alone(netns: Namespaces, batch_size: int) -> None:
    with node_in(netns, RouteSocket(protocol=RTPROT_L3FABRIC, batch_size=batch_size)) as node:
        good = [dev_route(f"100.64.7.{i}/32") for i in range(10)]
        unreachable = via("100.67.0.0/24", "10.9.9.9")  # not on any link
        unreachable6 = via("fd00:67::/48", "fd00:dead::1")
        no_device = dev_route("100.67.1.0/24", "l3f000000000000")
        wrong_family = Route(net("100.67.2.0/24"), (NextHop(gateway=ipaddress.ip_address("::1")),))
        batch = [*good[:4], unreachable, no_device, *good[4:8], unreachable6, wrong_family]
        batch += good[8:]
        failures = node.program(batch, [])

        by_prefix = {f.route_prefix: f for f in failures}
        assert set(by_prefix) == {
            unreachable.prefix,
            unreachable6.prefix,
            no_device.prefix,
            wrong_family.prefix,
        }
        assert all(isinstance(f, RouteFailure) and f.op == "replace" for f in failures)
        assert by_prefix[no_device.prefix].errno == 19  # ENODEV
        assert "l3f000000000000" in by_prefix[no_device.prefix].message
        assert by_prefix[unreachable.prefix].errno != 0
        assert by_prefix[unreachable.prefix].message
        assert sorted(node.dump_routes(), key=str) == sorted(good, key=str)


def test_foreign_routes_are_never_listed_or_deleted(node: Node) -> None:
    foreign = [
        ["ip", "route", "add", "100.64.200.0/24", "via", UPLINK_V4[1], "proto", "static"],
        ["ip", "route", "add", "100.64.201.1/32", "dev", UPLINK],
        ["ip", "-6", "route", "add", "fd00:64:200::/48", "via", UPLINK_V6[1], "proto", "bird"],
        # Ours by protocol, but not in the main table: not ours to manage.
        ["ip", "route", "add", "100.64.202.0/24", "dev", UPLINK, "proto", "76", "table", "100"],
    ]
    for cmd in foreign:
        ns_run(node.name, cmd)
    before = {
        family: ns_run(node.name, ["ip", family, "route", "show", "table", "all"])
        for family in ("-4", "-6")
    }

    mine = dev_route("100.64.203.0/24")
    assert node.program([mine], []) == []
    assert node.dump_routes() == [mine]
    deletes = [
        net("100.64.200.0/24"),
        net("100.64.201.1/32"),
        net("fd00:64:200::/48"),
        net("100.64.202.0/24"),
        mine.prefix,
    ]
    assert node.program([], deletes) == []
    assert node.dump_routes() == []
    after = {
        family: ns_run(node.name, ["ip", family, "route", "show", "table", "all"])
        for family in ("-4", "-6")
    }
    assert after == before


# -- namespaces -----------------------------------------------------------------


def test_resolve_netns(netns: Namespaces, tmp_path: Path) -> None:
    name = netns.add("r")
    assert resolve_netns(name) == f"/run/netns/{name}"
    assert resolve_netns(f"/run/netns/{name}") == f"/run/netns/{name}"
    assert resolve_netns("/proc/self/ns/net") == "/proc/self/ns/net"
    with pytest.raises(NetnsNotFound, match="l3f-nope"):
        resolve_netns("l3f-nope")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(NetnsNotFound, match="not a namespace file"):
        resolve_netns(str(plain))
    with pytest.raises(NetnsNotFound, match="not a network namespace"):
        resolve_netns("/proc/self/ns/uts")
    with pytest.raises(NetnsNotFound, match="empty"):
        resolve_netns("")


def test_lost_replies_are_reported_not_guessed(netns: Namespaces) -> None:
    # A receive buffer far too small for a batch's error replies: the kernel
    # drops some, so the outcome of that batch is unknown and is reported as
    # such; the socket keeps working afterwards.
    tiny = RouteSocket(protocol=RTPROT_L3FABRIC, batch_size=2000, rcvbuf=4096)
    with node_in(netns, tiny) as node:
        absent = [net(f"100.68.{i // 256}.{i % 256}/32") for i in range(2000)]
        failures = node.program([dev_route("100.68.100.0/24")], absent)
        assert failures, "expected the kernel to drop replies into a 4 KiB buffer"
        assert {f.errno for f in failures} == {105}  # ENOBUFS
        assert {f.route_prefix for f in failures} <= {*absent, net("100.68.100.0/24")}
        assert node.program([dev_route("100.68.101.0/24")], []) == []
        assert dev_route("100.68.101.0/24") in node.dump_routes()
