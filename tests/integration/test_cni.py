"""The installed CNI plugin driven as a runtime drives it (environment and
stdin, from a node namespace) against real agents in a two-node mesh."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentlab import AgentNode, start_mesh
from tests.integration.cnilab import (
    REFERENCE_DIR,
    Installed,
    cni_env,
    container_addresses,
    echo_server,
    exec_plugin,
    install,
    ok,
    seen_sources,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def mesh(netns: Namespaces, procs: Processes, tmp_path: Path) -> list[AgentNode]:
    return start_mesh(netns, procs, tmp_path, 2)


def used(node: AgentNode) -> int:
    return sum(p["used"] for p in node.cli_json("ipam", "show")["pools"])


def assert_nothing_allocated(node: AgentNode, elsewhere: int = 0) -> None:
    """No workload on the node, and only `elsewhere` addresses in use in
    the fabric (the pools are shared)."""
    assert node.cli_json("workload", "list") == []
    assert used(node) == elsewhere
    assert node.cli_json("ipam", "check")["problems"] == []


def add(node: AgentNode, cni: Installed, cid: str, pod: str, **env: str) -> dict[str, Any]:
    environ = {**cni_env("ADD", cid, pod), **env}
    result: dict[str, Any] = ok(exec_plugin(node.netns, cni.plugin, environ, cni.stdin()))
    return result


def test_add_check_del_gc_as_a_runtime(
    mesh: list[AgentNode], netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    n1, n2 = mesh
    cni1, cni2 = install(n1, tmp_path / "cni1"), install(n2, tmp_path / "cni2")
    pod_a, pod_b = f"/run/netns/{netns.add('pa')}", f"/run/netns/{netns.add('pb')}"
    k8s = "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;IgnoreUnknown=1"
    a = add(n1, cni1, "ctr-a", pod_a, CNI_ARGS=k8s)
    b = add(n2, cni2, "ctr-b", pod_b)
    assert [i["name"] for i in a["interfaces"]][1] == "eth0"
    assert a["interfaces"][1]["sandbox"] == pod_a
    listed = n1.cli_json("workload", "list")
    assert [(w["pod"], w["namespace"], w["owner"]) for w in listed] == [("web-0", "shop", "cni")]

    # B reaches A over v4 and v6, and A sees B's own addresses as the source.
    port = 7000
    echo_server(procs, pod_a.rsplit("/", 1)[1], port)
    a_addresses, b_addresses = container_addresses(a), container_addresses(b)
    by_family = {":" in x: x for x in b_addresses}
    wait_for(
        lambda: (
            seen_sources(pod_b.rsplit("/", 1)[1], port, a_addresses)
            == {x: by_family[":" in x] for x in a_addresses}
        ),
        timeout=30,
        what="pod B reaches pod A with its own addresses",
    )

    # CHECK with the ADD result as prevResult: healthy, then the host route goes.
    check_env = cni_env("CHECK", "ctr-a", pod_a)
    check_in = cni1.stdin(prev_result=a)
    assert exec_plugin(n1.netns, cni1.plugin, check_env, check_in) == (0, None)
    v4 = next(x for x in a_addresses if ":" not in x)
    host = a["interfaces"][0]["name"]

    def route_deleted_and_check_fails() -> dict[str, Any] | None:
        # The agent's resync puts the route back within seconds: delete and check at once.
        ns_run(n1.netns, ["ip", "route", "del", f"{v4}/32", "dev", host], check=False)
        code, out = exec_plugin(n1.netns, cni1.plugin, check_env, check_in)
        return out if code != 0 else None

    failed = wait_for(route_deleted_and_check_fails, timeout=30, what="CHECK fails")
    assert failed["code"] == 104 and f"host route {v4}/32 via {host} missing" in failed["details"]
    wait_for(
        lambda: exec_plugin(n1.netns, cni1.plugin, check_env, check_in) == (0, None),
        timeout=30,
        what="the agent repairs the route",
    )

    # DEL twice: both succeed, the second with the netns gone as well.
    del_env = cni_env("DEL", "ctr-a", pod_a)
    assert exec_plugin(n1.netns, cni1.plugin, del_env, cni1.stdin()) == (0, None)
    del_env["CNI_NETNS"] = "/run/netns/gone-already"
    assert exec_plugin(n1.netns, cni1.plugin, del_env, cni1.stdin()) == (0, None)
    assert_nothing_allocated(n1, elsewhere=2)  # pod B's

    # GC on node 2 with a list that leaves out exactly one attachment.
    pods = [f"/run/netns/{netns.add('pg')}" for _ in range(2)]
    add(n2, cni2, "ctr-c", pods[0])
    add(n2, cni2, "ctr-d", pods[1])
    valid = [{"containerID": c, "ifname": "eth0"} for c in ("ctr-b", "ctr-d")]
    gc_in = cni2.stdin(version="1.1.0", extra={"cni.dev/valid-attachments": valid})
    assert exec_plugin(n2.netns, cni2.plugin, cni_env("GC", ifname=""), gc_in) == (0, None)
    left = {w["container_id"] for w in n2.cli_json("workload", "list")}
    assert left == {"ctr-b", "ctr-d"}
    assert used(n2) == 4 and n2.cli_json("ipam", "check")["problems"] == []
    status_in = cni2.stdin(version="1.1.0")
    assert exec_plugin(n2.netns, cni2.plugin, cni_env("STATUS", ifname=""), status_in) == (0, None)


def test_bad_input_and_an_unreachable_agent_leave_nothing(
    mesh: list[AgentNode], netns: Namespaces, tmp_path: Path
) -> None:
    node = mesh[0]
    cni = install(node, tmp_path / "cni")
    pod = f"/run/netns/{netns.add('p')}"
    good = cni.stdin()
    no_command = {k: v for k, v in cni_env("ADD", "c1", pod).items() if k != "CNI_COMMAND"}
    bad_pool = cni.stdin(extra={"pools": ["10.9.0.0/16"]})
    cases: list[tuple[str, dict[str, str], bytes, int]] = [
        ("not JSON", cni_env("ADD", "c1", pod), b"{nope", 6),
        ("no cniVersion", cni_env("ADD", "c1", pod), b'{"name": "n", "type": "l3fabric"}', 7),
        ("no name", cni_env("ADD", "c1", pod), b'{"cniVersion": "1.0.0", "type": "l3fabric"}', 7),
        ("no type", cni_env("ADD", "c1", pod), b'{"cniVersion": "1.0.0", "name": "n"}', 7),
        (
            "unsupported version",
            cni_env("ADD", "c1", pod),
            b'{"cniVersion": "0.3.1", "name": "n", "type": "l3fabric"}',
            1,
        ),
        ("unknown pool", cni_env("ADD", "c1", pod), bad_pool, 108),
        ("no CNI_COMMAND", no_command, good, 4),
        ("relative CNI_NETNS", cni_env("ADD", "c1", "run/netns/x"), good, 4),
        ("no CNI_NETNS", cni_env("ADD", "c1"), good, 4),
        ("long CNI_IFNAME", cni_env("ADD", "c1", pod, ifname="a" * 16), good, 4),
        ("netns missing", cni_env("ADD", "c1", "/run/netns/no-such-l3f"), good, 3),
        (
            "agent unreachable",
            cni_env("ADD", "c1", pod),
            cni.stdin(extra={"socket": str(tmp_path / "no-agent.sock")}),
            11,
        ),
    ]  # fmt: skip
    for what, env, data, expected in cases:
        code, out = exec_plugin(node.netns, cni.plugin, env, data)
        assert code == 1 and out["code"] == expected, (what, out)
        assert out["msg"] and "Traceback" not in out["details"], (what, out)
    assert "10.9.0.0/16" in exec_plugin(node.netns, cni.plugin, *cases[5][1:3])[1]["details"]
    assert_nothing_allocated(node)


def test_20_concurrent_adds_then_20_concurrent_dels(
    mesh: list[AgentNode], netns: Namespaces, tmp_path: Path
) -> None:
    node = mesh[0]
    cni = install(node, tmp_path / "cni")
    pods = [f"/run/netns/{netns.add('c')}" for _ in range(20)]

    def run(command: str, i: int) -> tuple[int, Any]:
        return exec_plugin(
            node.netns, cni.plugin, cni_env(command, f"ctr{i}", pods[i]), cni.stdin()
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: run("ADD", i), range(20)))
    assert [code for code, _ in results] == [0] * 20, [out for code, out in results if code]
    addresses = [a for _, out in results for a in container_addresses(out)]
    assert len(addresses) == 40 and len(set(addresses)) == 40
    assert used(node) == 40
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda i: run("DEL", i), range(20)))
    assert results == [(0, None)] * 20
    assert_nothing_allocated(node)
    links = ns_run(node.netns, ["ip", "-o", "link", "show"])
    assert " l3f" not in links


@pytest.mark.skipif(not (REFERENCE_DIR / "portmap").exists(), reason="containernetworking-plugins")
def test_chained_tuning_portmap_bandwidth(
    mesh: list[AgentNode], netns: Namespaces, tmp_path: Path
) -> None:
    """ADD, CHECK and DEL through a conflist, each plugin given the previous
    one's result as prevResult, DEL in reverse (CNI spec, section 5)."""
    node = mesh[0]
    # Debian's reference plugins stop at 1.0.0.
    chain = ["--chain", "tuning,portmap,bandwidth", "--cni-version", "1.0.0"]
    cni = install(node, tmp_path / "cni", *chain)
    conflist = cni.conflist.read_text()
    assert [p["type"] for p in json.loads(conflist)["plugins"]] == [
        "l3fabric", "tuning", "portmap", "bandwidth",
    ]  # fmt: skip
    pod = f"/run/netns/{netns.add('ch')}"
    plugins = [cni.plugin] + [REFERENCE_DIR / t for t in ("tuning", "portmap", "bandwidth")]
    runtime_config = {
        "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {
            "ingressRate": 1000000,
            "ingressBurst": 100000,
            "egressRate": 1000000,
            "egressBurst": 100000,
        },
    }
    env = cni_env("ADD", "chain1", pod)
    prev: dict[str, Any] | None = None
    for index, plugin in enumerate(plugins):
        data = cni.stdin(index, prev_result=prev, runtime_config=runtime_config)
        prev = ok(exec_plugin(node.netns, plugin, env, data))
    assert prev is not None
    assert prev["interfaces"][1]["name"] == "eth0" and len(prev["ips"]) == 2
    nat = subprocess.run(
        ["ip", "netns", "exec", node.netns, "iptables-save", "-t", "nat"],
        capture_output=True,
        text=True,
    ).stdout
    assert "18080" in nat  # portmap's DNAT
    assert "tbf" in ns_run(node.netns, ["tc", "qdisc", "show"])  # bandwidth's shaping
    env["CNI_COMMAND"] = "CHECK"
    for index, plugin in enumerate(plugins):
        data = cni.stdin(index, prev_result=prev, runtime_config=runtime_config)
        result = exec_plugin(node.netns, plugin, env, data)
        if plugin.name == "portmap" and result[0] != 0:
            # portmap 1.1.1's CHECK looks for IPv4 DNAT rules in the IPv6
            # table (containernetworking/plugins#819, fixed in 1.2.0).
            assert "could not check ipv6 dnat" in result[1]["msg"], result
            continue
        assert result == (0, None), (plugin, result)
    env["CNI_COMMAND"] = "DEL"
    for index, plugin in reversed(list(enumerate(plugins))):
        data = cni.stdin(index, prev_result=prev, runtime_config=runtime_config)
        assert exec_plugin(node.netns, plugin, env, data)[0] == 0, plugin
    assert_nothing_allocated(node)
