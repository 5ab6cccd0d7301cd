"""The lab's management network and its Prometheus node (`deploy --prometheus`).

containerlab gives every node an `eth0` on a management network; this runner
does the same when a Prometheus is asked for: a bridge `br0` in its own
namespace (`LAB--mgmt`; no node name starts with '-'), a veth from it to
`eth0` of every node, addresses from 198.19.255.0/24 (inside the lab's
198.18.0.0/15). .1 is left for a gateway, as in containerlab's network;
nodes get .2 upward in file order; Prometheus gets .254. No default route
goes over it: it only carries scrapes and whatever an operator sends to
management addresses.

The Prometheus node is an ordinary `linux` node added to the topology, image
`prom/prometheus:v2.42.0`, running the host's `/usr/bin/prometheus`. Its
config and TSDB live in its __clabNodeDir__, under the lab directory, so
destroy removes them with the lab.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

import yaml

from l3fabric.lab.daemons import (
    AGENT_CONFIG,
    PROMETHEUS_CONFIG_DIR,
    PROMETHEUS_DATA,
    PROMETHEUS_PORT,
)
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import LabState, add_veth, netns_add, run
from l3fabric.lab.topology import Bind, ImageKind, Node, Topology, TopologyError

MGMT_SUBNET = ipaddress.IPv4Network("198.19.255.0/24")
MGMT_IFACE = "eth0"
MGMT_BRIDGE = "br0"
PROMETHEUS_NODE = "prometheus"
PROMETHEUS_IMAGE = "prom/prometheus:v2.42.0"
SCRAPE_INTERVAL = "2s"
SCRAPE_JOB = "l3fabric"
_REACHABLE_FROM_ANYWHERE = ("0.0.0.0", "::")


def mgmt_netns(paths: LabPaths) -> str:
    return paths.netns("-mgmt")


def with_prometheus(topology: Topology) -> Topology:
    """The topology plus the Prometheus node."""
    if any(n.name == PROMETHEUS_NODE for n in topology.nodes):
        raise TopologyError(
            [
                f"{topology.path}: topology.nodes.{PROMETHEUS_NODE}: --prometheus adds a node of "
                "that name; rename this one"
            ]
        )
    node_dir = topology.node_dir(PROMETHEUS_NODE)
    node = Node(
        PROMETHEUS_NODE,
        "linux",
        PROMETHEUS_IMAGE,
        binds=(
            Bind(node_dir / "config", PROMETHEUS_CONFIG_DIR, read_only=True, lab_owned=True),
            Bind(node_dir / "data", PROMETHEUS_DATA, lab_owned=True),
        ),
    )
    return replace(topology, nodes=(*topology.nodes, node))


@dataclass(frozen=True)
class MgmtNetwork:
    subnet: ipaddress.IPv4Network
    addresses: tuple[tuple[str, ipaddress.IPv4Interface], ...]  # node, its eth0 address

    def address(self, node: str) -> ipaddress.IPv4Interface:
        return dict(self.addresses)[node]

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.address(PROMETHEUS_NODE).ip}:{PROMETHEUS_PORT}"


@dataclass(frozen=True)
class ScrapeTarget:
    node: str
    address: str  # HOST:PORT on the management network


def plan_network(topology: Topology, subnet: ipaddress.IPv4Network = MGMT_SUBNET) -> MgmtNetwork:
    """Management addresses for every node; errors when a link already
    uses eth0 or the subnet is too small."""
    errors = [
        f"{topology.path}: topology.links: {end} uses {MGMT_IFACE}, the management interface "
        "(--prometheus); links start at eth1, as in containerlab"
        for link in topology.links
        for end in (link.a, link.b)
        if end.iface == MGMT_IFACE
    ]
    hosts = list(subnet.hosts())
    others = [n.name for n in topology.nodes if n.name != PROMETHEUS_NODE]
    if len(others) > len(hosts) - 2:
        errors.append(f"{topology.path}: {len(others)} nodes do not fit the management {subnet}")
    if errors:
        raise TopologyError(errors)
    addresses = [
        (name, ipaddress.IPv4Interface(f"{host}/{subnet.prefixlen}"))
        for name, host in zip(others, hosts[1:], strict=False)
    ]
    addresses.append((PROMETHEUS_NODE, ipaddress.IPv4Interface(f"{hosts[-1]}/{subnet.prefixlen}")))
    return MgmtNetwork(subnet, tuple(addresses))


def scrape_targets(topology: Topology, network: MgmtNetwork) -> list[ScrapeTarget]:
    """Each l3fabric node's metrics endpoint as seen from the management
    network, from its node config; errors for an agent whose metrics are off
    or listen where the management network cannot reach."""
    targets, errors = [], []
    for node in topology.nodes:
        if node.image_kind is not ImageKind.L3FABRIC:
            continue
        source = node.bound_source(AGENT_CONFIG)
        try:
            data = yaml.safe_load(source.read_text()) if source else None
        except (OSError, yaml.YAMLError) as exc:
            errors.append(f"node {node.name}: cannot read {source}: {exc}")
            continue
        section = data.get("metrics") if isinstance(data, dict) else None
        metrics = section if isinstance(section, dict) else {}
        listen = str(metrics.get("listen", "127.0.0.1:9641"))
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        mine = str(network.address(node.name).ip)
        if metrics.get("enabled", True) is False:
            errors.append(f"node {node.name}: metrics.enabled is false in {source}")
        elif host not in (*_REACHABLE_FROM_ANYWHERE, mine):
            errors.append(
                f"node {node.name}: metrics.listen {listen} in {source} cannot be reached from "
                f"the management network: set it to 0.0.0.0:{port} (or {mine}:{port})"
            )
        else:
            targets.append(ScrapeTarget(node.name, f"{mine}:{port}"))
    if errors:
        raise TopologyError(errors)
    return targets


def prometheus_config(lab: str, targets: list[ScrapeTarget]) -> str:
    data = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": SCRAPE_JOB,
                "scrape_interval": SCRAPE_INTERVAL,
                "static_configs": [
                    {"targets": [t.address], "labels": {"node": t.node, "lab": lab}}
                    for t in targets
                ],
            }
        ],
    }
    header = f"# Written by `l3fabric lab deploy --prometheus` for lab {lab}.\n"
    return header + yaml.safe_dump(data, sort_keys=False)


def write_prometheus_config(topology: Topology, targets: list[ScrapeTarget]) -> None:
    """The config and data directories the Prometheus node's binds name;
    made before its mounts are planned, so they are bound as directories."""
    node_dir = topology.node_dir(PROMETHEUS_NODE)
    (node_dir / "data").mkdir(parents=True, exist_ok=True)
    (node_dir / "config").mkdir(parents=True, exist_ok=True)
    (node_dir / "config" / "prometheus.yml").write_text(prometheus_config(topology.name, targets))


def _port_name(index: int, node: str) -> str:
    return f"p{index}-{node}"[:15]


def create_network(paths: LabPaths, network: MgmtNetwork, state: LabState) -> None:
    """The bridge namespace and every node's eth0 on it."""
    ns = mgmt_netns(paths)
    state.add_namespace(ns)
    netns_add(ns)
    run(["ip", "-n", ns, "link", "add", MGMT_BRIDGE, "type", "bridge"])
    run(["ip", "-n", ns, "link", "set", MGMT_BRIDGE, "up"])
    for index, (node, address) in enumerate(network.addresses):
        port = _port_name(index, node)
        add_veth(ns, port, paths.netns(node), MGMT_IFACE)
        run(["ip", "-n", ns, "link", "set", port, "master", MGMT_BRIDGE])
        run(["ip", "-n", paths.netns(node), "addr", "add", str(address), "dev", MGMT_IFACE])
