"""Two-node labs for the convergence bench: the same underlay driven either by
l3fabric agents (ExaBGP) or by Calico-style BIRD 2 node speakers.

Every namespace and process made here is recorded in a Lab, and Lab.close()
removes exactly those (processes by PID, namespaces by name), also when the
bench fails or is interrupted. Nothing is changed in the root namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bench import procstat
from l3fabric import control
from l3fabric.bgp.bird import BirdConfig, BirdPeer, BirdRole, render
from l3fabric.config import PoolConfig
from l3fabric.datastore.file import FileDatastore
from l3fabric.ipam.allocator import Ipam
from l3fabric.model import RTPROT_L3FABRIC, Workload

T = TypeVar("T")

ASN = 64512
NODE_V4 = ("198.18.0.1", "198.18.0.2")
NODE_V6 = ("fd00:198:18::1", "fd00:198:18::2")
POOL_V4 = "100.64.0.0/16"
RTPROT_BIRD = 12
L3FABRIC = [sys.executable, "-m", "l3fabric.cli"]
REPO_ROOT = Path(__file__).resolve().parent.parent


def sh(*cmd: str, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class Fatal(RuntimeError):
    """Raised by a polled predicate when waiting longer cannot help."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll until predicate is truthy; raise naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Fatal:
            raise
        except Exception as exc:  # the thing polled may not exist yet
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


class Lab:
    """Owns namespaces, processes and files of one bench run."""

    def __init__(self, tag: str, workdir: Path) -> None:
        self.tag = tag
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def netns(self, suffix: str) -> str:
        name = f"{self.tag}{suffix}"
        self.namespaces.append(name)  # before creating: a half-made one is removed too
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def netns_many(self, names: Sequence[str]) -> None:
        """Many namespaces in one `ip -batch` (a few ms each)."""
        full = [f"{self.tag}{n}" for n in names]
        self.namespaces.extend(full)
        self._batch("".join(f"netns add {n}\n" for n in full))

    def delete_netns(self, names: Sequence[str]) -> None:
        gone = set(names)
        self._batch("".join(f"netns del {n}\n" for n in names), check=False)
        self.namespaces = [n for n in self.namespaces if n not in gone]

    def _batch(self, text: str, check: bool = True) -> None:
        with tempfile.NamedTemporaryFile("w", dir=self.workdir, suffix=".batch") as handle:
            handle.write(text)
            handle.flush()
            proc = subprocess.run(
                ["ip", "-force", "-batch", handle.name], capture_output=True, text=True
            )
        if check and proc.returncode != 0:
            raise RuntimeError(f"ip -batch failed: {proc.stderr.strip()[:500]}")

    def start(self, cmd: Sequence[str], netns: str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: ExaBGP children go with it
            )
        self.processes.append(proc)
        return proc

    def start_piped(self, cmd: Sequence[str], netns: str, log: Path) -> subprocess.Popen[bytes]:
        """Like start, with stdin and stdout as pipes to talk to it."""
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, *cmd],
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.PIPE,
                start_new_session=True,
                cwd=REPO_ROOT,  # for `python -m bench.felix`
            )
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
        # ExaBGP runs in a session of its own, out of reach of killpg: note
        # every descendant now, and kill the ones that outlive the stop.
        descendants = _descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        # Children left in the group (an ExaBGP whose parent died) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid, started in descendants:
            deadline = time.monotonic() + timeout
            while _start_time(pid) == started and time.monotonic() < deadline:
                time.sleep(0.05)  # a clean stop takes its children down itself
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.processes:
            self.processes.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.processes)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        if self.namespaces:
            self.delete_netns(list(reversed(self.namespaces)))
            for name in self.namespaces:  # whatever the batch could not delete
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()


