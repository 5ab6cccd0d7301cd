"""`l3fabric datastore export|import`, `nodes` and `ipam check` on a real
etcd: a file store's keys land in an empty etcd unchanged, and a node moved
from file to etcd comes up with the same addresses, its IPAM checked and
repaired through its agent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from l3fabric.datastore import FileDatastore, open_datastore
from tests import etcdlab
from tests.etcdlab import ETCD, EtcdCluster, etcd_server, require_etcd  # noqa: F401
from tests.integration.agentlab import L3FABRIC, AgentNode, make_node, start_agent
from tests.nettools import Namespaces, Processes, wait_for

pytestmark = pytest.mark.integration

LOCAL_ETCD = "http://127.0.0.1:2379"  # inside the node's namespace: its own loopback
CLEAN_CHECK = {"problems": [], "repaired": [], "vanished_workloads": [], "released_workloads": []}


def cli(
    *args: str, netns: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.run([*prefix, *L3FABRIC, *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"l3fabric {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
    return proc


def in_netns_python(netns: str, code: str) -> str:
    """Python run inside the namespace (the test's own cannot reach its loopback)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_export_from_file_import_into_an_empty_etcd_same_keys_and_values(
    tmp_path: Path,
    etcd_server: EtcdCluster,  # noqa: F811
) -> None:
    url = etcd_server.urls[0]
    etcdlab.wipe(url)
    source = FileDatastore(tmp_path / "src")
    lease = source.grant_lease(60)
    source.put("/l3fabric/nodes/node1", b'{"name": "node1", "asn": 64512}', lease=lease)
    source.put("/l3fabric/ipam/blocks/100.64.0.0-26", b'{"node": "node1", "allocations": {}}')
    source.put("/l3fabric/workloads/node1/web", b'{"name": "web"}')
    source.put("/l3fabric/extra/binary", bytes(range(256)))
    want = {kv.key: kv.value for kv in source.list("/l3fabric/") if not kv.lease}
    source.close()

    exported = cli("datastore", "export", "--datastore-path", str(tmp_path / "src")).stdout
    (tmp_path / "export.json").write_text(exported)
    out = cli("datastore", "import", str(tmp_path / "export.json"), "--endpoints", url).stdout
    assert "wrote 3 keys" in out and "skipped 1 leased" in out

    target = open_datastore("etcd", endpoints=[url])
    try:
        got = {kv.key: kv.value for kv in target.list("/")}
        assert got == want
        assert all(kv.lease == 0 for kv in target.list("/"))
    finally:
        target.close()

    # A second import into the now non-empty etcd is refused; --merge finds
    # nothing to add; and an export back from etcd carries the same keys.
    again = cli(
        "datastore", "import", str(tmp_path / "export.json"), "--endpoints", url, check=False
    )
    assert again.returncode == 1 and "already has 3 keys" in again.stderr
    merged = cli(
        "datastore", "import", str(tmp_path / "export.json"), "--merge", "--endpoints", url
    )
    assert "wrote 0 keys" in merged.stdout
    back = json.loads(cli("datastore", "export", "--endpoints", url).stdout)
    assert back["source"]["type"] == "etcd"
    first = json.loads(exported)
    assert [e for e in back["keys"]] == [e for e in first["keys"] if not e.get("leased")]


def test_nodes_shows_the_lease_of_each_record_on_etcd(
    etcd_server: EtcdCluster,  # noqa: F811
) -> None:
    url = etcd_server.urls[0]
    etcdlab.wipe(url)
    store = open_datastore("etcd", endpoints=[url])
    try:
        lease = store.grant_lease(30)
        record = {"name": "n1", "asn": 64512, "ipv4": "198.18.0.1", "ipv6": None}
        store.put("/l3fabric/nodes/n1", json.dumps(record).encode(), lease=lease)
        store.put("/l3fabric/nodes/n2", b'{"name": "n2", "asn": 64513}')
    finally:
        store.close()
    rows = json.loads(cli("nodes", "-o", "json", "--endpoints", url).stdout)
    assert [(r["name"], r["asn"], r["leased"]) for r in rows] == [
        ("n1", 64512, True),
        ("n2", 64513, False),
    ]
    assert 0 < rows[0]["lease_ttl"] <= 30 and rows[1]["lease_ttl"] is None


