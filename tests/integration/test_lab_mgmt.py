"""The lab's management network from the topology's `mgmt:` section, the
agents' metrics bound to it (no workload reaches them, the management side
does), and BIRD and FRR nodes configured by `startup-config`.

The lab is tests/data/lab/mgmt-lab.clab.yml, deployed under a unique name and
destroyed whatever happens (the lab_run fixture)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_lab import (
    assert_destroyed_cleanly,
    inspect,
    need,
    wait_agents_ready,
    wait_verified,
)
from tests.integration.test_lab import lab_run as lab_run  # the fixture
from tests.nettools import wait_for

pytestmark = pytest.mark.integration
TOPOLOGY = Path(__file__).resolve().parents[1] / "data" / "lab" / "mgmt-lab.clab.yml"
METRICS_PORT = 9641
# Run in a namespace: "open", or why the connection failed.
_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()\n"
    "    print('open')\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__)\n"
)
_GET = (
    "import sys, urllib.request\n"
    "answer = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
    "print(answer.status)\n"
    "print(answer.read().decode())\n"
)


def in_netns(netns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30
    )


def connect(netns: str, address: str, port: int) -> str:
    return in_netns(netns, sys.executable, "-c", _CONNECT, address, str(port)).stdout.strip()


def test_mgmt_section_metrics_on_the_management_side_and_startup_configs(lab_run: Any) -> None:
    need("nsenter", "unshare", "nft", "bird", "birdc", "vtysh", "/usr/lib/frr/bgpd")
    run = lab_run(TOPOLOGY, "mg")
    out = run.ok("deploy", "--workloads", "1")
    assert "management network l3fabric-test-mgmt: 198.19.200.0/24 and fd00:198:18:c8::/64" in out

    rows = {r["node"]: r for r in inspect(run)}
    assert {n: r["state"] for n, r in rows.items()} == dict.fromkeys(
        ("node1", "node2", "r1", "r2"), "running"
    )
    # The node's own addresses, then the lowest free ones in file order.
    assert {n: (r["mgmt_ipv4"], r["mgmt_ipv6"]) for n, r in rows.items()} == {
        "node1": ("198.19.200.11/24", "fd00:198:18:c8::11/64"),
        "node2": ("198.19.200.2/24", "fd00:198:18:c8::2/64"),
        "r1": ("198.19.200.21/24", "fd00:198:18:c8::3/64"),
        "r2": ("198.19.200.3/24", "fd00:198:18:c8::4/64"),
    }
    assert "198.19.200.3/24" in rows["r2"]["addresses"]
    mgmt_ns = run.state()["mgmt"]["namespace"]
    assert mgmt_ns == f"{run.name}--mgmt"
    assert run.state()["mgmt"]["network"] == "l3fabric-test-mgmt"

    # Each agent listens on its management address, not on every address.
    for node, address in (("node1", "198.19.200.11"), ("node2", "198.19.200.2")):
        listening = run.exec(node, "ss", "-Hltn").stdout
        assert f"{address}:{METRICS_PORT}" in listening, listening
        assert f"0.0.0.0:{METRICS_PORT}" not in listening
        assert f"*:{METRICS_PORT}" not in listening

    wait_agents_ready(run, ["node1", "node2"])
    # The management side reaches the metrics and health endpoints...
    for address in ("198.19.200.11", "198.19.200.2"):
        for path, expect in (("/metrics", "l3fabric_"), ("/livez", "")):
            url = f"http://{address}:{METRICS_PORT}{path}"
            got = in_netns(mgmt_ns, sys.executable, "-c", _GET, url)
            assert got.returncode == 0 and got.stdout.startswith("200"), got.stderr
            assert expect in got.stdout
    # ...and no workload does: not its own node's, not the other node's, by
    # neither the management nor the underlay address.
    state = run.state()
    workloads = {w["node"]: w["netns"] for w in state["workloads"]}
    for netns in workloads.values():
        for address in ("198.19.200.11", "198.19.200.2", "198.18.60.1", "198.18.60.2"):
            result = connect(netns, address, METRICS_PORT)
            assert result not in ("open", ""), f"{netns} reached {address}:{METRICS_PORT}"

    # The fabric still passes verify with the management network in every node:
    # probes leave by the underlay, with the sender's own address.
    verified = wait_verified(run)
    assert "PASS" in verified and "✗" not in verified

    # BIRD and FRR run the configs given as their startup-config.
    status = run.exec("r1", "birdc", "show", "status").stdout
    assert "Router ID is 198.18.61.1" in status
    running = run.exec("r2", "vtysh", "-c", "show running-config").stdout
    assert "neighbor 198.18.61.1 timers connect 2" in running

    def established() -> bool:
        proc = run.exec("r2", "vtysh", "-c", "show bgp summary json")
        try:
            peers = json.loads(proc.stdout)["ipv4Unicast"]["peers"]
        except (ValueError, KeyError):
            return False
        return bool(peers.get("198.18.61.1", {}).get("state") == "Established")

    wait_for(established, timeout=90, interval=1, what="r1-r2 Established")
    assert_destroyed_cleanly(run, run.state())


def test_a_wildcard_metrics_listener_is_refused_before_anything_is_made(
    lab_run: Any, tmp_path: Path
) -> None:
    need("nsenter", "unshare")
    base = tmp_path / "lab"
    (base / "mgmt-lab").mkdir(parents=True)
    for name in ("node1.yaml", "node2.yaml"):
        text = (TOPOLOGY.parent / "mgmt-lab" / name).read_text()
        (base / "mgmt-lab" / name).write_text(text.replace("198.19.200.11:9641", "0.0.0.0:9641"))
    topology = base / "wild.clab.yml"
    text = TOPOLOGY.read_text().split("    r1:\n")[0]  # the two agents only
    topology.write_text(text + '  links:\n    - endpoints: ["node1:eth1", "node2:eth1"]\n')
    run = lab_run(topology, "mw")
    proc = run.cli("deploy")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "node node1: metrics.listen 0.0.0.0:9641 in" in proc.stderr
    assert "set it to 198.19.200.11:9641" in proc.stderr
    assert run.leftovers() == {"namespaces": [], "mounts": [], "files": [], "processes": []}