def _start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), which tells a
    process from a later one that reused its PID; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else fields[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every descendant with its start time (a reused pid is told apart)."""
    found: list[tuple[int, str]] = []
    pending = [pid]
    while pending:
        for child in procstat.children(pending.pop()):
            started = _start_time(child)
            if started is not None:
                found.append((child, started))
                pending.append(child)
    return found


@dataclass(frozen=True)
class Underlay:
    switch: str
    node_a: str
    node_b: str

    @property
    def path_a(self) -> str:
        return f"/run/netns/{self.node_a}"

    @property
    def path_b(self) -> str:
        return f"/run/netns/{self.node_b}"


def make_underlay(lab: Lab, prefix: str) -> Underlay:
    """Nodes a (198.18.0.1) and b (198.18.0.2) on one bridge, in a switch namespace."""
    switch = lab.netns(f"{prefix}sw")
    sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", switch, "link", "set", "br0", "up")
    nodes = []
    for i, suffix in enumerate(("a", "b")):
        node = lab.netns(f"{prefix}{suffix}")
        port = f"p{suffix}"
        sh(
            "ip",
            "link",
            "add",
            "eth1",
            "netns",
            node,
            "type",
            "veth",
            "peer",
            port,
            "netns",
            switch,
        )
        sh("ip", "-n", node, "addr", "add", f"{NODE_V4[i]}/24", "dev", "eth1")
        sh("ip", "-n", node, "addr", "add", f"{NODE_V6[i]}/64", "dev", "eth1", "nodad")
        sh("ip", "-n", node, "link", "set", "eth1", "up")
        sh("ip", "-n", switch, "link", "set", port, "master", "br0")
        sh("ip", "-n", switch, "link", "set", port, "up")
        nodes.append(node)
    return Underlay(switch, nodes[0], nodes[1])


# -- l3fabric ------------------------------------------------------------------------


@dataclass
class AgentNode:
    name: str
    netns: str
    index: int
    state_dir: Path
    store: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.state_dir / "agent.sock"

    def config_path(self, advertise: str) -> Path:
        return self.state_dir.parent / f"{self.name}-{advertise}.yaml"

    def write_config(self, advertise: str) -> Path:
        config = {
            "node": {
                "name": self.name,
                "asn": ASN,
                "addresses": {"ipv4": NODE_V4[self.index], "ipv6": NODE_V6[self.index]},
            },
            # IPv4 only, like the BIRD baseline's workload routes.
            "pools": [{"cidr": POOL_V4, "block_size": 26}],
            "state_dir": str(self.state_dir),
            "datastore": {"type": "file", "path": str(self.store)},
            "bgp": {
                "mesh": True,
                "advertise": advertise,
                "import_policy": {"max_prefixes": 100_000},
            },
            "log": {"level": "info", "format": "json"},
        }
        path = self.config_path(advertise)
        path.write_text(yaml.safe_dump(config))
        return path

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        return control.call(method, params, socket_path=self.socket, timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def v4_peer_state(self) -> str | None:
        peers = self.call("status")["peers"]
        states = [p["state"] for p in peers if ":" not in p["peer"]]
        return states[0] if states else None


def launch_agent(lab: Lab, node: AgentNode, advertise: str) -> subprocess.Popen[bytes]:
    """Start the agent process and return at once."""
    config = node.write_config(advertise)
    node.proc = lab.start([*L3FABRIC, "agent", "--config", str(config)], node.netns, node.log)
    return node.proc


def start_agent(lab: Lab, node: AgentNode, advertise: str, timeout: float = 60) -> None:
    """Start the agent and wait until its control socket answers."""
    proc = launch_agent(lab, node, advertise)

    def ready() -> bool:
        if proc.poll() is not None:
            raise Fatal(f"agent {node.name} exited:\n{node.log_tail()}")
        node.call("status", timeout=5)
        return True

    try:
        wait_until(ready, timeout, f"agent {node.name} to answer", interval=0.01)
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\n{node.log_tail()}") from None


def stop_agent(lab: Lab, node: AgentNode) -> None:
    if node.proc is not None:
        lab.stop(node.proc)
        node.proc = None


def agent_nodes(lab: Lab, under: Underlay) -> tuple[AgentNode, AgentNode]:
    store = lab.workdir / "store"
    made = []
    for index, (name, ns) in enumerate((("nodea", under.node_a), ("nodeb", under.node_b))):
        state = lab.workdir / name
        state.mkdir(parents=True, exist_ok=True)
        made.append(AgentNode(name, ns, index, state, store, lab.workdir / f"{name}.log"))
    return made[0], made[1]


# -- BIRD -----------------------------------------------------------------------------


@dataclass
class BirdNode:
    name: str
    netns: str
    index: int
    conf: Path
    socket: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def birdc(self, *args: str) -> str:
        proc = subprocess.run(
            ["birdc", "-s", str(self.socket), *args], capture_output=True, text=True, timeout=10
        )
        return proc.stdout

    def established(self) -> bool:
        for line in self.birdc("show", "protocols").splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "BGP" and "Established" in fields[5:]:
                return True
        return False


def bird_nodes(lab: Lab, under: Underlay) -> tuple[BirdNode, BirdNode]:
    made = []
    for index, (name, ns) in enumerate((("birda", under.node_a), ("birdb", under.node_b))):
        other = NODE_V4[1 - index]
        cfg = BirdConfig(
            role=BirdRole.NODE,
            router_id=ipaddress.IPv4Address(NODE_V4[index]),
            asn=ASN,
            peers=(BirdPeer(name="mesh", address=ipaddress.IPv4Address(other), asn=ASN),),
        )
        conf = lab.workdir / f"{name}.conf"
        conf.write_text(render(cfg))
        sock = lab.workdir / f"{name}.ctl"
        made.append(BirdNode(name, ns, index, conf, sock, lab.workdir / f"{name}.log"))
    return made[0], made[1]


def launch_bird(lab: Lab, node: BirdNode) -> subprocess.Popen[bytes]:
    """Start BIRD and return at once."""
    pidfile = str(node.conf.with_suffix(".pid"))
    cmd = ["bird", "-f", "-c", str(node.conf), "-s", str(node.socket), "-P", pidfile]
    node.proc = lab.start(cmd, node.netns, node.log)
    return node.proc


def start_bird(lab: Lab, node: BirdNode, timeout: float = 20) -> None:
    """Start BIRD and wait until it answers on its control socket."""
    proc = launch_bird(lab, node)

    def up() -> bool:
        if proc.poll() is not None:
            raise Fatal(f"bird {node.name} exited, see {node.log}")
        return "Daemon is up" in node.birdc("show", "status")

    wait_until(up, timeout, f"BIRD {node.name} to start", interval=0.01)


def stop_bird(lab: Lab, node: BirdNode) -> None:
    if node.proc is not None:
        lab.stop(node.proc)
        node.proc = None


# -- the baseline's "felix" -----------------------------------------------------------


class Felix:
    """Wires workloads on a BIRD node through bench/felix.py, a separate
    process in the node's namespace, as calico's felix/CNI would."""

    def __init__(self, lab: Lab, netns: str, node: str) -> None:
        self._proc = lab.start_piped(
            [sys.executable, "-m", "bench.felix", node], netns, lab.workdir / f"felix-{node}.log"
        )
        self._expect("ready")

    def _expect(self, what: str) -> None:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if line != what:
            raise RuntimeError(f"felix stand-in said {line!r}, expected {what!r}")

    def attach(self, name: str, netns_path: str, address: str) -> None:
        """Returns when the workload is wired, its /32 route included."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{name} {netns_path} {address}\n".encode())
        self._proc.stdin.flush()
        self._expect("ok")


