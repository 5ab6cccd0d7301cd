"""Podman 4 as the real runtime: its CNI backend runs the installed plugin
for `podman run --network l3fabric` on two nodes of a mesh; the containers
reach each other across nodes with their own addresses, and `podman rm`
gives the addresses back."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agentlab import AgentNode, start_mesh
from tests.integration.cnilab import REFERENCE_DIR, install
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("podman") is None
        or shutil.which("runc") is None
        or not Path("/bin/busybox").exists()
        or not REFERENCE_DIR.is_dir(),
        reason="needs podman, runc, busybox-static and containernetworking-plugins",
    ),
]

CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"

[network]
network_backend = "cni"
cni_plugin_dirs = [{bin_dir!r}, {reference!r}]
network_config_dir = {conf_dir!r}
"""


def busybox_rootfs(root: Path) -> Path:
    """A container root: the static busybox and a link per applet."""
    for sub in ("bin", "etc", "proc", "sys", "dev", "tmp", "run"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


class Podman:
    """podman in one node's network namespace, with its state in the test's
    directory and the test's containers.conf."""

    def __init__(self, node: AgentNode, work: Path) -> None:
        self.node = node
        self.work = work
        cni = install(node, work / "cni", "--cni-version", "1.0.0")
        self.conf = work / "containers.conf"
        self.conf.write_text(
            CONTAINERS_CONF.format(
                bin_dir=str(cni.bin_dir), reference=str(REFERENCE_DIR), conf_dir=str(cni.conf_dir)
            )
        )
        self.conmon_pids: list[int] = []
        # Podman refuses a runroot longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="l3fpm-"))

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "nsenter",
            f"--net=/run/netns/{self.node.netns}",
            "podman",
            "--root",
            str(self.work / "root"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc

    def run(self, name: str, rootfs: Path) -> str:
        self("run", "-d", "--name", name, "--network", "l3fabric", "--rootfs", str(rootfs),
             "sleep", "600")  # fmt: skip
        pid = self("inspect", "--format", "{{.State.ConmonPid}}", name).stdout.strip()
        self.conmon_pids.append(int(pid))
        return name

    def addresses(self, name: str) -> list[str]:
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}"
        return self("inspect", "--format", fmt, name).stdout.split()

    def cleanup(self) -> None:
        self("rm", "-af", "-t", "0", check=False)
        for pid in self.conmon_pids:  # only the conmons of our containers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-R", str(self.runroot)], capture_output=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podmen(netns: Namespaces, procs: Processes, tmp_path: Path) -> Iterator[list[Podman]]:
    mesh = start_mesh(netns, procs, tmp_path, 2)
    made = [Podman(node, tmp_path / f"podman-{node.name}") for node in mesh]
    try:
        yield made
    finally:
        for podman in made:
            podman.cleanup()


def test_podman_containers_on_two_nodes_ping_each_other(
    podmen: list[Podman], tmp_path: Path
) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    p1, p2 = podmen
    c1, c2 = p1.run("c1", rootfs), p2.run("c2", rootfs)
    a1, a2 = p1.addresses(c1), p2.addresses(c2)
    assert len(a1) == 2 and len(a2) == 2, (a1, a2)
    listed = {w["container_id"]: w for w in p1.node.cli_json("workload", "list")}
    (record,) = listed.values()
    assert record["owner"] == "cni" and sorted(record["addresses"]) == sorted(a1)

    for podman, name, targets in ((p1, c1, a2), (p2, c2, a1)):
        for target in targets:
            wait_for(
                lambda p=podman, n=name, t=target: p("exec", n, "ping", "-c", "1", "-W", "1", t,
                                                     check=False).returncode == 0,
                timeout=30,
                what=f"{name} pings {target}",
            )  # fmt: skip
    # c2 sees c1's own address as the source of c1's connection.
    v4_of_c1 = next(a for a in a1 if ":" not in a)
    v4_of_c2 = next(a for a in a2 if ":" not in a)
    p2("exec", "-d", c2, "sh", "-c", "nc -l -p 7001 > /dev/null")
    p1("exec", "-d", c1, "sh", "-c", f"sleep 60 | nc {v4_of_c2} 7001")

    def connection_seen() -> bool:
        # busybox nc exits after one connection; its TIME_WAIT entry remains.
        table = p2("exec", c2, "netstat", "-tn").stdout.splitlines()
        return any(f"{v4_of_c2}:7001 " in row and f"{v4_of_c1}:" in row for row in table)

    wait_for(connection_seen, timeout=30, what=f"c2 sees a connection from {v4_of_c1}")

    for podman in podmen:
        podman("rm", "-f", "-t", "0", "c1" if podman is p1 else "c2")
    for podman in podmen:
        assert podman.node.cli_json("workload", "list") == []
    pools = p1.node.cli_json("ipam", "show")["pools"]
    assert sum(p["used"] for p in pools) == 0
    assert p1.node.cli_json("ipam", "check")["problems"] == []
