"""The lab's management network, and its Prometheus node (`deploy --prometheus`).

containerlab gives every node an `eth0` on a management network; so does this
runner, for every lab: a bridge `br0` in its own namespace (`LAB--mgmt`; no
node name starts with '-') holding the gateway addresses, a veth from it to
`eth0` of every node, addresses from the topology's `mgmt:` section and each
node's `mgmt-ipv4`/`mgmt-ipv6` (lab/mgmtspec.py: 198.19.255.0/24 and
fd00:198:18:ffff::/64 unless the file says otherwise). No default route goes
over it and no routing daemon announces it: it only carries scrapes and
whatever an operator sends to management addresses.

The agents' metrics and health listener belongs on this side: in a lab, an
l3fabric node's `metrics.listen` must be its management address (or
loopback), never every address, so no workload reaches it (issue 13); deploy
refuses a config that says otherwise, naming the file and the address to use.

The Prometheus node is an ordinary `linux` node added to the topology, image
`prom/prometheus:v2.42.0`, running the host's `/usr/bin/prometheus`. Its
config and TSDB live in its __clabNodeDir__, under the lab directory, so
destroy removes them with the lab.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

import yaml

from l3fabric import yamlfile
from l3fabric.lab import mgmtspec
from l3fabric.lab.daemons import (
    AGENT_CONFIG,
    PROMETHEUS_CONFIG_DIR,
    PROMETHEUS_DATA,
    PROMETHEUS_PORT,
)
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import LabState, add_veth, netns_add, run
from l3fabric.lab.topology import Bind, ImageKind, Node, Topology, TopologyError

MGMT_IFACE = "eth0"
MGMT_BRIDGE = "br0"
PROMETHEUS_NODE = "prometheus"
PROMETHEUS_IMAGE = "prom/prometheus:v2.42.0"
SCRAPE_INTERVAL = "2s"
SCRAPE_JOB = "l3fabric"
_EVERY_ADDRESS = ("0.0.0.0", "::")
DEFAULT_METRICS_LISTEN = "127.0.0.1:9641"  # the agent's default (config.py)


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
    subnet6: ipaddress.IPv6Network = mgmtspec.DEFAULT_V6
    addresses6: tuple[tuple[str, ipaddress.IPv6Interface], ...] = ()
    network: str = mgmtspec.DEFAULT_NETWORK  # the file's mgmt.network

    def address(self, node: str) -> ipaddress.IPv4Interface:
        return dict(self.addresses)[node]

    def address6(self, node: str) -> ipaddress.IPv6Interface | None:
        return dict(self.addresses6).get(node)

    @property
    def gateway(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}")

    @property
    def gateway6(self) -> ipaddress.IPv6Interface:
        net = self.subnet6
        return ipaddress.IPv6Interface(f"{net.network_address + 1}/{net.prefixlen}")

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.address(PROMETHEUS_NODE).ip}:{PROMETHEUS_PORT}"

    def to_state(self, namespace: str) -> dict[str, object]:
        return {
            "namespace": namespace,
            "network": self.network,
            "subnet": str(self.subnet),
            "ipv6_subnet": str(self.subnet6),
            "gateway": str(self.gateway.ip),
            "ipv6_gateway": str(self.gateway6.ip),
            "addresses": {node: str(a) for node, a in self.addresses},
            "ipv6_addresses": {node: str(a) for node, a in self.addresses6},
        }


@dataclass(frozen=True)
class ScrapeTarget:
    node: str
    address: str  # HOST:PORT on the management network


def plan_network(topology: Topology) -> MgmtNetwork:
    """Management addresses for every node (the Prometheus node, when there
    is one, last: the highest free address); errors when a link already
    uses eth0 or the nodes do not fit."""
    errors = [
        f"{topology.path}: topology.links: {end} uses {MGMT_IFACE}, the management interface; "
        "links start at eth1, as in containerlab"
        for link in topology.links
        for end in (link.a, link.b)
        if end.iface == MGMT_IFACE
    ]
    spec = topology.mgmt
    wanted = [(n.name, n.mgmt_ipv4, n.mgmt_ipv6) for n in topology.nodes]
    last = PROMETHEUS_NODE if any(n.name == PROMETHEUS_NODE for n in topology.nodes) else None
    plan, problems = mgmtspec.plan_addresses(spec, wanted, last)
    errors += [f"{topology.path}: mgmt: {p}" for p in problems]
    if errors or plan is None:
        raise TopologyError(errors)
    return MgmtNetwork(spec.ipv4_subnet, plan.v4, spec.ipv6_subnet, plan.v6, spec.network)


@dataclass(frozen=True)
class Listener:
    """An agent's metrics and health listener, from its node config."""

    node: str
    source: str  # the config file on the host
    enabled: bool
    host: str
    port: str