def etcd_config(node: AgentNode) -> None:
    config: dict[str, Any] = yaml.safe_load(node.config_path.read_text())
    config["datastore"] = {"type": "etcd", "endpoints": [LOCAL_ETCD], "node_ttl": 6}
    node.config_path.write_text(yaml.safe_dump(config))


def addresses(node: AgentNode) -> dict[str, list[str]]:
    return {w["name"]: sorted(w["addresses"]) for w in node.cli_json("workload", "list")}


def test_a_node_moved_from_file_to_etcd_keeps_its_addresses_and_ipam_check_works(
    netns: Namespaces, procs: Processes, tmp_path: Path
) -> None:
    require_etcd()
    node = make_node(netns, tmp_path, "node1", 1, store=tmp_path / "store")
    etcd = procs.start(
        [
            ETCD,
            "--name=m0",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls={LOCAL_ETCD}",
            f"--advertise-client-urls={LOCAL_ETCD}",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=m0=http://127.0.0.1:2380",
            "--log-level=warn",
        ],
        netns=node.netns,
        log_path=str(tmp_path / "etcd.log"),
    )

    # On the file store: two workloads.
    start_agent(procs, node)
    for name in ("w0", "w1"):
        node.cli("workload", "add", name, "--netns", netns.add(name))
    before = addresses(node)
    assert node.proc is not None
    Processes.stop(node.proc)

    # Export, import into the empty etcd, point the config at it, start again.
    export = cli("datastore", "export", "--config", str(node.config_path)).stdout
    (tmp_path / "export.json").write_text(export)
    wait_for(
        lambda: (
            cli("nodes", "--endpoints", LOCAL_ETCD, netns=node.netns, check=False).returncode == 0
        ),
        timeout=30,
        what="etcd answers",
    )
    imported = cli(
        "datastore",
        "import",
        str(tmp_path / "export.json"),
        "--endpoints",
        LOCAL_ETCD,
        netns=node.netns,
    ).stdout
    assert "skipped 1 leased" in imported
    etcd_config(node)
    start_agent(procs, node)
    assert addresses(node) == before
    datastore = node.status()["datastore"]
    assert datastore["type"] == "etcd" and datastore["up"] is True

    nodes = json.loads(
        cli("nodes", "-o", "json", "--config", str(node.config_path), netns=node.netns).stdout
    )
    assert [(r["name"], r["leased"]) for r in nodes] == [("node1", True)]
    assert 0 < nodes[0]["lease_ttl"] <= 6

    # A new workload gets an address no old one has; IPAM is clean.
    new = node.cli_json("workload", "add", "w2", "--netns", netns.add("w2"))["addresses"]
    assert not set(new) & {a for addrs in before.values() for a in addrs}
    assert node.cli_json("ipam", "check") == CLEAN_CHECK

    # An empty block of a node that does not exist, and an address missing
    # from the handle index: found on etcd, and repaired.
    in_netns_python(
        node.netns,
        f"""
        import json
        from l3fabric.datastore import open_datastore
        store = open_datastore("etcd", endpoints=["{LOCAL_ETCD}"])
        ghost = {{"cidr": "100.64.255.192/26", "node": "ghost", "allocations": {{}}}}
        store.put("/l3fabric/ipam/blocks/100.64.255.192-26", json.dumps(ghost).encode())
        assert store.delete("/l3fabric/ipam/handles/w0")
        store.close()
        """,
    )
    found = node.cli("ipam", "check", "-o", "json", check=False)
    assert found.returncode == 1
    kinds = sorted(p["kind"] for p in json.loads(found.stdout)["problems"])
    assert "orphan-block" in kinds and "unindexed-address" in kinds
    repaired = node.cli("ipam", "check", "--repair", "-o", "json", check=False)
    assert repaired.returncode == 0, repaired.stdout
    actions = sorted(r["action"] for r in json.loads(repaired.stdout)["repaired"])
    assert "freed-block" in actions and "indexed" in actions
    assert node.cli_json("ipam", "check") == CLEAN_CHECK

    # etcd gone: the check says the datastore is unavailable, never hangs.
    Processes.stop(etcd)
    down = node.cli("ipam", "check", check=False)
    assert down.returncode == 1 and "try again" in down.stderr
