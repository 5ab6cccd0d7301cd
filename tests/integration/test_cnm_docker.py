"""The CNM driver against a real Docker engine (Debian docker.io 20.10).

Three mesh nodes on one underlay; node1 and node2 each run an agent, the
driver (`l3fabric cnm serve`) and a dockerd, all three in one mount
namespace of their own (a holder process made with `unshare --mount
--propagation slave`): there /run is a test directory, so the driver's socket
is the dockerd's /run/docker/plugins/l3fabric.sock, /etc/docker is a test
directory (dockerd writes its key.json there), and the agent sees the
sandbox namespaces dockerd mounts under its exec root. Nothing of the host's
/run/docker or /etc/docker is touched. node3 runs a plain agent with a CLI
workload.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentlab import (
    L3FABRIC,
    MESH_BGP,
    AgentNode,
    make_node,
    start_agent,
    underlay,
)
from tests.nettools import Namespaces, Processes, ns_run, run, wait_for

DOCKER = "/usr/bin/docker"
IMAGE = "l3f-busybox"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("dockerd") and os.path.exists(DOCKER) and os.path.isdir("/etc/docker")),
        reason="needs docker.io (dockerd, /usr/bin/docker and /etc/docker to bind over)",
    ),
]


@dataclass
class DockerNode:
    agent: AgentNode
    holder: subprocess.Popen[bytes]
    root: Path  # short: unix socket paths must stay under 107 bytes
    procs: Processes
    dockerd: subprocess.Popen[bytes] | None = None
    cnm: subprocess.Popen[bytes] | None = None
    containers: list[str] = field(default_factory=list)

    @property
    def host_socket(self) -> Path:
        """The driver's socket as the host (and this test) sees it."""
        return self.root / "run" / "docker" / "plugins" / "l3fabric.sock"

    def inside(self, *argv: str) -> list[str]:
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv]

    def docker(self, *args: str, check: bool = True, timeout: float = 90) -> str:
        proc = subprocess.run(
            [DOCKER, "-H", f"unix://{self.root}/d.sock", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} -> {proc.returncode}: {proc.stderr}\n"
                f"cnm log:\n{_tail(self.root / 'cnm.log')}\nagent log:\n{self.agent.log_tail()}"
            )
        return proc.stdout if check else proc.stdout + proc.stderr

    def start_dockerd(self) -> None:
        r = self.root
        self.dockerd = self.procs.start(
            self.inside(
                "dockerd",
                "--data-root", f"{r}/data",
                "--exec-root", f"{r}/x",
                "--pidfile", f"{r}/d.pid",
                "-H", f"unix://{r}/d.sock",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--default-ulimit", "nofile=20000:20000",
                "--live-restore",
                "--cgroup-parent", f"/{r.name}",
            ),
            log_path=str(r / "dockerd.log"),
        )  # fmt: skip
        wait_for(
            lambda: (
                self.docker("version", check=False).count("Version") >= 2
                and self.docker("info", check=False).find("Server Version") >= 0
            ),
            timeout=60,
            what=f"{self.agent.name}: dockerd answers",
        )

    def stop_dockerd(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            os.kill(self.dockerd.pid, signal.SIGTERM)  # dockerd alone: containers live on
            self.dockerd.wait(timeout=60)
        self.dockerd = None

    def start_cnm(self) -> None:
        self.cnm = self.procs.start(
            self.inside(
                *L3FABRIC, "cnm", "serve", "--agent-socket", str(self.agent.socket),
                "--log-level", "debug",
            ),
            log_path=str(self.root / "cnm.log"),
        )  # fmt: skip
        wait_for(
            lambda: plugin_call(self, "/Plugin.Activate", b"")[0] == 200,
            timeout=20,
            what=f"{self.agent.name}: the driver answers",
        )

    def stop_cnm(self) -> None:
        if self.cnm is not None:
            Processes.stop(self.cnm)
        self.cnm = None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(none)"


def plugin_call(node: DockerNode, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """One call straight to the driver's socket, as libnetwork makes it."""

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(str(node.host_socket))
            self.sock = sock

    conn = Conn("localhost", timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Length": str(len(body))})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _busybox_rootfs(root: Path) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in run(["/bin/busybox", "--list"]).split():
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    return rootfs


def _holder(procs: Processes, ns: str) -> subprocess.Popen[bytes]:
    holder = procs.start(
        ["nsenter", f"--net=/run/netns/{ns}", "unshare", "--mount", "--propagation", "slave",
         "sleep", "infinity"]
    )  # fmt: skip
    own = os.readlink("/proc/self/ns/mnt")
    wait_for(
        lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") != own,
        timeout=10,
        what="the holder's mount namespace",
    )
    return holder


def _mounts(holder: int, root: Path) -> None:
    """Inside the holder only (slave propagation: nothing reaches the host)."""
    for sub in ("run/netns", "run/docker/plugins", "etc", "data", "x"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    script = " && ".join(
        [
            f"mount --rbind /run/netns {root}/run/netns",
            f"mount --rbind {root}/run /run",
            f"mount --bind {root}/etc /etc/docker",
        ]
    )
    run(["nsenter", f"--target={holder}", "--mount", "--", "sh", "-c", script])


def _leftovers(node: DockerNode) -> None:
    """Whatever a failed test left of dockerd's: the processes in the
    holder's mount namespace (containerd, shims) and in the containers'
    cgroups, all started here; stopped by PID."""
    with contextlib.suppress(OSError):
        mnt = os.readlink(f"/proc/{node.holder.pid}/ns/mnt")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == node.holder.pid:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") == mnt:
                    os.kill(int(pid), signal.SIGKILL)
    for procs_file in Path("/sys/fs/cgroup/pids", node.root.name).glob("**/cgroup.procs"):
        with contextlib.suppress(OSError):
            for pid in procs_file.read_text().split():
                os.kill(int(pid), signal.SIGKILL)
    for cgroup_root in Path("/sys/fs/cgroup").iterdir():
        mine = cgroup_root / node.root.name
        if mine.is_dir():
            for sub in sorted(mine.glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()


@dataclass
class Fabric:
    docker: list[DockerNode]
    plain: AgentNode


@pytest.fixture
def fabric(netns: Namespaces, procs: Processes, tmp_path: Path) -> Iterator[Fabric]:
    top = Path(tempfile.mkdtemp(prefix="l3cnm", dir="/tmp"))
    rootfs = _busybox_rootfs(top)
    nodes: list[DockerNode] = []
    try:
        namespaces = underlay(netns, 3, tag="c")
        agents = [
            make_node(
                netns, tmp_path, f"node{i}", i, store=tmp_path / "store", ns=ns,
                extra={"bgp": MESH_BGP},
            )
            for i, ns in enumerate(namespaces, start=1)
        ]  # fmt: skip
        for i, agent in enumerate(agents[:2], start=1):
            root = top / f"n{i}"
            holder = _holder(procs, agent.netns)
            _mounts(holder.pid, root)
            node = DockerNode(agent, holder, root, procs)
            nodes.append(node)
            agent.proc = procs.start(
                node.inside(*L3FABRIC, "agent", "--config", str(agent.config_path)),
                log_path=str(agent.log_path),
            )
        start_agent(procs, agents[2])
        for agent in agents:
            wait_for(
                lambda a=agent: list(a.peer_states().values()) == ["Established"] * 4,
                timeout=60,
                what=f"{agent.name}: 4 sessions Established",
            )
        for node in nodes:
            node.start_cnm()
            node.start_dockerd()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                [DOCKER, "-H", f"unix://{node.root}/d.sock", "import", "-", IMAGE],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
                timeout=120,
            )
            tar.wait(timeout=30)
        yield Fabric(nodes, agents[2])
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                if node.dockerd is not None:
                    ids = node.docker("ps", "-aq", check=False).split()
                    if ids and all(len(i) == 12 for i in ids):
                        node.docker("rm", "-f", *ids, check=False)
            with contextlib.suppress(Exception):
                node.stop_dockerd()
            _leftovers(node)
            node.stop_cnm()
        shutil.rmtree(top, ignore_errors=True)


def container_addresses(node: DockerNode, name: str) -> tuple[str, str]:
    out = node.docker(
        "inspect", "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}", name,
    )  # fmt: skip
    v4, _, v6 = out.strip().partition(" ")
    return v4, v6.strip()


def pings(node: DockerNode, container: str, address: str) -> bool:
    tool = "ping6" if ":" in address else "ping"
    out = node.docker("exec", container, tool, "-c", "1", "-W", "2", address, check=False)
    return " 0% packet loss" in out


def cnm_workloads(agent: AgentNode) -> list[dict[str, Any]]:
    return [w for w in agent.cli_json("workload", "list") if w["owner"] == "cnm"]


def used(agent: AgentNode) -> int:
    return int(agent.cli_json("ipam", "show")["totals"]["used"])


def test_containers_on_two_nodes_reach_each_other_and_a_cli_workload(
    fabric: Fabric, netns: Namespaces
) -> None:
    n1, n2 = fabric.docker
    node3 = fabric.plain
    baseline = used(node3)
    # node1: --subnet inside the pools, dual stack; node2: no --subnet, IPv4.
    n1.docker(
        "network", "create", "-d", "l3fabric", "--ipam-driver", "l3fabric", "--ipv6",
        "--subnet", "100.64.0.0/16", "--subnet", "fd00:64::/48", "net1",
    )  # fmt: skip
    n2.docker("network", "create", "-d", "l3fabric", "--ipam-driver", "l3fabric", "net2")
    n1.docker("run", "-d", "--name", "c1", "--network", "net1", IMAGE, "sleep", "3600")
    n2.docker("run", "-d", "--name", "c2", "--network", "net2", IMAGE, "sleep", "3600")
    c1_v4, c1_v6 = container_addresses(n1, "c1")
    c2_v4, c2_v6 = container_addresses(n2, "c2")
    assert c1_v4.startswith("100.64.") and c1_v6.startswith("fd00:64:"), (c1_v4, c1_v6)
    assert c2_v4.startswith("100.64.") and not c2_v6

    # Each endpoint is a workload of its node's agent, owned by cnm.
    (w1,) = cnm_workloads(n1.agent)
    assert sorted(w1["addresses"]) == sorted([c1_v4, c1_v6])
    assert w1["container_id"] and w1["labels"]["docker.network"]

    wl_ns = netns.add("w")
    node3.cli("workload", "add", "w3", "--netns", f"/run/netns/{wl_ns}")
    (w3,) = [w for w in node3.cli_json("workload", "list") if w["name"] == "w3"]
    w3_v4 = next(a for a in w3["addresses"] if ":" not in a)
    w3_v6 = next(a for a in w3["addresses"] if ":" in a)

    wait_for(lambda: pings(n1, "c1", c2_v4), timeout=30, what="c1 -> c2 over IPv4")
    wait_for(lambda: pings(n2, "c2", c1_v4), timeout=30, what="c2 -> c1 over IPv4")
    wait_for(lambda: pings(n1, "c1", w3_v6), timeout=30, what="c1 -> w3 over IPv6")
    for address in (c1_v4, c2_v4, c1_v6):
        tool = "ping6" if ":" in address else "ping"
        wait_for(
            lambda a=address, t=tool: (
                subprocess.run(
                    ["ip", "netns", "exec", wl_ns, t, "-c", "1", "-W", "2", a], capture_output=True
                ).returncode
                == 0
            ),
            timeout=30,
            what=f"w3 -> {address}",
        )
    assert pings(n1, "c1", w3_v4)
    assert used(node3) == baseline + 3 + 2  # c1 (v4+v6), c2 (v4), w3 (v4+v6)

    n1.docker("rm", "-f", "c1")
    n2.docker("rm", "-f", "c2")
    wait_for(lambda: not cnm_workloads(n1.agent) and not cnm_workloads(n2.agent), timeout=20)
    wait_for(lambda: used(node3) == baseline + 2, timeout=20, what="c1 and c2's addresses back")
    assert c1_v4 + "/32" not in ns_run(n2.agent.netns, ["ip", "route", "show", "proto", "76"])
    n1.docker("network", "rm", "net1")
    n2.docker("network", "rm", "net2")
    assert "net1" not in n1.docker("network", "ls")


def test_bad_requests_and_restarts(fabric: Fabric) -> None:
    n1, n2 = fabric.docker
    out = n1.docker(
        "network", "create", "-d", "l3fabric", "--ipam-driver", "l3fabric",
        "--subnet", "10.99.0.0/16", "bad", check=False,
    )  # fmt: skip
    assert "outside every l3fabric pool" in out and "100.64.0.0/16" in out, out
    n1.docker("network", "create", "-d", "l3fabric", "--ipam-driver", "l3fabric", "net")
    n2.docker("network", "create", "-d", "l3fabric", "--ipam-driver", "l3fabric", "net")
    out = n1.docker(
        "run", "-d", "-p", "8080:80", "--network", "net", IMAGE, "sleep", "60", check=False
    )
    assert "port mappings" in out, out
    n1.docker("run", "-d", "--name", "c1", "--network", "net", IMAGE, "sleep", "3600")
    n2.docker("run", "-d", "--name", "c2", "--network", "net", IMAGE, "sleep", "3600")
    c1_v4, _ = container_addresses(n1, "c1")
    c2_v4, _ = container_addresses(n2, "c2")
    wait_for(lambda: pings(n1, "c1", c2_v4), timeout=30, what="c1 -> c2")

    # Straight to the driver's socket.
    assert plugin_call(n1, "/NetworkDriver.Join", b"{not json")[0] == 400
    status, answer = plugin_call(
        n1,
        "/IpamDriver.RequestPool",
        json.dumps({"AddressSpace": "x", "Pool": "10.1.0.0/16"}).encode(),
    )
    assert status == 500 and "outside every l3fabric pool" in answer["Err"]
    network = n1.docker(
        "inspect", "-f", "{{.NetworkSettings.Networks.net.NetworkID}}", "c1"
    ).strip()
    endpoint = n1.docker(
        "inspect", "-f", "{{.NetworkSettings.Networks.net.EndpointID}}", "c1"
    ).strip()
    sandbox = n1.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "c1").strip()
    body = {"NetworkID": network, "EndpointID": endpoint, "SandboxKey": sandbox, "Options": {}}
    status, answer = plugin_call(n1, "/NetworkDriver.Join", json.dumps(body).encode())
    assert status == 500 and "already joined" in answer["Err"], answer
    body = {"NetworkID": network, "EndpointID": "f" * 64}
    status, answer = plugin_call(n1, "/NetworkDriver.Leave", json.dumps(body).encode())
    assert status == 500 and "not joined" in answer["Err"], answer
    assert plugin_call(n1, "/Nope.Nothing", b"{}")[0] == 404
    assert plugin_call(n1, "/Plugin.Activate", b"")[0] == 200  # still serving
    assert pings(n1, "c1", c2_v4)

    # dockerd restarted with its containers running (--live-restore): the
    # routes stay all along, and the driver answers the new dockerd.
    routes_before = ns_run(n2.agent.netns, ["ip", "route", "show", "proto", "76"])
    assert f"{c1_v4} via" in routes_before
    n1.stop_dockerd()
    assert f"{c1_v4} via" in ns_run(n2.agent.netns, ["ip", "route", "show", "proto", "76"])
    n1.start_dockerd()
    assert "Up" in n1.docker("ps", "--filter", "name=c1", "--format", "{{.Status}}")
    wait_for(lambda: pings(n1, "c1", c2_v4), timeout=30, what="c1 -> c2 after dockerd's restart")

    # The driver restarted: it answers from the agent's state.
    n1.stop_cnm()
    n1.start_cnm()
    n1.docker("run", "-d", "--name", "c3", "--network", "net", IMAGE, "sleep", "3600")
    c3_v4, _ = container_addresses(n1, "c3")
    wait_for(lambda: pings(n2, "c2", c3_v4), timeout=30, what="c2 -> c3")
    assert len(cnm_workloads(n1.agent)) == 2
    n1.docker("rm", "-f", "c1", "c3")  # Leave and DeleteEndpoint through the new server
    wait_for(lambda: not cnm_workloads(n1.agent), timeout=20, what="c1 and c3 released")
    check = n1.agent.cli_json("ipam", "check")
    assert not check.get("problems"), check
