"""Starting real agents in node namespaces for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.nettools import Namespaces, Processes, ns_run, wait_for

L3FABRIC = [sys.executable, "-m", "l3fabric.cli"]


@dataclass
class AgentNode:
    name: str
    netns: str
    config_path: Path
    socket: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*L3FABRIC, *args, "--socket", str(self.socket)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"l3fabric {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def status(self) -> Any:
        """`status -o json`, whatever its exit code (1 = a peer is not up)."""
        return json.loads(self.cli("status", "-o", "json", check=False).stdout)

    def peer_states(self) -> dict[str, str]:
        return {p["peer"]: p["state"] for p in self.status()["peers"]}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def node_config(
    name: str,
    ipv4: str,
    ipv6: str,
    tmp: Path,
    *,
    store: Path,
    asn: int = 64512,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node": {"name": name, "asn": asn, "addresses": {"ipv4": ipv4, "ipv6": ipv6}},
        "pools": [
            {"cidr": "100.64.0.0/16", "block_size": 26},
            {"cidr": "fd00:64::/48", "block_size": 122},
        ],
        "state_dir": str(tmp / name),
        "datastore": {"type": "file", "path": str(store)},
        "reconcile": {"interval": 2},
        "log": {"level": "debug", "format": "json"},
    }
    for key, value in (extra or {}).items():
        config[key] = value
    return config


def make_node(
    netns: Namespaces,
    tmp: Path,
    name: str,
    index: int,
    *,
    store: Path,
    ns: str | None = None,
    **kw: Any,
) -> AgentNode:
    """A node namespace and its config. Without `ns`, a fresh namespace with
    the node's addresses on lo; with it, the caller has set up the underlay
    and the addresses 198.18.0.INDEX / fd00:198:18::INDEX."""
    ipv4, ipv6 = f"198.18.0.{index}", f"fd00:198:18::{index}"
    if ns is None:
        ns = netns.add(name)
        ns_run(ns, ["ip", "addr", "add", f"{ipv4}/32", "dev", "lo"])
        ns_run(ns, ["ip", "addr", "add", f"{ipv6}/128", "dev", "lo"])
    cfg = node_config(name, ipv4, ipv6, tmp, store=store, **kw)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return AgentNode(name, ns, path, tmp / name / "agent.sock", tmp / f"{name}.log")


def underlay(netns: Namespaces, count: int, tag: str = "n") -> list[str]:
    """`count` node namespaces on one shared segment (a bridge in a switch
    namespace), node i+1 at 198.18.0.(i+1)/24 and fd00:198:18::(i+1)/64."""
    switch = netns.add("sw")
    ns_run(switch, ["ip", "link", "add", "br0", "type", "bridge"])
    ns_run(switch, ["ip", "link", "set", "br0", "up"])
    nodes = []
    for i in range(1, count + 1):
        ns = netns.add(tag)
        netns.link(
            ns,
            switch,
            [f"198.18.0.{i}/24", f"fd00:198:18::{i}/64"],
            [],
            names=("eth1", f"p{i}"),
        )
        ns_run(switch, ["ip", "link", "set", f"p{i}", "master", "br0"])
        nodes.append(ns)
    return nodes


def start_agent(procs: Processes, node: AgentNode, timeout: float = 20) -> None:
    node.proc = procs.start(
        [*L3FABRIC, "agent", "--config", str(node.config_path)],
        netns=node.netns,
        log_path=str(node.log_path),
    )

    def ready() -> bool:
        if node.proc is not None and node.proc.poll() is not None:
            raise AssertionError(f"agent {node.name} exited:\n{node.log_tail()}")
        # Exit 1 only means a BGP peer is not up yet: the agent answers.
        return node.cli("status", "-o", "json", check=False).stdout.startswith("{")

    try:
        wait_for(ready, timeout=timeout, what=f"agent {node.name} ready")
    except AssertionError:
        raise AssertionError(f"agent {node.name} not ready:\n{node.log_tail()}") from None


MESH_BGP: dict[str, Any] = {"mesh": True, "hold_time": 9}


def start_mesh(
    netns: Namespaces,
    procs: Processes,
    tmp: Path,
    count: int = 2,
    extra: Callable[[int], dict[str, Any]] = lambda index: {"bgp": MESH_BGP},
) -> list[AgentNode]:
    """`count` nodes on one underlay segment in full mesh, sharing one
    datastore; returns once every node has all its sessions Established
    (IPv4 and IPv6 to each other node)."""
    nodes = []
    for i, ns in enumerate(underlay(netns, count), start=1):
        node = make_node(netns, tmp, f"node{i}", i, store=tmp / "store", ns=ns, extra=extra(i))
        nodes.append(node)
    for node in nodes:
        start_agent(procs, node)
    sessions = 2 * (count - 1)
    for node in nodes:
        wait_for(
            lambda n=node: list(n.peer_states().values()) == ["Established"] * sessions,
            timeout=40,
            what=f"{node.name}: {sessions} sessions Established",
        )
    return nodes


def speaker_pid(node: AgentNode) -> int | None:
    """The pid of the node's ExaBGP, from the speaker's pid file, if alive."""
    pid_file = node.socket.parent / "exabgp" / "exabgp.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(pid_file.parent).encode() in cmdline else None


def stop_orphaned_speaker(node: AgentNode) -> None:
    """After an agent was SIGKILLed its ExaBGP runs on (in its own session,
    out of the test's process group) until its grace time: stop it by PID."""
    pid = speaker_pid(node)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
