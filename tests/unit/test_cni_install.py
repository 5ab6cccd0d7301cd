"""`l3fabric cni install`: the launcher and the conflist, written
atomically and idempotently, usable by a runtime as written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from l3fabric.cli.main import main as cli_main
from l3fabric.cni import install
from l3fabric.cni.conflist import parse_conflist, plugin_stdin
from l3fabric.cni.install import InstallOptions
from l3fabric.cni.netconf import parse_netconf


def version_of(plugin: Path) -> dict[str, object]:
    done = subprocess.run(
        [str(plugin)],
        input=b'{"cniVersion": "1.0.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        timeout=60,
        check=True,
    )
    out: dict[str, object] = json.loads(done.stdout)
    return out


def test_install_writes_both_files_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "cni",
        "install",
        "--bin-dir",
        str(tmp_path / "bin"),
        "--conf-dir",
        str(tmp_path / "net.d"),
        "--socket",
        "/run/l3f/agent.sock",
        "--pools",
        "100.64.0.0/16,fd00:64::/48",
        "--dns-nameserver",
        "10.96.0.10",
        "--dns-search",
        "svc.cluster.local",
        "--chain",
        "portmap,tuning,bandwidth",
    ]
    assert cli_main(args) == 0
    assert capsys.readouterr().out.count("written") == 2
    plugin = tmp_path / "bin" / "l3fabric"
    conf_path = tmp_path / "net.d" / "10-l3fabric.conflist"
    assert plugin.stat().st_mode & 0o777 == 0o755
    assert conf_path.stat().st_mode & 0o777 == 0o644
    conf = parse_conflist(conf_path.read_bytes())
    assert (conf.name, conf.cni_version, conf.cni_versions) == (
        "l3fabric",
        "1.0.0",
        ("1.0.0", "1.1.0"),
    )
    assert [p["type"] for p in conf.plugins] == ["l3fabric", "portmap", "tuning", "bandwidth"]
    ours = parse_netconf(plugin_stdin(conf, 0, version="1.1.0"))
    assert (str(ours.socket), ours.pools) == (
        "/run/l3f/agent.sock",
        ("100.64.0.0/16", "fd00:64::/48"),
    )
    assert ours.dns.search == ("svc.cluster.local",)
    before = (plugin.stat().st_mtime_ns, conf_path.stat().st_mtime_ns)
    assert cli_main(args) == 0
    assert capsys.readouterr().out.count("unchanged") == 2
    assert (plugin.stat().st_mtime_ns, conf_path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (tmp_path / "net.d").iterdir()) == ["10-l3fabric.conflist"]
    assert version_of(plugin)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_a_pinned_version_has_no_version_list(tmp_path: Path) -> None:
    options = InstallOptions(conf_dir=tmp_path, bin_dir=tmp_path, cni_version="0.4.0")
    assert install.conflist(options) == {
        "cniVersion": "0.4.0",
        "name": "l3fabric",
        "plugins": [{"type": "l3fabric", "socket": "/var/lib/l3fabric/agent.sock"}],
    }


@pytest.mark.parametrize(
    "bad",
    [
        ["--pools", "100.64.0.1/16"],
        ["--chain", "flannel"],
        ["--dns-nameserver", "x"],
        ["--bin-dir", "relative"],
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, bad: list[str]) -> None:
    base = ["cni", "install", "--bin-dir", str(tmp_path), "--conf-dir", str(tmp_path)]
    assert cli_main(base + bad) == 2
    assert not list(tmp_path.iterdir())


def test_lib_dir_copies_the_plugin_for_a_host_interpreter(tmp_path: Path) -> None:
    """What the DaemonSet's init container does: the host's / is mounted at
    host_root, the launcher names host paths only."""
    root = tmp_path / "host"
    options = InstallOptions(
        python=sys.executable, lib_dir=Path("/opt/l3fabric/cni-plugin"), host_root=root
    )
    files = install.plan(options)
    install.apply(files, options)
    launcher = (root / "opt/cni/bin/l3fabric").read_text()
    assert str(tmp_path) not in launcher and "/opt/l3fabric/cni-plugin/" in launcher
    (copy,) = (root / "opt/l3fabric/cni-plugin").iterdir()
    stale = root / "opt/l3fabric/cni-plugin/0.0.1-old"
    (stale / "l3fabric").mkdir(parents=True)
    (stale / "l3fabric/control.py").write_text("")
    install.apply(files, options)
    assert [p.name for p in (root / "opt/l3fabric/cni-plugin").iterdir()] == [copy.name]
    probe = (
        f"import sys; sys.path.insert(0, {str(copy)!r}); import l3fabric.cni.plugin; "
        "print(l3fabric.cni.plugin.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith(str(copy))


def test_a_long_interpreter_path_goes_through_sh(tmp_path: Path) -> None:
    longdir = tmp_path / ("x" * 130)
    longdir.mkdir()
    python = longdir / "python"  # a stand-in at a path too long for #!
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    options = InstallOptions(
        bin_dir=tmp_path / "bin", conf_dir=tmp_path / "net.d", python=str(python)
    )
    install.apply(install.plan(options), options)
    plugin = tmp_path / "bin" / "l3fabric"
    assert plugin.read_text().startswith("#!/bin/sh\n")
    assert version_of(plugin)["cniVersion"] == "1.0.0"


def test_an_earlier_conflist_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "net.d").mkdir()
    (tmp_path / "net.d" / "05-other.conflist").write_text("{}")
    args = [
        "cni",
        "install",
        "--bin-dir",
        str(tmp_path / "bin"),
        "--conf-dir",
        str(tmp_path / "net.d"),
    ]
    assert cli_main(args) == 0
    assert "05-other.conflist sorts before" in capsys.readouterr().out
