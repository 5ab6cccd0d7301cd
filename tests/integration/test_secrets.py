"""A peer password is never printed: not by check-config, not by an agent
whose BGP speaker fails to start (debug logs on), not by status, routes or
any -o json (docs/security.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.agentlab import L3FABRIC, make_node, start_agent
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "Sekr3t Pass#;{x}"


def bgp(password: str, command: str = "exabgp") -> dict[str, object]:
    return {
        "mesh": False,
        "peers": [
            {"address": "198.18.0.66", "asn": 65066, "role": "external", "password": password}
        ],
        "exabgp": {"command": command},
    }


def test_check_config_never_echoes_a_password(tmp_path: Path) -> None:
    config = {
        "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
        "pools": [{"cidr": "100.64.0.0/16"}],
        "state_dir": str(tmp_path / "state"),
        "bgp": bgp('bad"' + PASSWORD),
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["check-config", str(path)], ["agent", "--config", str(path)]):
        done = subprocess.run([*L3FABRIC, *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert "password" in done.stderr
        assert PASSWORD not in done.stdout + done.stderr


def test_an_agent_whose_speaker_fails_never_prints_its_password(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    node = make_node(
        netns,
        tmp_path,
        "node1",
        1,
        store=tmp_path / "store",
        extra={"bgp": bgp(PASSWORD, command=str(tmp_path / "no-such-exabgp"))},
    )
    start_agent(procs, node)
    wait_for(
        lambda: "starting ExaBGP failed" in node.log_path.read_text(),
        timeout=20,
        what="the speaker's failure logged",
    )
    outputs = [node.log_path.read_text()]
    for args in (("status", "-o", "json"), ("routes", "-o", "json"), ("status",)):
        outputs.append(node.cli(*args, check=False).stdout)
    outputs.append(node.cli("routes", "--received", "-o", "yaml", check=False).stdout)
    assert node.status()["peers"][0]["peer"] == "198.18.0.66"
    for text in outputs:
        assert PASSWORD not in text
    # The speaker's own config file holds it, readable by root alone.
    rendered = node.socket.parent / "exabgp" / "exabgp.conf"
    if rendered.exists():
        assert rendered.stat().st_mode & 0o077 == 0
