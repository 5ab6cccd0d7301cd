"""Agents in node namespaces sharing one real etcd over the underlay: the mesh
follows the node registry and its leases, forwarding survives etcd going
away, adds come back with it, and one lost member of three changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.etcdlab import ETCD, require_etcd
from tests.integration.agentlab import (
    MESH_BGP,
    AgentNode,
    make_node,
    start_agent,
    stop_orphaned_speaker,
    underlay,
)
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

NODE_TTL = 4  # seconds: a dead node leaves the mesh this long after its agent
CLIENT_PORT, PEER_PORT = 2379, 2380  # each member has a namespace of its own


@dataclass
class Member:
    name: str
    netns: str
    address: str
    data_dir: Path
    log_path: Path
    initial_cluster: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{CLIENT_PORT}"

    def start(self, procs: Processes) -> None:
        self.proc = procs.start(
            [
                ETCD,
                f"--name={self.name}",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls=http://{self.address}:{PEER_PORT}",
                f"--initial-advertise-peer-urls=http://{self.address}:{PEER_PORT}",
                f"--initial-cluster={self.initial_cluster}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=l3f-fabric-test",
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--log-level=warn",
            ],
            netns=self.netns,
            log_path=str(self.log_path),
        )

    def healthy(self) -> bool:
        # Asked from inside its namespace: the test's own has no route there.
        probe = (
            "import sys, urllib.request; "
            "print(urllib.request.urlopen(sys.argv[1] + '/health', timeout=1).read().decode())"
        )
        answer = subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", probe, self.url],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return '"health":"true"' in answer.stdout.replace(" ", "")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            Processes.stop(self.proc, sig)


@dataclass
class Fabric:
    netns: Namespaces
    procs: Processes
    tmp: Path
    node_namespaces: list[str]
    members: list[Member]

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def node(self, index: int) -> AgentNode:
        extra: dict[str, Any] = {
            "bgp": MESH_BGP,
            "datastore": {"type": "etcd", "endpoints": self.endpoints, "node_ttl": NODE_TTL},
        }
        return make_node(
            self.netns,
            self.tmp,
            f"node{index}",
            index,
            store=self.tmp / "unused",
            ns=self.node_namespaces[index - 1],
            extra=extra,
        )


def start_fabric(
    netns: Namespaces, procs: Processes, tmp: Path, *, nodes: int, members: int
) -> Fabric:
    require_etcd()
    namespaces = underlay(netns, nodes + members)
    made = [
        Member(
            f"m{i}",
            namespaces[nodes + i],
            f"198.18.0.{nodes + i + 1}",
            tmp / f"etcd-m{i}",
            tmp / f"etcd-m{i}.log",
        )
        for i in range(members)
    ]
    initial = ",".join(f"{m.name}=http://{m.address}:{PEER_PORT}" for m in made)
    for member in made:
        member.initial_cluster = initial
        member.start(procs)
    for member in made:
        wait_for(member.healthy, timeout=30, interval=0.2, what=f"etcd {member.name} healthy")
    return Fabric(netns, procs, tmp, namespaces[:nodes], made)


def established(node: AgentNode, count: int) -> bool:
    states = node.peer_states()
    return len(states) == count and set(states.values()) == {"Established"}


def pings(ns: str, address: str) -> bool:
    return (
        subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", address],
            capture_output=True,
        ).returncode
        == 0
    )


def learned(ns: str, address: str) -> bool:
    return f"{address} via" in ns_run(ns, ["ip", "-4", "route", "show", "proto", "76"])


def test_the_mesh_follows_the_registry_and_its_leases(
    netns: Namespaces, procs: Processes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fabric = start_fabric(netns, procs, tmp_path, nodes=4, members=1)
    nodes = [fabric.node(i) for i in (1, 2, 3)]
    for node in nodes:
        start_agent(fabric.procs, node)
    for node in nodes:
        wait_for(lambda n=node: established(n, 4), timeout=40, what=f"{node.name} mesh of 3")

    # A fourth node joins: every node peers with it, without a restart.
    fourth = fabric.node(4)
    start_agent(fabric.procs, fourth)
    for node in [*nodes, fourth]:
        wait_for(lambda n=node: established(n, 6), timeout=40, what=f"{node.name} mesh of 4")
    w4 = netns.add("w4")
    (v4, _v6) = fourth.cli_json("workload", "add", "w4", "--netns", w4)["addresses"]
    for node in nodes:
        wait_for(lambda n=node: learned(n.netns, v4), timeout=15, what=f"{v4} on {node.name}")

    # Its agent dies (its ExaBGP lives on, still announcing): the lease
    # expires, every node drops the peer and the route it learned from it.
    assert fourth.proc is not None
    request.addfinalizer(lambda: stop_orphaned_speaker(fourth))
    os.kill(fourth.proc.pid, signal.SIGKILL)
    for node in nodes:
        wait_for(
            lambda n=node: "198.18.0.4" not in n.peer_states(),
            timeout=NODE_TTL + 5,
            what=f"node4 gone from {node.name}'s peers",
        )
        wait_for(lambda n=node: not learned(n.netns, v4), timeout=5, what=f"{v4} gone")
    assert not any("node4" in p["name"] for p in nodes[0].status()["peers"])


def test_forwarding_survives_etcd_and_adds_return_with_it(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    fabric = start_fabric(netns, procs, tmp_path, nodes=2, members=1)
    a, b = fabric.node(1), fabric.node(2)
    for node in (a, b):
        start_agent(procs, node)
    for node in (a, b):
        wait_for(lambda n=node: established(n, 2), timeout=40, what=f"{node.name} mesh")
    wa, wb = netns.add("wa"), netns.add("wb")
    (va, _) = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"]
    (vb, _) = b.cli_json("workload", "add", "wb", "--netns", wb)["addresses"]
    wait_for(lambda: pings(wa, vb), timeout=15, what="wa -> wb")

    (etcd,) = fabric.members
    etcd.stop()
    wait_for(lambda: a.status()["datastore"]["up"] is False, timeout=10, what="a sees etcd down")
    assert a.status()["state"] == "starting" and "datastore" in a.status()["reason"]
    # The kernel keeps forwarding: the workloads still reach each other.
    for _ in range(5):
        assert pings(wa, vb) and pings(wb, va)
    # An add is refused at once with the documented error, never hangs.
    w2 = netns.add("w2")
    refused = a.cli("workload", "add", "w2", "--netns", w2, check=False)
    assert refused.returncode != 0
    assert "datastore unavailable, try again" in refused.stderr

    etcd.start(procs)
    wait_for(etcd.healthy, timeout=30, interval=0.2, what="etcd back")
    wait_for(lambda: a.status()["datastore"]["up"], timeout=15, what="a sees etcd back")
    added = a.cli_json("workload", "add", "w2", "--netns", w2)
    wait_for(lambda: pings(wb, added["addresses"][0]), timeout=15, what="wb -> w2")
    assert a.cli_json("ipam", "check")["problems"] == []


def test_losing_one_of_three_members_changes_nothing(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    fabric = start_fabric(netns, procs, tmp_path, nodes=2, members=3)
    a, b = fabric.node(1), fabric.node(2)
    for node in (a, b):
        start_agent(procs, node)
    for node in (a, b):
        wait_for(lambda n=node: established(n, 2), timeout=40, what=f"{node.name} mesh")
    # The first endpoint every client tries goes away.
    fabric.members[0].stop(signal.SIGKILL)
    wa, wb = netns.add("wa"), netns.add("wb")
    (va, _) = a.cli_json("workload", "add", "wa", "--netns", wa)["addresses"]
    (vb, _) = b.cli_json("workload", "add", "wb", "--netns", wb)["addresses"]
    wait_for(lambda: pings(wa, vb) and pings(wb, va), timeout=15, what="wa <-> wb")
    assert a.status()["datastore"]["up"] and b.status()["datastore"]["up"]
    assert {n["name"] for n in a.cli_json("workload", "list")} == {"wa"}
