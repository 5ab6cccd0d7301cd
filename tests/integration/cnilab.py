"""Driving the installed CNI plugin as a runtime does: the CNI_* environment,
the network configuration on stdin, from a node's network namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l3fabric.cni.conflist import parse_conflist, plugin_stdin
from tests.integration.agentlab import L3FABRIC, AgentNode
from tests.nettools import Processes, wait_for

CNI_VERSION = "1.1.0"
REFERENCE_DIR = Path("/usr/lib/cni")
PROBE = [sys.executable, "-m", "l3fabric.lab.probe"]


@dataclass(frozen=True)
class Installed:
    bin_dir: Path
    conf_dir: Path

    @property
    def plugin(self) -> Path:
        return self.bin_dir / "l3fabric"

    @property
    def conflist(self) -> Path:
        return self.conf_dir / "10-l3fabric.conflist"

    def stdin(self, index: int = 0, **kw: Any) -> bytes:
        return plugin_stdin(parse_conflist(self.conflist.read_bytes()), index, **kw)


def install(node: AgentNode, root: Path, *extra: str) -> Installed:
    """`l3fabric cni install` into the test's own directories."""
    bin_dir, conf_dir = root / "bin", root / "net.d"
    argv = [*L3FABRIC, "cni", "install", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)]
    proc = subprocess.run(
        [*argv, "--socket", str(node.socket), *extra], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return Installed(bin_dir, conf_dir)


def cni_env(command: str, cid: str = "", netns: str = "", ifname: str = "eth0") -> dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_PATH": f"/nonexistent:{REFERENCE_DIR}"}
    if cid:
        env["CNI_CONTAINERID"] = cid
    if netns:
        env["CNI_NETNS"] = netns
    if ifname:
        env["CNI_IFNAME"] = ifname
    return env


def exec_plugin(
    node_ns: str, plugin: Path, env: dict[str, str], stdin: bytes, timeout: float = 120
) -> tuple[int, Any]:
    """Run a plugin executable in the node namespace as a runtime does: a
    clean environment of CNI_* variables and PATH, the config on stdin.
    Returns (exit code, parsed stdout or None)."""
    base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    proc = subprocess.run(
        ["ip", "netns", "exec", node_ns, str(plugin)],
        input=stdin,
        capture_output=True,
        env={**base, **env},
        timeout=timeout,
    )
    out = proc.stdout.decode().strip()
    try:
        parsed = json.loads(out) if out else None
    except ValueError:
        raise AssertionError(f"{plugin}: not JSON on stdout: {out!r} {proc.stderr!r}") from None
    return proc.returncode, parsed


def ok(result: tuple[int, Any]) -> Any:
    code, out = result
    assert code == 0, out
    return out


def container_addresses(result: dict[str, Any]) -> list[str]:
    return [ip["address"].split("/")[0] for ip in result["ips"]]


def ipam_clean(node: AgentNode) -> dict[str, Any]:
    report: dict[str, Any] = node.cli_json("ipam", "check")
    return report


def echo_server(procs: Processes, netns: str, port: int) -> None:
    """The lab's UDP echo, answering with the source address it saw."""
    log = Path(f"/tmp/l3f-echo-{netns}-{port}.log")
    log.unlink(missing_ok=True)
    procs.start([*PROBE, "serve", str(port)], netns=netns, log_path=str(log))
    wait_for(lambda: "ready" in log.read_text(), timeout=15, what=f"echo server in {netns}")
    log.unlink(missing_ok=True)


def seen_sources(netns: str, port: int, targets: list[str], timeout: float = 3) -> dict[str, Any]:
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, *PROBE, "send", str(port), str(timeout), *targets],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )
    seen: dict[str, Any] = json.loads(proc.stdout)["seen"]
    return seen
