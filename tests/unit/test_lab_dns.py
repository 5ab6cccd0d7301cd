"""The lab's resolver files and DNS settings, without namespaces."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
import yaml

from l3fabric.lab import deploy
from l3fabric.lab.daemons import DnsSettings, NodeContext, dns_settings
from l3fabric.lab.paths import LabPaths
from l3fabric.lab.runtime import MountPlan
from l3fabric.lab.topology import Bind, Node, Topology


def _lab(tmp_path: Path, name: str = "lab1") -> deploy.Lab:
    topo = Topology(name, tmp_path / "t.clab.yml", ())
    return deploy.Lab(topo, LabPaths(tmp_path / "run", name))


def test_resolv_conf_is_written_and_only_the_labs_own_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "ETC_NETNS", tmp_path / "etc-netns")
    mine, other = _lab(tmp_path), _lab(tmp_path, "lab2")
    dns = DnsSettings("198.18.0.1", "l3fabric.internal", "/skydns")
    deploy.write_resolv_conf(mine, "lab1-node1-w0", dns, "default")
    path = deploy.resolv_conf_path("lab1-node1-w0")
    assert path.read_text().splitlines()[1:] == [
        "nameserver 198.18.0.1",
        "search default.l3fabric.internal",
        "options timeout:1 attempts:2",
    ]
    assert not deploy.remove_resolv_conf(other, "lab1-node1-w0")  # not lab2's
    assert path.exists()
    assert deploy.remove_resolv_conf(mine, "lab1-node1-w0")
    assert not path.parent.exists()
    # Somebody's own file at a lab namespace's path is never removed.
    path.parent.mkdir(parents=True)
    path.write_text("nameserver 192.0.2.53\n")
    assert not deploy.remove_resolv_conf(mine, "lab1-node1-w0") and path.exists()
    assert not deploy.remove_resolv_conf(mine, "lab1-node9-w0")  # nothing there


def _context(tmp_path: Path, config: dict[str, object]) -> NodeContext:
    source = tmp_path / "node.yaml"
    source.write_text(yaml.safe_dump(config))
    node = Node(
        "node1",
        "linux",
        "l3fabric/node:latest",
        (Bind(source, PurePosixPath("/etc/l3fabric/node.yaml")),),
    )
    return NodeContext(node, LabPaths(tmp_path / "run", "lab1"), 1, MountPlan((), ()))


def _config(discovery: dict[str, object]) -> dict[str, object]:
    return {
        "node": {
            "name": "node1",
            "asn": 64512,
            "addresses": {"ipv6": "fd00:198:18::1"},
            "router_id": "198.18.0.1",
        },
        "pools": [{"cidr": "100.64.0.0/16"}],
        "discovery": discovery,
    }


def test_dns_settings_come_from_the_node_config(tmp_path: Path) -> None:
    config = _config({"zone": "lab.example", "prefix": "/dns"})
    settings = dns_settings(_context(tmp_path, config))
    assert settings == DnsSettings("fd00:198:18::1", "lab.example", "/dns")
    assert settings.listen == "[fd00:198:18::1]:53"


def test_no_dns_server_when_discovery_is_off(tmp_path: Path) -> None:
    config = _config({"enabled": False})
    assert dns_settings(_context(tmp_path, config)) is None
