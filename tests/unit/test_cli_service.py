"""`l3fabric service add|list|show|del` against a file datastore, with
endpoint records written as an agent would (agent/discovery.py)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from l3fabric.agent.discovery import Discovery
from l3fabric.cli.main import main
from l3fabric.config import DiscoveryConfig
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceSpec
from l3fabric.datastore.skydns import service_prefix
from l3fabric.model import Workload


class Counter:
    def inc(self, amount: float = 1) -> None:
        raise AssertionError("no datastore error expected")


def run(capsys: pytest.CaptureFixture[str], store: Path, *args: str) -> tuple[int, str, str]:
    code = main(["service", *args, "--datastore-path", str(store)])
    out, err = capsys.readouterr()
    return code, out, err


def agent_endpoints(store_path: Path) -> None:
    """Node1's agent, two workloads labelled app=web, one app=db."""
    store = FileDatastore(store_path)
    lease = store.grant_lease(60)
    workloads = [
        Workload(n, "node1", f"/run/netns/{n}", (ipaddress.ip_address(a),), labels=(("app", app),))
        for n, a, app in (
            ("w0", "100.64.0.5", "web"),
            ("w1", "100.64.0.6", "web"),
            ("d0", "100.64.0.7", "db"),
        )
    ]
    discovery = Discovery(
        store,
        DiscoveryConfig(),
        KeyLayout(),
        workloads=lambda: workloads,
        lease=lambda: lease,
        errors=Counter(),
        present=lambda w: True,
    )
    discovery.resync(workloads, ())
    store.close()


def test_add_show_list_del(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out, _ = run(
        capsys, store, "add", "web", "--selector", "app=web", "--port", "http:80/tcp", "-o", "json"
    )
    assert code == 0
    assert json.loads(out)["dns_name"] == "web.default.svc.l3fabric.internal"
    agent_endpoints(store)
    code, out, _ = run(capsys, store, "show", "web", "-o", "json")
    shown: dict[str, Any] = json.loads(out)
    assert code == 0 and shown["selector"] == {"app": "web"}
    assert shown["ports"] == [{"name": "http", "port": 80, "protocol": "tcp"}]
    assert shown["endpoints"] == {
        "addresses": ["100.64.0.5", "100.64.0.6"],
        "targets": ["w0.default.l3fabric.internal", "w1.default.l3fabric.internal"],
    }
    code, out, _ = run(capsys, store, "list")
    assert code == 0 and "app=web" in out and "100.64.0.5,100.64.0.6" in out
    code, out, _ = run(capsys, store, "del", "web")
    assert code == 0
    ds = FileDatastore(store)
    assert ds.list("/l3fabric/services/") == [] and ds.list(service_prefix("web")) == []
    ds.close()
    code, _, err = run(capsys, store, "show", "web")
    assert code == 1 and "no service default/web" in err


def test_add_again_is_idempotent_and_a_different_one_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    args = ("add", "web", "--namespace", "shop", "--selector", "app=web")
    assert run(capsys, store, *args)[0] == 0
    assert run(capsys, store, *args)[0] == 0
    code, _, err = run(capsys, store, "add", "web", "--namespace", "shop", "--selector", "app=x")
    assert code == 1 and "exists with another definition" in err
    ds = FileDatastore(store)
    kv = ds.get(KeyLayout().service("shop", "web"))
    assert kv is not None and ServiceSpec.decode(kv.value).selector == (("app", "web"),)
    ds.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "Web", "--selector", "app=web"), "service name 'Web' is not a DNS label"),
        (("add", "web", "--selector", "app"), "expected KEY=VALUE"),
        (("add", "web", "--selector", "app=web", "--port", "http:0"), "not in 1..65535"),
        (("add", "web", "--selector", "app=web", "--port", "http:80/icmp"), "protocol"),
        (("add", "web", "--namespace", "svc", "--selector", "a=b"), "reserved"),
        (
            ("add", "web", "--selector", "a=b", "--port", "h:80", "--port", "h:81"),
            "given twice",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, tmp_path / "store", *args)
    assert code == 2 and message in err


def test_list_without_services(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, tmp_path / "store", "list", "-o", "json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize("label", ["app", "app=we b", "=web", "a=b,c"])
def test_workload_add_refuses_a_bad_label_before_asking_the_agent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, label: str
) -> None:
    code = main(
        [
            "workload",
            "add",
            "w0",
            "--netns",
            "w0",
            "--label",
            label,
            "--socket",
            str(tmp_path / "none.sock"),
        ]
    )
    assert code == 2 and "--label" in capsys.readouterr().err
