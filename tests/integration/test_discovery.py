"""Service discovery end to end: real agents in a two-node mesh register
their workloads, `l3fabric dns` on node1's underlay address answers, and
workloads ask it with getent and dig through their own resolv.conf."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3fabric import control
from tests.integration.agentlab import (
    L3FABRIC,
    MESH_BGP,
    AgentNode,
    start_mesh,
    stop_orphaned_speaker,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

ZONE = "l3fabric.internal"
DNS_ADDRESS = "198.18.0.1"  # node1's underlay address
NODE_TTL = 4  # seconds: a killed node's endpoints go this long after


@pytest.fixture
def resolv_confs() -> Iterator[list[Path]]:
    """/etc/netns/NAME directories made by the test, removed after it."""
    made: list[Path] = []
    try:
        yield made
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


class Fabric:
    def __init__(
        self, netns: Namespaces, nodes: list[AgentNode], store: Path, confs: list[Path]
    ) -> None:
        self.netns = netns
        self.nodes = nodes
        self.store = store
        self._confs = confs

    def namespace(self, tag: str) -> str:
        """A workload namespace whose resolver is the fabric's DNS server."""
        ns = self.netns.add(tag)
        conf_dir = Path("/etc/netns") / ns
        conf_dir.mkdir(parents=True, exist_ok=True)
        self._confs.append(conf_dir)
        (conf_dir / "resolv.conf").write_text(
            f"nameserver {DNS_ADDRESS}\nsearch default.{ZONE}\noptions timeout:1 attempts:2\n"
        )
        return ns

    def add(
        self, node: AgentNode, name: str, ns: str, *, ips: list[str] | None = None, **kw: Any
    ) -> list[str]:
        params = {"name": name, "netns": f"/run/netns/{ns}", "ips": ips or [], **kw}
        result = control.call("workload.add", params, socket_path=node.socket, timeout=30)
        return [str(a) for a in result["addresses"]]

    def delete(self, node: AgentNode, name: str) -> None:
        control.call("workload.del", {"name": name}, socket_path=node.socket, timeout=30)

    def service(self, *args: str) -> str:
        proc = subprocess.run(
            [*L3FABRIC, "service", *args, "--datastore-path", str(self.store)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def dig(ns: str, name: str, rdtype: str = "A") -> tuple[str, list[str]]:
    """(status, answers) as dig shows them, through the namespace's resolv.conf."""
    out = ns_run(ns, ["dig", "+time=1", "+tries=1", "+noall", "+comments", "+answer", name, rdtype])
    status = next(
        (
            line.split("status: ")[1].split(",")[0]
            for line in out.splitlines()
            if "status: " in line
        ),
        "no answer",
    )
    answers = sorted(
        line.split()[-1] if rdtype != "SRV" else " ".join(line.split()[-2:])
        for line in out.splitlines()
        if line and not line.startswith(";")
    )
    return status, answers


def getent(ns: str, name: str) -> list[str]:
    out = ns_run(ns, ["getent", "ahosts", name], check=False)
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


@pytest.fixture
def fabric(
    netns: Namespaces, procs: Processes, tmp_path: Path, resolv_confs: list[Path]
) -> Iterator[Fabric]:
    store = tmp_path / "store"
    extra = {
        "bgp": MESH_BGP,
        "datastore": {"type": "file", "path": str(store), "node_ttl": NODE_TTL},
    }
    nodes = start_mesh(netns, procs, tmp_path, 2, extra=lambda index: extra)
    procs.start(
        [*L3FABRIC, "dns", "--listen", f"{DNS_ADDRESS}:53", "--datastore-path", str(store)],
        netns=nodes[0].netns,
        log_path=str(tmp_path / "dns.log"),
    )
    wait_for(
        lambda: (
            "status: NXDOMAIN"
            in ns_run(
                nodes[0].netns,
                ["dig", f"@{DNS_ADDRESS}", "+time=1", "+tries=1", f"none.{ZONE}"],
                check=False,
            )
        ),
        timeout=20,
        what="the DNS server answers",
    )
    made = Fabric(netns, nodes, store, resolv_confs)
    try:
        yield made
    finally:
        for node in nodes:
            stop_orphaned_speaker(node)


def test_a_workload_resolves_by_name_from_another_node_then_goes_and_comes_back(
    fabric: Fabric,
) -> None:
    node1, node2 = fabric.nodes
    asker = fabric.namespace("q")
    fabric.add(node2, "asker", asker)
    # The asker reaches the DNS server on node1 once the mesh has its route.
    wait_for(
        lambda: dig(asker, f"nothing.default.{ZONE}")[0] == "NXDOMAIN",
        timeout=30,
        what="the asker on node2 reaches node1's DNS server",
    )
    name = f"web-a.default.{ZONE}"
    target = fabric.namespace("w")
    addresses = fabric.add(node1, "web-a", target)
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    wait_for(lambda: getent(asker, name) == sorted(addresses), timeout=1.0, what=f"getent {name}")
    assert dig(asker, name, "A") == ("NOERROR", v4)
    assert dig(asker, name, "AAAA") == ("NOERROR", v6)
    # The short name through the search list, as applications use it.
    assert getent(asker, "web-a") == sorted(addresses)

    fabric.delete(node1, "web-a")
    wait_for(lambda: dig(asker, name)[0] == "NXDOMAIN", timeout=1.0, what=f"{name} NXDOMAIN")

    # Restarted with another address: the name follows.
    again = fabric.namespace("w")
    new = fabric.add(node1, "web-a", again, ips=["100.64.0.200"])
    assert "100.64.0.200" in new and not set(new) & set(addresses)
    wait_for(
        lambda: dig(asker, name, "A") == ("NOERROR", ["100.64.0.200"]),
        timeout=1.0,
        what=f"{name} has the new address",
    )
    assert dig(asker, "200.0.64.100.in-addr.arpa", "PTR") == ("NOERROR", [name + "."])


def test_a_service_answers_with_every_endpoint_until_a_node_dies(fabric: Fabric) -> None:
    node1, node2 = fabric.nodes
    fabric.service("add", "web", "--selector", "app=web", "--port", "http:80/tcp")
    web = {"labels": {"app": "web"}}
    endpoints = {
        "web-1": fabric.add(node1, "web-1", fabric.namespace("w"), **web),
        "web-2": fabric.add(node1, "web-2", fabric.namespace("w"), **web),
        "web-3": fabric.add(node2, "web-3", fabric.namespace("w"), **web),
    }
    fabric.add(node2, "db-1", fabric.namespace("w"), labels={"app": "db"})
    asker = fabric.namespace("q")
    fabric.add(node1, "asker", asker)
    name = f"web.default.svc.{ZONE}"
    v4 = sorted(a for addrs in endpoints.values() for a in addrs if ":" not in a)
    wait_for(lambda: dig(asker, name, "A") == ("NOERROR", v4), timeout=30, what=f"{name} A")
    srv = dig(asker, f"_http._tcp.{name}", "SRV")
    assert srv == ("NOERROR", sorted(f"80 {n}.default.{ZONE}." for n in endpoints))
    assert len(dig(asker, name, "AAAA")[1]) == 3

    # node2's agent dies: its endpoint goes when the node's lease expires.
    assert node2.proc is not None
    os.killpg(node2.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node2.proc.wait(timeout=10)
    stop_orphaned_speaker(node2)
    survivors = sorted(a for n in ("web-1", "web-2") for a in endpoints[n] if ":" not in a)
    wait_for(
        lambda: dig(asker, name, "A") == ("NOERROR", survivors),
        timeout=NODE_TTL + 10,
        what=f"{name} without node2's endpoint",
    )
    srv = dig(asker, f"_http._tcp.{name}", "SRV")
    assert srv == ("NOERROR", sorted(f"80 {n}.default.{ZONE}." for n in ("web-1", "web-2")))
    # The workload's own name stays: the workload still runs and is routed.
    assert dig(asker, f"web-3.default.{ZONE}", "A")[0] == "NOERROR"
