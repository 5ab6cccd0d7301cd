"""The agent's cni.* control methods over a fake kernel, a real file
datastore and IPAM, through handlers() as the control server calls them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from l3fabric.agent.handlers import handlers
from l3fabric.agent.server import Handler, RequestError
from l3fabric.agent.workloads import WorkloadManager
from l3fabric.config import PoolConfig
from l3fabric.datastore.base import DatastoreUnavailable
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.allocator import Ipam
from l3fabric.model import Route, Workload, cni_workload_name, workload_routes
from tests.fakes import CONTAINER_MAC, HOST_MAC, FakeKernel
from tests.nettools import Namespaces

POOLS = [
    PoolConfig(ipaddress.ip_network("100.64.0.0/24"), 28),
    PoolConfig(ipaddress.ip_network("100.65.0.0/24"), 28),
    PoolConfig(ipaddress.ip_network("fd00:64::/64"), 124),
]


@dataclass
class FakeBgp:
    neighbor_count: int = 2
    established: bool = True

    def any_established(self) -> bool:
        return self.established


@dataclass
class FakeAgent:
    """The NodeAgent the handlers see; workload changes program host routes
    straight into the fake kernel (the route table's job in the agent)."""

    workloads: WorkloadManager
    ipam: Ipam
    store: FileDatastore
    kernel: FakeKernel
    keys: KeyLayout = field(default_factory=KeyLayout)
    bgp: FakeBgp | None = None
    ready: bool = True
    datastore_error: str | None = None

    def health(self) -> dict[str, Any]:
        return {"ready": self.ready, "ready_reason": "ok" if self.ready else "no pass yet"}

    def programmed_routes(self) -> list[Route]:
        return self.kernel.dump_routes()


@pytest.fixture
def agent(tmp_path: Path) -> FakeAgent:
    store = FileDatastore(tmp_path / "store")
    kernel = FakeKernel()
    ipam = Ipam(store, "node1", POOLS)

    def on_change(added: Workload | None, gone: Workload | None) -> None:
        if gone is not None:
            kernel.program([], [r.prefix for r in workload_routes(gone)])
        if added is not None:
            kernel.program(workload_routes(added), [])

    manager = WorkloadManager(
        node="node1",
        store=store,
        ipam=ipam,
        dataplane=kernel,
        keys=KeyLayout(),
        on_change=on_change,
    )
    return FakeAgent(manager, ipam, store, kernel)


@pytest.fixture
def api(agent: FakeAgent) -> dict[str, Handler]:
    return handlers(agent)  # type: ignore[arg-type]


@pytest.fixture
def pod(netns: Namespaces) -> str:
    return f"/run/netns/{netns.add('pod')}"


def add_params(netns: str, cid: str = "c0ffee01", **extra: Any) -> dict[str, Any]:
    return {
        "container_id": cid,
        "ifname": "eth0",
        "netns": netns,
        "pod_name": "web-1",
        "pod_namespace": "shop",
        "pools": None,
        "labels": {"app": "web"},
        **extra,
    }


def code_of(api: dict[str, Handler], method: str, params: dict[str, Any]) -> str:
    with pytest.raises(RequestError) as info:
        api[method](params)
    return info.value.code


def test_add_attaches_a_workload_and_answers_the_contract(
    api: dict[str, Handler], agent: FakeAgent, pod: str
) -> None:
    result = api["cni.add"](add_params(pod))
    name = cni_workload_name("c0ffee01", "eth0")
    workload = agent.workloads.get(name)
    assert workload is not None
    assert (workload.owner, workload.pod, workload.namespace, workload.labels) == (
        "cni",
        "web-1",
        "shop",
        (("app", "web"),),
    )
    v4, v6 = (str(a) for a in workload.addresses)
    assert result == {
        "workload": name,
        "host_interface": {"name": workload.host_iface, "mac": HOST_MAC},
        "container_interface": {"name": "eth0", "mac": CONTAINER_MAC, "sandbox": pod},
        "ips": [
            {"address": f"{v4}/32", "gateway": "169.254.1.1"},
            {"address": f"{v6}/128", "gateway": "fe80::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}],
    }
    # Identical again: the same result; anything different: a conflict.
    assert api["cni.add"](add_params(pod)) == result
    assert code_of(api, "cni.add", add_params(pod, pod_name="web-2")) == "conflict"
    assert code_of(api, "cni.add", add_params(pod, labels={"app": "db"})) == "conflict"
    assert code_of(api, "cni.add", add_params(pod, pools=["100.65.0.0/24"])) == "conflict"
    assert agent.workloads.list() == [workload]


def test_pools_restrict_and_an_unknown_one_allocates_nothing(
    api: dict[str, Handler], agent: FakeAgent, pod: str, netns: Namespaces
) -> None:
    result = api["cni.add"](add_params(pod, pools=["100.65.0.0/24"]))
    assert [ip["address"] for ip in result["ips"]] == ["100.65.0.0/32"]
    other = f"/run/netns/{netns.add('pod')}"
    bad = add_params(other, cid="c0ffee02", pools=["100.65.0.0/24", "10.0.0.0/8"])
    with pytest.raises(RequestError) as info:
        api["cni.add"](bad)
    assert info.value.code == "unknown-pool"
    assert "10.0.0.0/8" in info.value.message and "100.64.0.0/24" in info.value.message
    assert agent.workloads.get(cni_workload_name("c0ffee02", "eth0")) is None
    assert agent.ipam.addresses_of(cni_workload_name("c0ffee02", "eth0")) == ()


def test_del_is_idempotent_and_takes_a_null_netns(
    api: dict[str, Handler], agent: FakeAgent, pod: str
) -> None:
    api["cni.add"](add_params(pod))
    name = cni_workload_name("c0ffee01", "eth0")
    key = {"container_id": "c0ffee01", "ifname": "eth0"}
    assert api["cni.del"]({**key, "netns": None}) == {"deleted": True}
    assert api["cni.del"]({**key, "netns": pod}) == {"deleted": False}
    assert agent.workloads.list() == [] and agent.ipam.addresses_of(name) == ()
    assert agent.kernel.links == {} and agent.kernel.routes == {}
    assert code_of(api, "cni.del", {**key, "ifname": "x" * 16, "netns": None}) == "invalid"


def test_check_finds_drift_and_unknown_attachments(
    api: dict[str, Handler], agent: FakeAgent, pod: str
) -> None:
    result = api["cni.add"](add_params(pod))
    key = {"container_id": "c0ffee01", "ifname": "eth0", "netns": pod}
    assert api["cni.check"](key) == {"problems": []}
    expected = {"mac": CONTAINER_MAC, "addresses": [ip["address"] for ip in result["ips"]]}
    assert api["cni.check"]({**key, "expected": expected}) == {"problems": []}
    v4 = ipaddress.ip_network(result["ips"][0]["address"])
    agent.kernel.routes.pop(v4)
    host = result["host_interface"]["name"]
    assert api["cni.check"](key) == {"problems": [f"host route {v4} via {host} missing"]}
    wrong = api["cni.check"]({**key, "expected": {**expected, "mac": "02:00:00:00:00:99"}})
    assert any("02:00:00:00:00:99" in p for p in wrong["problems"])
    observed = agent.kernel.inspect(agent.workloads.list()[0])
    agent.kernel.observed[host] = replace(observed, default_routes=observed.default_routes[1:])
    assert (
        f"default route via 169.254.1.1 dev eth0 missing in {pod}"
        in (api["cni.check"](key)["problems"])
    )
    assert code_of(api, "cni.check", {**key, "container_id": "other"}) == "not-found"


def test_gc_releases_only_cni_attachments_not_in_use(
    api: dict[str, Handler], agent: FakeAgent, pod: str, netns: Namespaces
) -> None:
    # A pod sandbox each: a namespace holds one workload.
    for cid in ("a1", "b2", "c3"):
        sandbox = f"/run/netns/{netns.add('pod')}"
        api["cni.add"](add_params(sandbox, cid=cid) | {"ifname": f"e{cid}"})
    cli = agent.workloads.add("by-hand", f"/run/netns/{netns.add('cli')}")
    valid = [{"container_id": "a1", "ifname": "ea1"}, {"container_id": "c3", "ifname": "ec3"}]
    reply = api["cni.gc"]({"valid": valid})
    assert reply == {"released": [cni_workload_name("b2", "eb2")], "errors": []}
    names = {w.name for w in agent.workloads.list()}
    assert names == {cli.name, cni_workload_name("a1", "ea1"), cni_workload_name("c3", "ec3")}
    # Nothing valid: every CNI attachment goes, the CLI's workload stays.
    assert len(api["cni.gc"]({"valid": []})["released"]) == 2
    assert [w.name for w in agent.workloads.list()] == ["by-hand"]
    assert code_of(api, "cni.gc", {}) == "invalid"


def test_gc_goes_on_past_a_failed_release(
    api: dict[str, Handler],
    agent: FakeAgent,
    netns: Namespaces,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for cid in ("a1", "b2"):
        sandbox = f"/run/netns/{netns.add('pod')}"
        api["cni.add"](add_params(sandbox, cid=cid) | {"ifname": f"e{cid}"})
    failing = cni_workload_name("a1", "ea1")
    real_delete = agent.workloads.delete

    def delete(name: str) -> Workload:
        if name == failing:
            raise OSError("veth busy")
        return real_delete(name)

    monkeypatch.setattr(agent.workloads, "delete", delete)
    reply = api["cni.gc"]({"valid": []})
    assert reply["released"] == [cni_workload_name("b2", "eb2")]
    assert len(reply["errors"]) == 1 and "veth busy" in reply["errors"][0]


def test_status_follows_readiness_and_bgp(api: dict[str, Handler], agent: FakeAgent) -> None:
    ok = {"ready": True, "reason": "ok", "degraded": False, "degraded_reason": ""}
    assert api["cni.status"]({}) == ok
    agent.ready = False
    assert api["cni.status"]({})["ready"] is False
    agent.ready, agent.bgp = True, FakeBgp(established=True)
    assert api["cni.status"]({}) == ok
    agent.bgp = FakeBgp(established=False)
    status = api["cni.status"]({})
    assert status["degraded"] is True and "BGP" in status["degraded_reason"]


def test_a_down_datastore_is_datastore_unavailable(
    api: dict[str, Handler], agent: FakeAgent, pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.datastore_error = "etcd: connection refused"
    assert code_of(api, "cni.add", add_params(pod)) == "datastore-unavailable"
    agent.datastore_error = None

    def down(*args: Any, **kwargs: Any) -> Any:
        raise DatastoreUnavailable("etcd does not answer")

    monkeypatch.setattr(agent.store, "list", down)
    monkeypatch.setattr(agent.workloads, "_cache", None)
    key = {"container_id": "c0ffee01", "ifname": "eth0", "netns": None}
    assert code_of(api, "cni.del", key) == "datastore-unavailable"
