"""The node's kernel skips next hops whose link lost carrier: ensure_sysctls
sets ignore_routes_with_linkdown for both families (tests/faults/test_uplink_cut.py
counts what this saves when an uplink's far end fails)."""

from __future__ import annotations

from pathlib import Path

from l3fabric.dataplane.netlink import NetlinkDataplane
from l3fabric.dataplane.sysctl import NODE_SETTINGS, Sysctls

LINKDOWN = (
    "net/ipv4/conf/all/ignore_routes_with_linkdown",
    "net/ipv6/conf/all/ignore_routes_with_linkdown",
    # IPv6 reads each interface's own value: uplinks made after start-up too.
    "net/ipv6/conf/default/ignore_routes_with_linkdown",
)


def sysctl_root(tmp_path: Path) -> Path:
    for setting in NODE_SETTINGS:
        path = tmp_path / setting.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0\n")
    return tmp_path


def test_node_settings_ignore_routes_with_linkdown_in_both_families() -> None:
    values = {s.key: s.value for s in NODE_SETTINGS}
    assert {key: values.get(key) for key in LINKDOWN} == dict.fromkeys(LINKDOWN, "1")


def test_ensure_sysctls_writes_them(tmp_path: Path) -> None:
    root = sysctl_root(tmp_path)
    dataplane = NetlinkDataplane(sysctls=Sysctls(str(root)))
    try:
        dataplane.ensure_sysctls()
    finally:
        dataplane.close()
    for key in LINKDOWN:
        assert (root / key).read_text() == "1"
