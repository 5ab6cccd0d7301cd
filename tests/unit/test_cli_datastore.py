"""`l3fabric datastore export|import` and `l3fabric nodes` on the file
backend: the document, its checks, the import rules and the exit codes."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.cli import datastore as cli_datastore
from l3fabric.cli.main import main
from l3fabric.datastore import FileDatastore, KeyValue
from l3fabric.datastore.keys import KeyLayout

NODE1 = {"name": "node1", "asn": 64512, "ipv4": "198.18.0.1", "ipv6": "fd00:198:18::1"}
NODE2 = {"name": "node2", "asn": 64513, "ipv4": "198.18.0.2", "ipv6": None}


def filled(path: Path) -> FileDatastore:
    """A store with a leased and an unleased node, a block and a binary key."""
    store = FileDatastore(path)
    keys = KeyLayout()
    lease = store.grant_lease(60)
    store.put(keys.node("node1"), json.dumps(NODE1).encode(), lease=lease)
    store.put(keys.node("node2"), json.dumps(NODE2).encode())
    store.put("/l3fabric/ipam/blocks/100.64.0.0-26", b'{"node": "node1", "allocations": {}}')
    store.put("/l3fabric/workloads/node1/web", '{"name": "web", "note": "café"}'.encode())
    store.put("/l3fabric/extra/blob", b"\xff\x00\x01")
    store.put("/l3fabricx/not-ours", b"outside the prefix")
    return store


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def export(tmp_path: Path, capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, Any]:
    code, out, err = run(["datastore", "export", "--datastore-path", str(store)], capsys)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def write(tmp_path: Path, document: Any, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_export_lists_every_key_under_the_prefix_with_its_encoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "src").close()
    document = export(tmp_path, capsys, tmp_path / "src")
    assert document["format"] == "l3fabric-datastore-export"
    assert document["version"] == 1 and document["prefix"] == "/l3fabric"
    assert document["source"]["type"] == "file" and document["source"]["revision"] >= 6
    entries = {e["key"]: e for e in document["keys"]}
    assert sorted(entries) == [
        "/l3fabric/extra/blob",
        "/l3fabric/ipam/blocks/100.64.0.0-26",
        "/l3fabric/nodes/node1",
        "/l3fabric/nodes/node2",
        "/l3fabric/workloads/node1/web",
    ]
    assert entries["/l3fabric/extra/blob"]["encoding"] == "base64"
    assert base64.b64decode(entries["/l3fabric/extra/blob"]["value"]) == b"\xff\x00\x01"
    assert entries["/l3fabric/workloads/node1/web"]["encoding"] == "utf-8"
    assert "café" in entries["/l3fabric/workloads/node1/web"]["value"]
    assert entries["/l3fabric/nodes/node1"]["leased"] is True
    assert "leased" not in entries["/l3fabric/nodes/node2"]


def test_import_into_an_empty_store_writes_everything_but_leased_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "src").close()
    path = write(tmp_path, export(tmp_path, capsys, tmp_path / "src"))
    code, out, err = run(
        ["datastore", "import", str(path), "--datastore-path", str(tmp_path / "dst")], capsys
    )
    assert code == 0, err
    assert "wrote 4 keys" in out and "skipped 1 leased" in out
    src, dst = FileDatastore(tmp_path / "src"), FileDatastore(tmp_path / "dst")
    try:
        want = {kv.key: kv.value for kv in src.list("/l3fabric/") if not kv.lease}
        got = {kv.key: kv.value for kv in dst.list("/")}
        assert got == want
        assert all(kv.lease == 0 for kv in dst.list("/"))
    finally:
        src.close()
        dst.close()


def test_import_refuses_a_store_that_has_keys_unless_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "src").close()
    path = write(tmp_path, export(tmp_path, capsys, tmp_path / "src"))
    target = FileDatastore(tmp_path / "dst")
    target.put("/l3fabric/ipam/blocks/100.64.0.0-26", b'{"node": "node1", "allocations": {}}')
    target.close()
    argv = ["datastore", "import", str(path), "--datastore-path", str(tmp_path / "dst")]
    code, out, err = run(argv, capsys)
    assert code == 1 and out == ""
    assert "already has 1 keys under /l3fabric/" in err and "--merge" in err
    code, out, err = run([*argv, "--merge"], capsys)
    assert code == 0, err
    assert "wrote 3 keys" in out and "1 keys were already there" in out


def test_merge_refuses_different_values_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "src").close()
    path = write(tmp_path, export(tmp_path, capsys, tmp_path / "src"))
    target = FileDatastore(tmp_path / "dst")
    target.put("/l3fabric/ipam/blocks/100.64.0.0-26", b'{"node": "node9", "allocations": {}}')
    before = target.revision()
    target.close()
    code, _out, err = run(
        ["datastore", "import", str(path), "--merge", "--datastore-path", str(tmp_path / "dst")],
        capsys,
    )
    assert code == 1
    assert "/l3fabric/ipam/blocks/100.64.0.0-26" in err and "nothing was written" in err
    target = FileDatastore(tmp_path / "dst")
    assert target.revision() == before
    target.close()


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filled(tmp_path / "src").close()
    path = write(tmp_path, export(tmp_path, capsys, tmp_path / "src"))
    code, out, _err = run(
        ["datastore", "import", str(path), "--dry-run", "--datastore-path", str(tmp_path / "d")],
        capsys,
    )
    assert code == 0 and "would write 4 keys" in out
    target = FileDatastore(tmp_path / "d")
    assert target.list("/") == []
    target.close()


def test_import_moves_keys_to_another_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "src").close()
    path = write(tmp_path, export(tmp_path, capsys, tmp_path / "src"))
    argv = ["datastore", "import", str(path), "--prefix", "/fabric2"]
    code, _, err = run([*argv, "--datastore-path", str(tmp_path / "dst")], capsys)
    assert code == 0, err
    target = FileDatastore(tmp_path / "dst")
    assert {kv.key for kv in target.list("/")} == {
        "/fabric2/extra/blob",
        "/fabric2/ipam/blocks/100.64.0.0-26",
        "/fabric2/nodes/node2",
        "/fabric2/workloads/node1/web",
    }
    target.close()


def good_document() -> dict[str, Any]:
    return {
        "format": "l3fabric-datastore-export",
        "version": 1,
        "prefix": "/l3fabric",
        "keys": [{"key": "/l3fabric/extra/a", "encoding": "utf-8", "value": "x"}],
    }


def entry(**fields: Any) -> dict[str, Any]:
    return {"key": "/l3fabric/extra/a", "encoding": "utf-8", "value": "x", **fields}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something"}, "format: must be 'l3fabric-datastore-export'"),
        ({"version": 2}, "version: 2 is newer than this l3fabric reads (1)"),
        ({"version": "1"}, "version: '1' must be 1"),
        ({"prefix": "l3fabric"}, "prefix: 'l3fabric' must be a key prefix"),
        ({"keys": {}}, "keys: missing, or not a list"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"keys": [entry(key="/elsewhere/a")]}, "keys[0].key: /elsewhere/a is not under"),
        ({"keys": [entry(key="/l3fabric/a b")]}, "keys[0].key: key '/l3fabric/a b' contains"),
        ({"keys": [entry(encoding="hex")]}, "keys[0].encoding: must be one of utf-8, base64"),
        ({"keys": [entry(encoding="base64", value="@@")]}, "keys[0].value: is not valid base64"),
        ({"keys": [entry(value=3)]}, "keys[0].value: missing, or not a string"),
        ({"keys": [entry(leased="yes")]}, "keys[0].leased: must be true or false"),
        ({"keys": [entry(ttl=3)]}, "keys[0].ttl: unknown field"),
        ({"keys": [entry(), entry()]}, "keys[1].key: /l3fabric/extra/a appears more than once"),
        (
            {"keys": [entry(key="/l3fabric/nodes/n1", value="[1]")]},
            "keys[0].value: /l3fabric/nodes/n1 holds a record, which must be a JSON object",
        ),
    ],
)
def test_a_bad_file_is_exit_2_naming_the_field_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, {**good_document(), **change})
    code, out, err = run(
        ["datastore", "import", str(path), "--datastore-path", str(tmp_path / "d")], capsys
    )
    assert code == 2 and out == ""
    assert f"{path}: {message}" in err
    assert not (tmp_path / "d").exists() or FileDatastore(tmp_path / "d").list("/") == []


def test_every_problem_of_a_file_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [entry(key="/l3fabric/extra/ok"), entry(encoding="zip"), entry(key="relative")]
    path = write(tmp_path, {**good_document(), "keys": bad})
    code, _, err = run(["datastore", "import", str(path), "--datastore-path", "/x"], capsys)
    assert code == 2
    assert "keys[1].encoding" in err and "keys[2].key" in err


def test_unreadable_and_non_json_files_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["datastore", "import", str(tmp_path / "none.json"), "--datastore-path", "/x"], capsys
    )
    assert code == 2 and "cannot read" in err
    path = write(tmp_path, "{not json")
    code, _, err = run(["datastore", "import", str(path), "--datastore-path", "/x"], capsys)
    assert code == 2 and "not JSON" in err


@settings(deadline=None, max_examples=50)
@given(
    st.dictionaries(
        st.from_regex(r"/l3fabric/extra/[a-z0-9]{1,8}", fullmatch=True),
        st.binary(max_size=64),
        max_size=8,
    )
)
def test_any_values_survive_the_document(values: dict[str, bytes]) -> None:
    kvs = [KeyValue(k, v, version=i + 1) for i, (k, v) in enumerate(values.items())]
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    document = cli_datastore.export_document(
        kvs, prefix="/l3fabric", source="file", revision=len(kvs), now=now
    )
    parsed = cli_datastore.parse_export(json.dumps(document), "f")
    assert {e.key: e.value for e in parsed.entries} == values
    assert document["exported_at"] == "2024-01-01T00:00:00Z"


def test_nodes_lists_records_with_their_lease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filled(tmp_path / "s").close()
    code, out, err = run(["nodes", "--datastore-path", str(tmp_path / "s")], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "AS", "IPV4", "IPV6", "LEASE"]
    assert lines[1].split()[:4] == ["node1", "64512", "198.18.0.1", "fd00:198:18::1"]
    assert lines[1].split()[4].endswith("s")
    assert lines[2].split() == ["node2", "64513", "198.18.0.2", "-", "no", "lease"]
    code, out, _ = run(["nodes", "-o", "json", "--datastore-path", str(tmp_path / "s")], capsys)
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["node1", "node2"]
    assert rows[0]["leased"] is True and 0 < rows[0]["lease_ttl"] <= 60
    assert rows[1]["leased"] is False and rows[1]["lease_ttl"] is None
    code, out, _ = run(["nodes", "-o", "yaml", "--datastore-path", str(tmp_path / "s")], capsys)
    as_yaml = yaml.safe_load(out)
    assert [{**r, "lease_ttl": None} for r in as_yaml] == [{**r, "lease_ttl": None} for r in rows]


def test_nodes_on_an_empty_store_and_an_unreadable_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["nodes", "--datastore-path", str(tmp_path / "s")], capsys)
    assert code == 0 and "no nodes registered" in out
    store = FileDatastore(tmp_path / "s")
    store.put("/l3fabric/nodes/broken", b"{")
    store.close()
    code, out, _ = run(["nodes", "-o", "json", "--datastore-path", str(tmp_path / "s")], capsys)
    (row,) = json.loads(out)
    assert row["name"] == "broken" and "unreadable node record" in row["error"]


def test_the_store_from_a_node_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    filled(tmp_path / "s").close()
    config = {
        "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
        "pools": [{"cidr": "100.64.0.0/16"}],
        "datastore": {"type": "file", "path": str(tmp_path / "s")},
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, err = run(["nodes", "--config", str(path)], capsys)
    assert code == 0, err
    assert "node1" in out and "node2" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nodes"], "name the datastore"),
        (["nodes", "--datastore-type", "etcd"], "needs --endpoints"),
        (["nodes", "--config", "/c.yaml", "--endpoints", "http://a:2379"], "not both"),
        (["nodes", "--endpoints", "a:2379"], "a:2379"),
        (["nodes", "--config", "/nonexistent/node.yaml"], "/nonexistent/node.yaml"),
    ],
)
def test_naming_the_store_badly_is_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in err


def test_an_unreachable_etcd_is_exit_1_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    code, out, err = run(["nodes", "--endpoints", "http://127.0.0.1:9"], capsys)
    assert code == 1 and out == ""
    assert "etcd http://127.0.0.1:9" in err