def metrics_listeners(topology: Topology) -> tuple[list[Listener], list[str]]:
    listeners, errors = [], []
    for node in topology.nodes:
        if node.image_kind is not ImageKind.L3FABRIC:
            continue
        source = node.bound_source(AGENT_CONFIG)
        try:
            data = yamlfile.load_file(source) if source else None
        except yamlfile.YamlFileError as exc:
            errors.append(f"node {node.name}: {exc}")
            continue
        section = data.get("metrics") if isinstance(data, dict) else None
        metrics = section if isinstance(section, dict) else {}
        listen = str(metrics.get("listen", DEFAULT_METRICS_LISTEN))
        host, _, port = listen.rpartition(":")
        enabled = metrics.get("enabled", True) is not False
        listeners.append(Listener(node.name, str(source), enabled, host.strip("[]"), port))
    return listeners, errors


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_listeners(topology: Topology, network: MgmtNetwork) -> list[ScrapeTarget]:
    """Every enabled agent listener is on its node's management address (a
    scrape target) or on loopback; one on every address, or on an address
    workloads are routed to (the underlay), is an error saying what to set."""
    listeners, errors = metrics_listeners(topology)
    targets = []
    for item in listeners:
        if not item.enabled or _is_loopback(item.host):
            continue
        mine = str(network.address(item.node).ip)
        six = network.address6(item.node)
        own = {mine, *([str(six.ip)] if six is not None else [])}
        if item.host in own:
            shown = item.host if ":" not in item.host else f"[{item.host}]"
            targets.append(ScrapeTarget(item.node, f"{shown}:{item.port}"))
            continue
        where = "every address" if item.host in _EVERY_ADDRESS else item.host
        errors.append(
            f"node {item.node}: metrics.listen {item.host}:{item.port} in {item.source} "
            f"listens on {where}, which workloads can reach: in a lab the agent's metrics and "
            f"health belong on the management network; set it to {mine}:{item.port}, the "
            "node's management address"
        )
    if errors:
        raise TopologyError(errors)
    return targets


def scrape_targets(topology: Topology, network: MgmtNetwork) -> list[ScrapeTarget]:
    """Each l3fabric node's metrics endpoint as seen from the management
    network; errors for an agent whose metrics are off or listen where the
    management network cannot reach (loopback)."""
    targets = check_listeners(topology, network)
    scraped = {t.node for t in targets}
    listeners, _ = metrics_listeners(topology)
    errors = []
    for item in listeners:
        if item.node in scraped:
            continue
        mine = network.address(item.node).ip
        if not item.enabled:
            errors.append(f"node {item.node}: metrics.enabled is false in {item.source}")
        else:
            errors.append(
                f"node {item.node}: metrics.listen {item.host}:{item.port} in {item.source} "
                f"cannot be reached from the management network: set it to {mine}:{item.port}, "
                "the node's management address (not 0.0.0.0, which workloads reach too)"
            )
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
    """The bridge namespace with the gateway addresses, and every node's eth0
    on it (IPv6 without duplicate address detection, so the address is
    usable at once, as the agents bind theirs at start)."""
    ns = mgmt_netns(paths)
    state.add_namespace(ns)
    netns_add(ns)
    run(["ip", "-n", ns, "link", "add", MGMT_BRIDGE, "type", "bridge"])
    run(["ip", "-n", ns, "link", "set", MGMT_BRIDGE, "up"])
    run(["ip", "-n", ns, "addr", "add", str(network.gateway), "dev", MGMT_BRIDGE])
    run(["ip", "-n", ns, "addr", "add", str(network.gateway6), "dev", MGMT_BRIDGE, "nodad"])
    for index, (node, address) in enumerate(network.addresses):
        port = _port_name(index, node)
        node_ns = paths.netns(node)
        add_veth(ns, port, node_ns, MGMT_IFACE)
        run(["ip", "-n", ns, "link", "set", port, "master", MGMT_BRIDGE])
        run(["ip", "-n", node_ns, "addr", "add", str(address), "dev", MGMT_IFACE])
        six = network.address6(node)
        if six is not None:
            run(["ip", "-n", node_ns, "addr", "add", str(six), "dev", MGMT_IFACE, "nodad"])
