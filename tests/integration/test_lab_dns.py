"""The lab's DNS server: `lab deploy` runs one on the first l3fabric node and
gives every workload a resolv.conf pointing at it; `lab verify` checks
reachability by name; `lab destroy` removes the resolv.conf files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nettools import ns_run, unique_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "containerlab" / "two-nodes.clab.yml"
LAB = [sys.executable, "-m", "l3fabric.cli", "lab"]


def lab(action: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LAB, action, str(TOPOLOGY), "--name", name, *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture
def deployed(netns: object) -> Iterator[str]:
    """A two-nodes lab with one workload per node (netns: root and ip needed)."""
    name = unique_name("dl")
    try:
        proc = lab("deploy", name, "--workloads", "1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield name
    finally:
        lab("destroy", name)


def test_every_workload_resolves_the_others_through_the_labs_dns(deployed: str) -> None:
    name = deployed
    conf = Path(f"/etc/netns/{name}-node1-w0/resolv.conf")
    assert "nameserver 198.18.0.1" in conf.read_text()
    state = json.loads(Path(f"/run/l3fabric-lab/{name}/state.json").read_text())
    assert state["dns"]["node"] == "node1" and state["dns"]["address"] == "198.18.0.1"
    assert any(p["what"] == "dns" for p in state["processes"])
    node2_w0 = next(w for w in state["workloads"] if w["name"] == "node2-w0")

    out = ns_run(f"{name}-node1-w0", ["getent", "hosts", "node2-w0.default.l3fabric.internal"])
    assert out.split()[0] in node2_w0["addresses"]

    proc = lab("verify", name, "--wait", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✓ reachable by name in node1-w0: 1 names resolved and reached" in proc.stdout
    assert "✓ reachable by name in node2-w0: 1 names resolved and reached" in proc.stdout

    proc = lab("destroy", name)
    assert proc.returncode == 0, proc.stderr
    assert not Path(f"/etc/netns/{name}-node1-w0").exists()
    assert not Path(f"/etc/netns/{name}-node2-w0").exists()