def delete_routes_with_gateway(netns: str, protocol: int) -> int:
    """Remove learned routes (those with a `via`) of one protocol from a node,
    so the next session starts from an empty table. Local workload routes
    (`dev l3f...`, no gateway) stay."""
    out = sh("ip", "-n", netns, "-4", "-j", "route", "show", "proto", str(protocol))
    doomed = [r["dst"] for r in json.loads(out or "[]") if "gateway" in r or "nexthops" in r]
    if doomed:
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as handle:
            handle.write("".join(f"route del {d} proto {protocol}\n" for d in doomed))
            handle.flush()
            sh("ip", "-n", netns, "-batch", handle.name)
    return len(doomed)


def prewire_workloads(lab: Lab, node: AgentNode, names: Sequence[str]) -> list[Workload]:
    """Workloads on a node whose agent is stopped, left exactly as the agent's
    own add leaves them as far as its reconciler and BGP can tell: an IPAM
    assignment and a datastore record each, the host veth `l3f<hash>` with
    `eth0` in the workload's namespace (made by netns_many before), and the
    /32 proto 76 route. Inside the workload namespace nothing is configured:
    the bulk cases only count routes. Minutes faster than 10k API adds."""
    store = FileDatastore(node.store)
    ipam = Ipam(store, node.name, (PoolConfig(ipaddress.IPv4Network(POOL_V4), 26),))
    lines: list[str] = []
    workloads: list[Workload] = []
    try:
        for name in names:
            (address,) = ipam.assign(name)
            workload = Workload(name, node.name, f"/run/netns/{lab.tag}{name}", (address,))
            workloads.append(workload)
            record = json.dumps(workload.to_dict(), sort_keys=True).encode()
            store.put(f"/l3fabric/workloads/{node.name}/{name}", record, expect_version=0)
            host = workload.host_iface
            lines.append(f"link add {host} type veth peer name eth0 netns {lab.tag}{name}\n")
            lines.append(f"link set {host} up\n")
            lines.append(f"route add {address}/32 dev {host} proto {RTPROT_L3FABRIC} scope link\n")
    finally:
        store.close()
    with tempfile.NamedTemporaryFile("w", dir=lab.workdir, suffix=".batch") as handle:
        handle.write("".join(lines))
        handle.flush()
        sh("ip", "-n", node.netns, "-batch", handle.name, timeout=600)
    return workloads


def wire_insides(node: AgentNode, workloads: Sequence[Workload]) -> None:
    """Inside each prewired workload's namespace what the agent's attach
    puts there (its address, the gateway neighbour, the default route), by
    the agent's own dataplane code run in the node's namespace: the node is
    then exactly as its agent leaves it, and no reconcile pass has anything
    to repair (an operator's reconcile of 10k repairs outlasts the control
    socket's patience)."""
    from l3fabric.dataplane import NetlinkDataplane
    from l3fabric.dataplane.netns import run_in_netns

    def attach_all() -> None:
        dataplane = NetlinkDataplane()
        try:
            for workload in workloads:
                dataplane.attach(workload)
        finally:
            dataplane.close()

    run_in_netns(f"/run/netns/{node.netns}", attach_all)
