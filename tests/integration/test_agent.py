"""The node agent in real namespaces: workloads wired through the CLI,
reconcile after a crash, foreign routes untouched."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.agentlab import L3FABRIC, AgentNode, make_node, start_agent
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration


def _ok(ns: str, cmd: list[str]) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True).returncode == 0


def routes(ns: str, family: str = "-4") -> str:
    return ns_run(ns, ["ip", family, "route", "show", "table", "main"])


@pytest.fixture
def node(netns: Namespaces, procs: Processes, tmp_path: Path) -> AgentNode:
    node = make_node(netns, tmp_path, "node", 1, store=tmp_path / "store")
    start_agent(procs, node)
    return node


def test_two_workloads_ping_each_other_and_the_node(node: AgentNode, netns: Namespaces) -> None:
    w1, w2 = netns.add("w"), netns.add("w")
    a1 = node.cli_json("workload", "add", "w1", "--netns", w1)["addresses"]
    a2 = node.cli_json("workload", "add", "w2", "--netns", w2)["addresses"]
    v4 = [a for a in a1 + a2 if ":" not in a]
    v6 = [a for a in a1 + a2 if ":" in a]
    assert len(v4) == 2 and len(v6) == 2, (a1, a2)

    for src, dst in ((w1, a2), (w2, a1)):
        for address in dst:
            wait_for(
                lambda s=src, a=address: _ok(s, ["ping", "-c", "1", "-W", "1", a]),
                timeout=10,
                what=f"ping {address}",
            )
    for ns in (w1, w2):
        assert _ok(ns, ["ping", "-c", "1", "-W", "1", "198.18.0.1"])
        assert _ok(ns, ["ping", "-c", "1", "-W", "1", "fd00:198:18::1"])

    listed = {w["name"]: w for w in node.cli_json("workload", "list")}
    assert set(listed) == {"w1", "w2"}
    assert listed["w1"]["node"] == "node" and listed["w1"]["host_iface"].startswith("l3f")

    iface = listed["w1"]["host_iface"]
    node.cli("workload", "del", "w1")
    assert iface not in ns_run(node.netns, ["ip", "link", "show"])
    for address in a1:
        table = routes(node.netns, "-6" if ":" in address else "-4").split()
        assert address not in table and f"{address}/128" not in table
    assert ns_run(w1, ["ip", "-o", "addr", "show", "scope", "global"]).strip() == ""
    # w2 is unaffected
    assert _ok(w2, ["ping", "-c", "1", "-W", "1", "198.18.0.1"])


def test_bad_requests_are_clear_errors_and_change_nothing(
    node: AgentNode, netns: Namespaces
) -> None:
    missing = node.cli("workload", "add", "x1", "--netns", "no-such-netns-l3f", check=False)
    assert missing.returncode != 0 and "no-such-netns-l3f" in missing.stderr
    assert "Traceback" not in missing.stderr

    w = netns.add("w")
    outside = node.cli("workload", "add", "x2", "--netns", w, "--ip", "10.99.0.1", check=False)
    assert outside.returncode != 0 and "10.99.0.1" in outside.stderr

    taken = node.cli_json("workload", "add", "x3", "--netns", w, "--ip", "100.64.7.7")
    assert taken["addresses"] == ["100.64.7.7"]
    w2 = netns.add("w")
    dup = node.cli("workload", "add", "x4", "--netns", w2, "--ip", "100.64.7.7", check=False)
    assert dup.returncode != 0 and "100.64.7.7" in dup.stderr

    assert [x["name"] for x in node.cli_json("workload", "list")] == ["x3"]
    assert "100.64.7.7" in routes(node.netns)


def test_restart_after_sigkill_reconciles_only_owned_routes(
    node: AgentNode, netns: Namespaces, procs: Processes
) -> None:
    w = netns.add("w")
    addresses = node.cli_json("workload", "add", "w1", "--netns", w)["addresses"]
    v4 = next(a for a in addresses if ":" not in a)
    assert node.proc is not None
    Processes.stop(node.proc, signal.SIGKILL)

    ns_run(node.netns, ["ip", "route", "add", "100.64.99.99/32", "dev", "lo", "proto", "76"])
    ns_run(node.netns, ["ip", "route", "del", f"{v4}/32"])
    ns_run(node.netns, ["ip", "route", "add", "100.64.200.0/24", "dev", "lo", "proto", "static"])

    start_agent(procs, node)
    wait_for(lambda: "100.64.99.99" not in routes(node.netns), timeout=10, what="stale route gone")
    wait_for(lambda: f"{v4} dev " in routes(node.netns), timeout=10, what="owned route back")
    table = routes(node.netns)
    assert "100.64.200.0/24 dev lo proto static" in table
    assert _ok(w, ["ping", "-c", "1", "-W", "1", "198.18.0.1"])


def test_sigterm_exits_cleanly_and_keeps_routes(node: AgentNode, netns: Namespaces) -> None:
    w = netns.add("w")
    addresses = node.cli_json("workload", "add", "w1", "--netns", w)["addresses"]
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=10) == 0
    v4 = next(a for a in addresses if ":" not in a)
    assert f"{v4} dev " in routes(node.netns)
    assert not node.socket.exists()


def test_sighup_with_bad_config_keeps_running(node: AgentNode) -> None:
    good = node.config_path.read_text()
    node.config_path.write_text(good + "\nbogus_key: 1\n")
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: "config reload rejected" in node.log_path.read_text(),
        timeout=10,
        what="reload rejected",
    )
    assert node.cli("status").returncode == 0
    node.config_path.write_text(good)


def test_a_second_agent_for_the_node_refuses_and_leaves_the_first_alone(
    node: AgentNode, procs: Processes
) -> None:
    second = procs.start(
        [*L3FABRIC, "agent", "--config", str(node.config_path)],
        netns=node.netns,
        log_path=str(node.log_path) + ".second",
    )
    assert second.wait(timeout=20) != 0
    assert "another agent is serving" in Path(str(node.log_path) + ".second").read_text()
    assert node.socket.exists()
    assert node.cli("status").returncode == 0


def test_a_new_namespace_at_a_workloads_path_is_not_wired(
    node: AgentNode, netns: Namespaces
) -> None:
    """A namespace that went away and a new one made under the same name (or
    a reused /proc/PID path) is not the workload's: reconcile reports the
    workload as an orphan instead of wiring a stranger."""
    name = netns.add("w")
    node.cli_json("workload", "add", "w1", "--netns", name)
    subprocess.run(["ip", "netns", "del", name], check=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    result = node.cli_json("reconcile")
    assert result["orphans"] == ["w1"]
    assert "eth0" not in ns_run(name, ["ip", "-o", "link", "show"])


def test_reconcile_repairs_inside_the_workload_namespace(
    node: AgentNode, netns: Namespaces
) -> None:
    """A workload left without its default route and address (an agent killed
    mid-add, an operator) is found and rewired by the next pass."""
    w = netns.add("w")
    v4, _v6 = node.cli_json("workload", "add", "w", "--netns", w)["addresses"]
    ns_run(w, ["ip", "route", "del", "default"])
    ns_run(w, ["ip", "addr", "del", f"{v4}/32", "dev", "eth0"])
    assert not _ok(w, ["ping", "-c", "1", "-W", "1", "198.18.0.1"])
    report = node.cli_json("reconcile")
    assert report["repaired"] == {"workload_side": 1}
    assert v4 in ns_run(w, ["ip", "-4", "addr", "show", "dev", "eth0"])
    assert "default via 169.254.1.1" in ns_run(w, ["ip", "-4", "route", "show"])
    assert _ok(w, ["ping", "-c", "1", "-W", "1", "198.18.0.1"])
    assert node.cli_json("reconcile")["repaired"] == {}


def test_a_namespace_that_is_not_a_new_workloads_is_refused(
    node: AgentNode, netns: Namespaces
) -> None:
    """Anyone who can reach the socket names a namespace by path: not the
    host's, not a node's, not one that already holds a workload."""
    w = netns.add("w")
    node.cli_json("workload", "add", "first", "--netns", w)
    other_node, peer = netns.add("node2"), netns.add("peer")
    netns.link(other_node, peer, ["198.18.0.2/24"], ["198.18.0.3/24"], names=("eth1", "eth1"))
    for name, target, why in (
        ("again", f"/run/netns/{w}", "already holds workload first"),
        ("mine", f"/run/netns/{node.netns}", "the node's own network namespace"),
        ("other", f"/run/netns/{other_node}", "addressed interfaces (eth1)"),
        ("host", "/proc/1/ns/net", "/proc/1/ns/net"),
    ):
        refused = node.cli("workload", "add", name, "--netns", target, check=False)
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    assert [w["name"] for w in node.cli_json("workload", "list")] == ["first"]
    assert node.cli_json("ipam", "check")["problems"] == []
