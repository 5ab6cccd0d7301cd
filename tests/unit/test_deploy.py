"""The deployment files stay valid: the Kubernetes manifests against the
API schemas (offline, kubernetes-validate's bundled schemas), the commands
they run against l3fabric's own parser and config loader, and the systemd
unit through systemd-analyze when it is there."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3fabric.cli.main import build_parser
from l3fabric.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNIT = DEPLOY / "systemd" / "l3fabric-agent.service"
VENV_BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def resources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="the test extra installs it")
    for doc in yaml.safe_load_all(path.read_text()):
        kv.validate(doc, kv.utils.latest_version(), strict=True)


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = resources()["DaemonSet"]["spec"]["template"]["spec"]
    return spec


def test_daemonset_runs_the_agent_on_the_host_network() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] and spec["hostPID"]
    (agent,) = spec["containers"]
    assert agent["securityContext"]["privileged"]
    assert agent["command"] == ["l3fabric", "agent", "--config", "/etc/l3fabric/node.yaml"]
    build_parser().parse_args(agent["command"][1:])
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    assert "/var/lib/l3fabric" in mounts  # the control socket the plugin calls


def test_init_container_installs_the_cni_plugin_with_real_flags() -> None:
    spec = pod_spec()
    install = next(c for c in spec["initContainers"] if c["name"] == "install-cni")
    args = build_parser().parse_args(install["command"][1:])
    assert (args.command, args.cni_command) == ("cni", "install")
    host_root = str(args.host_root)
    mounted = {m["mountPath"] for m in install["volumeMounts"]}
    for path in (args.bin_dir, args.conf_dir, args.lib_dir):
        assert f"{host_root}{path}" in mounted
    volumes = {v["name"]: v for v in spec["volumes"]}
    host_paths = {
        m["mountPath"]: volumes[m["name"]]["hostPath"]["path"] for m in install["volumeMounts"]
    }
    assert all(mount == host_root + path for mount, path in host_paths.items())


@pytest.mark.parametrize(
    "ips", ["198.18.0.7,fd00:198:18::7", "198.18.0.7", "fd00:198:18::7,198.18.0.7"]
)
def test_render_config_fills_the_template_into_a_valid_node_config(
    tmp_path: Path, ips: str
) -> None:
    render = next(c for c in pod_spec()["initContainers"] if c["name"] == "render-config")
    template = resources()["ConfigMap"]["data"]["node.yaml.template"]
    (tmp_path / "node.yaml.template").write_text(template)
    script = render["command"][2].replace("/config/", f"{tmp_path}/")
    script = script.replace("/etc/l3fabric/", f"{tmp_path}/")
    env = {"NODE_NAME": "worker-7", "NODE_IPS": ips, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", "-ec", script], env=env, check=True, timeout=60)
    config = load_config(tmp_path / "node.yaml")
    assert config.node.name == "worker-7"
    assert str(config.node.ipv4) == "198.18.0.7"
    assert str(config.node.ipv6) == ("fd00:198:18::7" if "," in ips else "None")


def test_systemd_unit_has_the_agreed_settings() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["ExecStart"] == "/usr/local/bin/l3fabric agent --config /etc/l3fabric/node.yaml"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    build_parser().parse_args(service["ExecStart"].split()[1:])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    # verify wants the executables to exist: point them at this checkout's.
    text = UNIT.read_text().replace("/usr/local/bin/l3fabric", str(VENV_BIN / "l3fabric"))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not problems, done.stderr
