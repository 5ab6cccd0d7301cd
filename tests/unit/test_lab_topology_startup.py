"""containerlab's `startup-config` for BIRD and FRR nodes (a text file bound
as the daemon's config), and which routing images the runner recognises:
newer FRR images run the host's FRR, GoBGP needs the host's gobgpd."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from l3fabric.lab.topology import ImageKind, TopologyError, image_kind, load_topology

BIRD = {"kind": "linux", "image": "l3fabric/bird:2"}
FRR = {"kind": "linux", "image": "quay.io/frrouting/frr:10.1.0"}


def write(tmp_path: Path, nodes: dict[str, Any], **topology: Any) -> Path:
    path = tmp_path / "lab.clab.yml"
    path.write_text(yaml.safe_dump({"name": "t", "topology": {"nodes": nodes, **topology}}))
    return path


def refused(tmp_path: Path, path: Path, key: str, message: str, **kw: Any) -> None:
    with pytest.raises(TopologyError) as err:
        load_topology(path, lab_root=tmp_path / "labs", **kw)
    assert any(
        line.startswith(f"{path}: {key}: ") and message in line for line in err.value.errors
    ), err.value.errors
    assert not (tmp_path / "labs").exists()


def test_startup_config_is_bound_read_only_as_the_daemons_config(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "bird.conf").write_text("router id 198.18.0.1;\n")
    (tmp_path / "r2.frr.conf").write_text("hostname r2\n")
    path = write(
        tmp_path,
        {
            "r1": {**BIRD, "startup-config": "r1/bird.conf"},
            "r2": {**FRR, "startup-config": "r2.frr.conf"},
        },
    )
    topo = load_topology(path, lab_root=tmp_path / "labs")
    r1, r2 = topo.node("r1"), topo.node("r2")
    assert r1.startup_config == tmp_path / "r1" / "bird.conf"
    (bind,) = r1.binds
    assert bind.target == PurePosixPath("/etc/bird/bird.conf") and bind.read_only
    assert r1.bound_source("/etc/bird/bird.conf") == tmp_path / "r1" / "bird.conf"
    assert r2.bound_source("/etc/frr/frr.conf") == tmp_path / "r2.frr.conf"


def test_startup_config_from_a_kind_with_the_node_name(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    for name in ("leaf1", "leaf2"):
        (tmp_path / "configs" / f"{name}.conf").write_text(f"# {name}\n")
    path = write(
        tmp_path,
        {"leaf1": BIRD, "leaf2": BIRD},
        kinds={"linux": {"startup-config": "configs/__clabNodeName__.conf"}},
    )
    topo = load_topology(path, lab_root=tmp_path / "labs")
    assert [n.startup_config for n in topo.nodes] == [
        tmp_path / "configs" / "leaf1.conf",
        tmp_path / "configs" / "leaf2.conf",
    ]


def test_a_node_config_replaces_its_groups(tmp_path: Path) -> None:
    (tmp_path / "group.conf").write_text("# group\n")
    (tmp_path / "own.conf").write_text("# own\n")
    path = write(
        tmp_path,
        {"r1": {**BIRD, "group": "g", "startup-config": "own.conf"}},
        groups={"g": {"startup-config": "group.conf"}},
    )
    assert load_topology(path, lab_root=tmp_path / "labs").node("r1").startup_config == (
        tmp_path / "own.conf"
    )


@pytest.mark.parametrize(
    ("setup", "node", "message"),
    [
        (lambda d: None, {**BIRD, "startup-config": "missing.conf"}, "missing.conf does not exist"),
        (
            lambda d: (d / "adir").mkdir(),
            {**BIRD, "startup-config": "adir"},
            "adir is not a regular file",
        ),
        (
            lambda d: (d / "bin.conf").write_bytes(b"router id\x00\x01"),
            {**FRR, "startup-config": "bin.conf"},
            "is not a text file (it has NUL bytes)",
        ),
        (
            lambda d: (d / "latin1.conf").write_bytes(b"hostname caf\xe9\n"),
            {**FRR, "startup-config": "latin1.conf"},
            "is not a text file (not UTF-8)",
        ),
        (
            lambda d: None,
            {**BIRD, "startup-config": "router id 1.2.3.4;\nprotocol device {}\n"},
            "an embedded config is not supported: give a file path",
        ),
        (
            lambda d: (d / "x.conf").write_text("x\n"),
            {"kind": "linux", "image": "alpine:3", "startup-config": "x.conf"},
            "image 'alpine:3' runs nothing: startup-config is the config of a BIRD or FRR node",
        ),
        (
            lambda d: (d / "x.conf").write_text("x\n"),
            {"kind": "linux", "image": "l3fabric/node", "startup-config": "x.conf"},
            "image 'l3fabric/node' runs l3fabric: startup-config is the config of a BIRD or FRR",
        ),
        (
            lambda d: (d / "x.conf").write_text("x\n"),
            {**BIRD, "startup-config": "x.conf", "binds": ["x.conf:/etc/bird/bird.conf"]},
            "/etc/bird/bird.conf is also bound from",
        ),
        (lambda d: None, {**BIRD, "startup-config": 7}, "must be a non-empty string"),
        (lambda d: None, {**BIRD, "startup-configs": "x"}, "did you mean 'startup-config'?"),
    ],
)
def test_refused_startup_configs_name_file_and_key(
    tmp_path: Path, setup: Any, node: dict[str, Any], message: str
) -> None:
    setup(tmp_path)
    path = write(tmp_path, {"r1": node})
    key = "topology.nodes.r1." + (
        "startup-configs" if "startup-configs" in node else "startup-config"
    )
    refused(tmp_path, path, key, message)


def test_without_startup_config_or_bind_the_daemon_config_is_missing(tmp_path: Path) -> None:
    refused(
        tmp_path,
        write(tmp_path, {"r1": BIRD}),
        "topology.nodes.r1.binds",
        "needs /etc/bird/bird.conf",
    )


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("frrouting/frr:v10.2.1", ImageKind.FRR),
        ("quay.io/frrouting/frr:10.1.0", ImageKind.FRR),
        ("docker.io/frrouting/frr:v10.0.1@sha256:" + "0" * 64, ImageKind.FRR),
        ("osrg/gobgp", ImageKind.GOBGP),
        ("docker.io/osrg/gobgp:v3.37.0", ImageKind.GOBGP),
    ],
)
def test_routing_images(image: str, kind: ImageKind) -> None:
    assert image_kind(image) is kind


def test_gobgp_is_refused_where_the_host_has_no_gobgpd(tmp_path: Path) -> None:
    (tmp_path / "gobgpd.conf").write_text("[global.config]\n  as = 65001\n")
    node = {"kind": "linux", "image": "osrg/gobgp", "startup-config": "gobgpd.conf"}
    path = write(tmp_path, {"g1": node})
    refused(
        tmp_path,
        path,
        "topology.nodes.g1.image",
        "image 'osrg/gobgp' is GoBGP (gobgp), and the namespace runner runs the host's daemons: "
        "gobgpd is not installed on this host",
        which=lambda name: None,
    )
    found = load_topology(path, lab_root=tmp_path / "labs", which=lambda n: f"/usr/bin/{n}")
    g1 = found.node("g1")
    assert g1.image_kind is ImageKind.GOBGP
    assert g1.bound_source("/etc/gobgp/gobgpd.conf") == tmp_path / "gobgpd.conf"
