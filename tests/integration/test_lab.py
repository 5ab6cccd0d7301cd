"""`l3fabric lab` end to end: each topology in containerlab/ deployed on
namespaces, daemons up, the verify matrix, graph, destroy, nothing left.

Each test deploys under a unique lab name (--name), so runs can coexist, and
destroys its lab in a finally block whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3fabric.lab import verify
from l3fabric.lab.paths import LAB_ROOT
from l3fabric.lab.runtime import is_alive
from tests.nettools import Namespaces, ns_run, unique_name, wait_for

pytestmark = pytest.mark.integration
NOTHING: dict[str, list[str]] = {"namespaces": [], "mounts": [], "files": [], "processes": []}

REPO = Path(__file__).resolve().parents[2]
CLAB = REPO / "containerlab"
LAB = [sys.executable, "-m", "l3fabric.cli", "lab"]
L3FABRIC = [sys.executable, "-m", "l3fabric.cli"]


def ns_ok(ns: str, *cmd: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def need(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


class LabRun:
    def __init__(self, topology: Path, name: str) -> None:
        self.topology = topology
        self.name = name
        self.timings: dict[str, float] = {}

    def cli(
        self, action: str, *args: str, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(
            [*LAB, action, str(self.topology), "--name", self.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.timings[action] = time.monotonic() - started
        return proc

    def ok(self, action: str, *args: str) -> str:
        proc = self.cli(action, *args)
        assert proc.returncode == 0, (
            f"lab {action} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
        return proc.stdout

    def exec(self, node: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", node, "--", *cmd)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((LAB_ROOT / self.name / "state.json").read_text())
        return data

    def leftovers(self) -> dict[str, list[str]]:
        prefix = f"{self.name}-"
        namespaces = [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        mounts = [
            line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if f"/{prefix}" in line or f"/{self.name}/" in line
        ]
        files = [str(LAB_ROOT / self.name)] if (LAB_ROOT / self.name).exists() else []
        return {
            "namespaces": namespaces,
            "mounts": mounts,
            "files": files,
            "processes": self.processes(),
        }

    def processes(self) -> list[str]:
        """Processes writing into the lab's directory: every process the lab
        starts (holders, daemons, and their children) logs there."""
        lab_dir = f"{LAB_ROOT / self.name}/"
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for fd in ("1", "2"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(lab_dir):
                    found.append(f"{pid}: {target}")
                    break
        return found


@pytest.fixture
def lab_run(request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[LabRun] = []

    def make(topology: Path, tag: str = "lab") -> LabRun:
        run = LabRun(topology, unique_name(tag))
        made.append(run)
        return run

    try:
        yield make
    finally:
        for run in made:
            run.cli("destroy")


def assert_destroyed_cleanly(run: LabRun, state: dict[str, Any]) -> None:
    pids = [(p["pid"], p["start"]) for p in state["processes"]]
    pids += [(h["pid"], h["start"]) for h in state["holders"].values()]
    assert pids
    run.ok("destroy")
    assert not [pid for pid, start in pids if is_alive(pid, start)]
    assert run.leftovers() == NOTHING
    # Idempotent.
    assert "nothing to remove" in run.ok("destroy")


def wait_agents_ready(run: LabRun, nodes: list[str], timeout: float = 90) -> None:
    def ready() -> bool:
        return all(
            run.exec(node, *L3FABRIC, "status", "-o", "json").returncode == 0 for node in nodes
        )

    wait_for(ready, timeout=timeout, interval=1, what=f"agents of {run.name} ready")


def wait_verified(run: LabRun, timeout: float = 60) -> str:
    """verify, repeated until it passes (routes converge right after the
    sessions do) or the deadline."""
    proc = run.cli("verify", "--wait", str(timeout))
    assert proc.returncode == 0, f"verify failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def inspect(run: LabRun) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(run.ok("inspect", "-o", "json"))
    return rows


def graph_sessions(run: LabRun, tmp_path: Path) -> str:
    out = tmp_path / "fabric.svg"
    run.ok("graph", "-o", str(out))
    svg = out.read_text()
    assert svg.startswith("<svg") and "</svg>" in svg
    return svg


def report(run: LabRun) -> None:
    print(f"\n{run.topology.name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()))


# -- the topologies ----------------------------------------------------------------


def test_two_nodes(lab_run: Any, tmp_path: Path) -> None:
    need("nsenter", "unshare")
    run = lab_run(CLAB / "two-nodes.clab.yml", "tn")
    out = run.ok("deploy", "--workloads", "2")
    assert "workload node2-w1" in out
    rows = inspect(run)
    assert {r["node"]: r["state"] for r in rows} == {"node1": "running", "node2": "running"}
    assert "198.18.0.1/24" in next(r for r in rows if r["node"] == "node1")["addresses"]

    # Inside a node, the CLI finds that node's agent without flags.
    listed = json.loads(run.exec("node1", *L3FABRIC, "workload", "list", "-o", "json").stdout)
    assert sorted(w["name"] for w in listed) == ["node1-w0", "node1-w1"]
    assert run.exec("node2", "hostname").stdout.strip() == "node2"
    assert run.exec("node1", "sh", "-c", "exit 7").returncode == 7

    wait_agents_ready(run, ["node1", "node2"])
    verified = wait_verified(run)
    assert "PASS" in verified and "✗" not in verified
    svg = graph_sessions(run, tmp_path)
    assert 'class="session established"' in svg and 'class="session down"' not in svg
    assert len(run.processes()) >= 4  # two holders, two agents (and their ExaBGPs)
    state = run.state()
    assert_destroyed_cleanly(run, state)
    report(run)


def test_two_nodes_with_workloads_attached_through_cni(lab_run: Any) -> None:
    """--attach cni: each workload made by the installed plugin executable,
    run inside its node as a runtime runs it; verify passes the same way."""
    need("nsenter", "unshare")
    run = lab_run(CLAB / "two-nodes.clab.yml", "tc")
    out = run.ok("deploy", "--workloads", "2", "--attach", "cni")
    assert "workload node2-w1" in out and "(cni)" in out
    listed = json.loads(run.exec("node1", *L3FABRIC, "workload", "list", "-o", "json").stdout)
    assert sorted(w["pod"] for w in listed) == ["node1-w0", "node1-w1"]
    assert {w["owner"] for w in listed} == {"cni"} and {w["namespace"] for w in listed} == {
        run.name
    }
    wait_agents_ready(run, ["node1", "node2"])
    verified = wait_verified(run)
    assert "PASS" in verified and "✗" not in verified
    assert_destroyed_cleanly(run, run.state())


def test_route_reflectors(lab_run: Any, tmp_path: Path) -> None:
    need("nsenter", "unshare", "bird", "birdc")
    run = lab_run(CLAB / "route-reflectors.clab.yml", "rr")
    run.ok("deploy", "--workloads", "3")
    assert all(r["state"] == "running" for r in inspect(run))

    def reflectors_established() -> bool:
        out = run.exec("rr1", "birdc", "show", "protocols").stdout
        sessions = [line for line in out.splitlines() if line.startswith(("peer_", "dyn_"))]
        # rr2 on both families, and the four nodes on both families.
        return len(sessions) == 10 and all("Established" in line for line in sessions)

    wait_for(reflectors_established, timeout=90, interval=1, what="rr1 sessions Established")
    wait_agents_ready(run, [f"node{i}" for i in range(1, 5)])
    verified = wait_verified(run)
    assert verified.count("✓") >= 2 * 12 * 15  # both families, 16 senders x 12 receivers
    graph_sessions(run, tmp_path)
    assert_destroyed_cleanly(run, run.state())
    report(run)


def test_leaf_spine(lab_run: Any, tmp_path: Path) -> None:
    need("nsenter", "unshare", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd")
    run = lab_run(CLAB / "leaf-spine.clab.yml", "ls")
    run.ok("deploy", "--workloads", "2")
    rows = {r["node"]: r for r in inspect(run)}
    assert rows["spine1"]["runs"] == "frr" and rows["leaf1"]["runs"] == "bird"
    not_agent = run.exec("leaf1", "l3fabric", "status")
    assert not_agent.returncode == 1 and "leaf1 is a bird node" in not_agent.stderr
    assert "is it running" not in not_agent.stderr

    def spines_established() -> bool:
        for spine in ("spine1", "spine2"):
            proc = run.exec(spine, "vtysh", "-c", "show bgp summary json")
            summary = json.loads(proc.stdout)
            states = [
                peer["state"]
                for family in ("ipv4Unicast", "ipv6Unicast")
                for peer in summary.get(family, {}).get("peers", {}).values()
            ]
            if len(states) != 4 or set(states) != {"Established"}:
                return False
        return True

    wait_for(spines_established, timeout=90, interval=1, what="spine sessions Established")
    wait_agents_ready(run, [f"node{i}" for i in range(1, 5)])
    verified = wait_verified(run)
    assert "PASS" in verified

    # ECMP on the leaf towards the other rack, next hop self towards its
    # nodes for routes from the spines, the rack-mate's own next hop kept.
    workloads = {w["name"]: w for w in run.state()["workloads"]}
    remote = workloads["node3-w0"]["addresses"][0]
    leaf_route = run.exec("leaf1", "ip", "route", "show", remote).stdout
    assert "nexthop via 198.18.100.1" in leaf_route and "nexthop via 198.18.100.3" in leaf_route
    node_route = run.exec("node1", "ip", "route", "show", remote).stdout
    assert "via 198.18.1.254" in node_route
    mate = workloads["node2-w0"]["addresses"][0]
    assert "via 198.18.1.2 " in run.exec("node1", "ip", "route", "show", mate).stdout

    # A clean lab: no node holds a route its import policy rejected (the
    # documented L3fabricPrefixesRejected alert would fire).
    for node in ("node1", "node2", "node3", "node4"):
        received = json.loads(
            run.exec(node, *L3FABRIC, "routes", "--received", "-o", "json").stdout
        )["routes"]
        rejected = [f"{r['prefix']} ({r['reason']})" for r in received if not r["accepted"]]
        assert not rejected, f"{node} rejected {rejected}"

    svg = graph_sessions(run, tmp_path)
    assert svg.count('class="session established"') >= 8
    assert_destroyed_cleanly(run, run.state())
    report(run)


# -- failures and the general runner -------------------------------------------------


def test_etcd_fabric(lab_run: Any, tmp_path: Path) -> None:
    """Three etcd members form one cluster on the underlay; six agents on two
    racks register in it under leases and peer with the route reflectors."""
    need("nsenter", "unshare", "bird", "birdc", "etcd")
    run = lab_run(CLAB / "etcd-fabric.clab.yml", "ef")
    run.ok("deploy", "--workloads", "1")
    rows = {r["node"]: r for r in inspect(run)}
    assert all(r["state"] == "running" for r in rows.values())
    assert [rows[f"etcd{i}"]["runs"] for i in (1, 2, 3)] == ["etcd"] * 3
    assert "198.18.0.241/24" in rows["etcd1"]["addresses"] and "etcd" in rows["etcd1"]["daemons"]
    nodes = [f"node{i}" for i in range(1, 7)]
    wait_agents_ready(run, nodes)
    status = json.loads(run.exec("node4", *L3FABRIC, "status", "-o", "json").stdout)
    assert status["datastore"]["type"] == "etcd" and status["datastore"]["up"] is True

    # Every node is registered under a live lease, seen from either rack.
    listed = run.exec(
        "node6", *L3FABRIC, "nodes", "--config", "/etc/l3fabric/node.yaml", "-o", "json"
    )
    assert listed.returncode == 0, listed.stderr
    registered = json.loads(listed.stdout)
    assert [r["name"] for r in registered] == nodes
    assert all(r["leased"] and r["lease_ttl"] for r in registered)

    verified = wait_verified(run)
    assert "PASS" in verified and "✗" not in verified
    svg = graph_sessions(run, tmp_path)
    assert 'class="node etcd"' in svg
    state = run.state()
    assert any(p["what"] == "etcd" for p in state["processes"])
    assert_destroyed_cleanly(run, state)
    report(run)


def copy_topology(name: str, tmp_path: Path) -> Path:
    target = tmp_path / "topo"
    target.mkdir()
    shutil.copy(CLAB / f"{name}.clab.yml", target)
    shutil.copytree(CLAB / name, target / name)
    return target / f"{name}.clab.yml"


def break_agent_config(topology: Path) -> None:
    config = topology.parent / "two-nodes" / "node2.yaml"
    data = yaml.safe_load(config.read_text())
    data["bgp"]["mesh"] = "sometimes"  # valid YAML, a config the agent refuses
    config.write_text(yaml.safe_dump(data))


def break_bird_config(topology: Path) -> None:
    conf = topology.parent / "route-reflectors" / "rr2" / "bird.conf"
    conf.write_text(conf.read_text() + "\nprotocol bgp broken { neighbor nowhere; }\n")


@pytest.mark.parametrize(
    ("name", "breaker", "failing", "daemon", "tool"),
    [
        ("two-nodes", break_agent_config, "node2", "agent", "bgp.mesh"),
        ("route-reflectors", break_bird_config, "rr2", "bird", "syntax error"),
    ],
)
def test_failed_deploy_names_the_node_and_leaves_nothing(
    lab_run: Any, tmp_path: Path, name: str, breaker: Any, failing: str, daemon: str, tool: str
) -> None:
    need("nsenter", "unshare", "bird")
    topology = copy_topology(name, tmp_path)
    breaker(topology)
    run = lab_run(topology, "bad")
    proc = run.cli("deploy", "--workloads", "1")
    assert proc.returncode == 1
    assert f"node {failing}: {daemon} exited" in proc.stderr, proc.stderr
    assert tool in proc.stderr  # the daemon's own message, from its log
    assert run.leftovers() == NOTHING


def test_plain_frr_lab_like_containerlab_examples(lab_run: Any, tmp_path: Path) -> None:
    """Two FRR routers in the shape of containerlab's own FRR labs: frr.conf
    and daemons bound in, addresses from exec, plus a plain host."""
    need("nsenter", "unshare", "vtysh", "/usr/lib/frr/bgpd")
    base = tmp_path / "frr-lab"
    for i, (mine, other) in enumerate(
        (("198.18.50.1", "198.18.50.2"), ("198.18.50.2", "198.18.50.1")), 1
    ):
        router = base / f"r{i}"
        router.mkdir(parents=True)
        (router / "daemons").write_text("bgpd=yes\nvtysh_enable=yes\n")
        (router / "frr.conf").write_text(
            f"frr defaults datacenter\nhostname r{i}\n!\nrouter bgp {65000 + i}\n"
            f" bgp router-id {mine}\n no bgp ebgp-requires-policy\n"
            f" neighbor {other} remote-as {65000 + 3 - i}\n exit\n!\n"
        )
    topology = {
        "name": "frr",
        "topology": {
            "nodes": {
                f"r{i}": {
                    "kind": "linux",
                    "image": "quay.io/frrouting/frr:8.4.1",
                    "binds": [f"r{i}/frr.conf:/etc/frr/frr.conf", f"r{i}/daemons:/etc/frr/daemons"],
                    "exec": [f"ip addr add 198.18.50.{i}/24 dev eth1"],
                }
                for i in (1, 2)
            }
            | {"host": {"kind": "linux", "image": "alpine:3", "exec": ["ip link set lo up"]}},
            "links": [
                {"endpoints": ["r1:eth1", "r2:eth1"]},
                {"endpoints": ["r1:eth2", "host:eth1"]},
            ],
        },
    }
    path = base / "frr.clab.yml"
    path.write_text(yaml.safe_dump(topology))
    run = lab_run(path, "frr")
    run.ok("deploy")

    def established() -> bool:
        summary = json.loads(run.exec("r1", "vtysh", "-c", "show bgp summary json").stdout)
        return summary["ipv4Unicast"]["peers"]["198.18.50.2"]["state"] == "Established"

    wait_for(established, timeout=60, interval=1, what="r1-r2 Established")
    assert json.loads(run.exec("host", "ip", "-j", "link", "show", "eth1").stdout)
    assert_destroyed_cleanly(run, run.state())


def test_destroy_without_state_file(lab_run: Any) -> None:
    need("nsenter", "unshare")
    run = lab_run(CLAB / "two-nodes.clab.yml", "nost")
    run.ok("deploy")
    state = run.state()
    (LAB_ROOT / run.name / "state.json").unlink()
    pids = [(p["pid"], p["start"]) for p in state["processes"]]
    pids += [(h["pid"], h["start"]) for h in state["holders"].values()]
    run.ok("destroy")
    assert not [pid for pid, start in pids if is_alive(pid, start)]
    assert run.leftovers() == NOTHING


def test_verify_mechanics_on_plain_namespaces(netns: Namespaces) -> None:
    """The probe sees real source addresses, reports a rewritten source as
    NAT and a missing answer as such; tunnel devices are found."""
    need("nsenter")
    a, b = netns.add("va"), netns.add("vb")
    netns.link(
        a, b, ["198.18.60.1/24", "fd00:198:18:60::1/64"], ["198.18.60.2/24", "fd00:198:18:60::2/64"]
    )
    port = 47998
    target = verify.Party("b", "workload", b, ("198.18.60.2", "fd00:198:18:60::2"))
    server = verify.start_server(b, port)
    try:
        honest = verify.Party("a", "node", a, ("198.18.60.1", "fd00:198:18:60::1"))
        probes = verify.send_probes(honest, [target], port, 5)
        assert [(p.seen, p.ok) for p in probes] == [
            ("198.18.60.1", True),
            ("fd00:198:18:60::1", True),
        ]
        # What NAT looks like: the receiver sees another address than the sender's own.
        claimed = verify.Party("a", "workload", a, ("198.18.60.9", "fd00:198:18:60::9"))
        probes = verify.send_probes(claimed, [target], port, 3)
        assert not any(p.ok for p in probes)
        assert all("(NAT?)" in p.problem() for p in probes)
        ghost = verify.Party("g", "workload", b, ("198.18.60.77",))
        (lost,) = verify.send_probes(honest, [ghost], port, 1)
        assert lost.seen is None and lost.problem().startswith("no answer")
    finally:
        verify.stop_server(server)
    assert all(c.ok for c in verify.tunnel_checks([a, b]))
    ns_run(
        a,
        ["ip", "link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "4789", "dev", "eth1"],
    )
    (check,) = verify.tunnel_checks([a])
    assert not check.ok and "vx0 (vxlan)" in check.detail
    assert all(c.ok for c in verify.nat_checks([a, b]))


def test_two_copies_of_one_lab_side_by_side(lab_run: Any) -> None:
    """Same file, two names: own namespaces, datastores and agents; destroying
    one leaves the other working."""
    need("nsenter", "unshare")
    first = lab_run(CLAB / "two-nodes.clab.yml", "cpa")
    second = lab_run(CLAB / "two-nodes.clab.yml", "cpb")
    first.ok("deploy", "--workloads", "1")
    second.ok("deploy", "--workloads", "1")
    for run in (first, second):
        wait_agents_ready(run, ["node1", "node2"])
        wait_verified(run)
        # Each copy's agents see only their own lab's workloads.
        listed = json.loads(run.exec("node1", *L3FABRIC, "workload", "list", "-o", "json").stdout)
        assert [w["netns"] for w in listed] == [f"/run/netns/{run.name}-node1-w0"]
    assert_destroyed_cleanly(first, first.state())
    assert all(r["state"] == "running" for r in inspect(second))
    wait_verified(second, timeout=10)
    assert_destroyed_cleanly(second, second.state())


def set_node_key(topology: Path, node: str, key: str, value: Any) -> None:
    data = yaml.safe_load(topology.read_text())
    data["topology"]["nodes"][node][key] = value
    topology.write_text(yaml.safe_dump(data, sort_keys=False))


def kill_daemon(run: LabRun, node: str, what: str) -> dict[str, Any]:
    record: dict[str, Any] = next(
        p for p in run.state()["processes"] if p["node"] == node and p["what"] == what
    )
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(
        lambda: not is_alive(record["pid"], record["start"]),
        timeout=10,
        interval=0.1,
        what=f"{node} {what} gone",
    )
    return record


def test_verify_with_an_agent_down(lab_run: Any, tmp_path: Path) -> None:
    """An unanswering agent is a failed check for its node; the rest is still
    probed and -o json has the whole result. inspect on a lab never deployed
    says so."""
    need("nsenter", "unshare")
    topology = copy_topology("two-nodes", tmp_path)
    set_node_key(topology, "node2", "restart-policy", "no")
    run = lab_run(topology, "down")
    never = run.cli("inspect")
    assert never.returncode == 1 and "not deployed" in never.stderr, never.stderr
    run.ok("deploy", "--workloads", "1")
    wait_agents_ready(run, ["node1", "node2"])
    kill_daemon(run, "node2", "agent")
    proc = run.cli("verify", "-o", "json")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    agents = {c["where"]: c["ok"] for c in result["checks"] if c["what"] == "agent answers"}
    assert agents == {"node1": True, "node2": False}
    assert {p["target"] for p in result["probes"]} == {"node1-w0"}
    assert "is it running" not in proc.stdout + proc.stderr
    assert "node2" in [r["node"] for r in inspect_rows(run) if r["state"] != "running"]
    run.ok("destroy")
    assert run.leftovers() == NOTHING


def inspect_rows(run: LabRun) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(run.cli("inspect", "-o", "json").stdout)
    return rows


def test_restart_policy_brings_a_killed_agent_back(lab_run: Any, tmp_path: Path) -> None:
    """restart-policy on-failure (the default for l3fabric nodes): a SIGKILLed
    agent is started again by its keeper, and a 10 ms ping per family from
    node2's workload to node1's loses nothing through it (the peers keep the
    routes for the graceful-restart time); inspect counts the restart and
    shows the new daemon running; what it left (its ExaBGP) is gone. lab
    logs shows the daemons' logs; a config replaced on the host (as sed -i
    does) is reported as not seen by the node."""
    need("nsenter", "unshare")
    topology = copy_topology("two-nodes", tmp_path)
    run = lab_run(topology, "keep")
    run.ok("deploy", "--workloads", "1")
    wait_agents_ready(run, ["node1", "node2"])
    workloads = {w["name"]: w for w in run.state()["workloads"]}
    source, target = workloads["node2-w0"], workloads["node1-w0"]
    for address in target["addresses"]:
        wait_for(
            lambda a=address: ns_ok(source["netns"], "ping", "-c", "1", "-W", "1", a),
            timeout=60,
            what=f"node2-w0 reaching {address}",
        )
    before = inspect_rows(run)[0]
    assert before["node"] == "node1" and before["restarts"] == 0
    agent = before["supervision"]["agent"]
    children = Path(f"/proc/{agent['pid']}/task/{agent['pid']}/children").read_text().split()
    assert children  # its ExaBGP
    pings = [
        subprocess.Popen(
            ["ip", "netns", "exec", source["netns"], "ping", "-i", "0.01", "-c", "3000", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for address in target["addresses"]
    ]
    try:
        os.kill(agent["pid"], signal.SIGKILL)

        def restarted() -> bool:
            row = inspect_rows(run)[0]
            return row["state"] == "running" and row["restarts"] == 1

        wait_for(restarted, timeout=30, interval=0.2, what="node1's agent restarted")
        after = inspect_rows(run)[0]["supervision"]["agent"]
        assert after["pid"] != agent["pid"] and after["last_exit"] == "signal SIGKILL"
        assert not [c for c in children if Path(f"/proc/{c}").exists()]  # the old ExaBGP
        wait_agents_ready(run, ["node1"])
        assert all(p.poll() is None for p in pings), "the pings ended before the restart did"
        outputs = [p.communicate(timeout=90)[0] for p in pings]
    finally:
        for p in pings:
            if p.poll() is None:
                p.kill()
                p.wait()
    for address, out in zip(target["addresses"], outputs, strict=True):
        assert " 3000 received" in out, f"pings to {address} lost:\n{out[-400:]}"
    assert "RESTARTS" in run.ok("inspect")
    assert "daemon exited; restarting it" in run.ok("logs", "node1", "--daemon", "agent")
    assert run.ok("logs", "node1", "--daemon", "exabgp").strip()
    assert "==> agent" in run.ok("logs", "node1")
    missing = run.cli("logs", "node1", "--daemon", "bird")
    assert missing.returncode == 1 and "has no bird log" in missing.stderr

    config = topology.parent / "two-nodes" / "node1.yaml"
    replacement = config.with_suffix(".new")
    replacement.write_text(config.read_text())
    os.replace(replacement, config)
    assert "node node1: /etc/l3fabric/node.yaml is bound from" in run.ok("inspect")
    assert_destroyed_cleanly(run, run.state())
