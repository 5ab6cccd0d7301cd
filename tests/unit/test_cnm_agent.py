"""The agent's cnm.* methods at their seams: a fake kernel, a real file
datastore and IPAM. libnetwork's order for a container, its reverse, and
the refusals, each naming what is wrong."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from l3fabric.agent import cnm
from l3fabric.agent.server import RequestError
from l3fabric.agent.workloads import WorkloadManager
from l3fabric.config import PoolConfig
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.allocator import Ipam
from tests.fakes import FakeKernel

POOLS = [
    PoolConfig(ipaddress.ip_network("100.64.0.0/24"), 28),
    PoolConfig(ipaddress.ip_network("fd00:64::/120"), 124),
]
NID = "n" * 64
EID = "e" * 64


def make_agent(tmp_path: Path, store_type: str = "file") -> Any:
    store = FileDatastore(tmp_path / "store")
    ipam = Ipam(store, "node1", POOLS)
    kernel = FakeKernel()
    workloads = WorkloadManager(
        node="node1",
        store=store,
        ipam=ipam,
        dataplane=kernel,  # type: ignore[arg-type]
        keys=KeyLayout(),
    )
    return SimpleNamespace(
        ipam=ipam,
        workloads=workloads,
        kernel=kernel,
        status=lambda: {"datastore": {"type": store_type}},
    )


def call(agent: Any, method: str, **params: Any) -> Any:
    table = cnm.cnm_handlers(agent, mapped=lambda h: h, guarded=lambda h: h)
    return table[method](params)


def test_a_container_from_request_address_to_docker_rm(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    v4 = call(agent, "cnm.request_pool", pool="", v6=False)
    v6 = call(agent, "cnm.request_pool", pool="fd00:64::/120", v6=True)
    assert v4 == {
        "pool_id": "l3fabric:100.64.0.0/24",
        "pool": "100.64.0.0/24",
        "data": {"com.docker.network.gateway": "169.254.1.1/32"},
    }
    call(
        agent,
        "cnm.create_network",
        network_id=NID,
        options={"com.docker.network.enable_ipv6": True},
        ipv4_data=[{"pool": v4["pool"], "gateway": v4["data"]["com.docker.network.gateway"]}],
        ipv6_data=[{"pool": v6["pool"], "gateway": v6["data"]["com.docker.network.gateway"]}],
    )
    a4 = call(agent, "cnm.request_address", pool_id=v4["pool_id"], address="")["address"]
    a6 = call(agent, "cnm.request_address", pool_id=v6["pool_id"], address="")["address"]
    assert a4.endswith("/32") and a6.endswith("/128")
    call(agent, "cnm.create_endpoint", network_id=NID, endpoint_id=EID, address=a4, address_ipv6=a6)
    name = cnm.endpoint_name(EID)
    held = {str(a) for a in agent.ipam.addresses_of(name)}
    assert held == {a4.split("/")[0], a6.split("/")[0]}
    # A retried CreateEndpoint finds its addresses already moved.
    call(agent, "cnm.create_endpoint", network_id=NID, endpoint_id=EID, address=a4, address_ipv6=a6)

    sandbox = str(tmp_path / "netns" / "sandbox")  # Docker makes it after the Join
    result = call(agent, "cnm.join", network_id=NID, endpoint_id=EID, sandbox_key=sandbox)
    assert result["src_name"] == cnm.runtime_ifname(name)
    assert result["dst_prefix"] == "eth"
    assert result["gateway"] == "169.254.1.1"
    assert result["gateway_ipv6"] == "fe80::1"
    assert {"destination": "169.254.1.1/32", "route_type": 1} in result["static_routes"]
    (workload,) = agent.workloads.list()
    assert (workload.owner, workload.container_id, workload.netns) == ("cnm", EID, sandbox)
    assert dict(workload.labels) == {"docker.network": NID}
    assert agent.kernel.runtime_ifnames[workload.host_iface] == result["src_name"]

    with pytest.raises(RequestError, match="already joined"):
        call(agent, "cnm.join", network_id=NID, endpoint_id=EID, sandbox_key=sandbox)
    info = call(agent, "cnm.endpoint_info", network_id=NID, endpoint_id=EID)
    assert info["host_iface"] == workload.host_iface

    call(agent, "cnm.leave", network_id=NID, endpoint_id=EID)
    assert agent.workloads.list() == []
    assert agent.ipam.addresses_of(name) == ()
    with pytest.raises(RequestError, match="not joined"):
        call(agent, "cnm.leave", network_id=NID, endpoint_id=EID)
    call(agent, "cnm.delete_endpoint", network_id=NID, endpoint_id=EID)
    call(agent, "cnm.release_address", pool_id=v4["pool_id"], address=a4.split("/")[0])
    assert agent.ipam.show()["totals"]["used"] == 0


def test_release_address_gives_back_a_reservation_never_joined(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    pool_id = call(agent, "cnm.request_pool", pool="100.64.0.0/25")["pool_id"]
    assert pool_id == "l3fabric:100.64.0.0/24"  # the pool that contains the subnet
    got = call(agent, "cnm.request_address", pool_id=pool_id, address="100.64.0.9")
    assert got == {"address": "100.64.0.9/32"}
    with pytest.raises(RequestError, match=r"100\.64\.0\.9 is already requested"):
        call(agent, "cnm.request_address", pool_id=pool_id, address="100.64.0.9")
    call(agent, "cnm.release_address", pool_id=pool_id, address="100.64.0.9")
    assert agent.ipam.show()["totals"]["used"] == 0


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "cnm.request_pool",
            {"pool": "10.9.0.0/16"},
            "outside every l3fabric pool .*100.64.0.0/24",
        ),
        ("cnm.request_pool", {"pool": "100.64.0.0/24", "sub_pool": "100.64.0.0/25"}, "ip-range"),
        ("cnm.request_pool", {"options": {"x": "y"}}, "ipam-opt"),
        (
            "cnm.request_address",
            {
                "pool_id": "l3fabric:100.64.0.0/24",
                "options": {"RequestAddressType": "com.docker.network.gateway"},
            },
            "--gateway",
        ),
        ("cnm.request_address", {"pool_id": "default/10.0.0.0/8"}, "pool id"),
        (
            "cnm.create_network",
            {
                "network_id": NID,
                "ipv4_data": [{"pool": "100.64.0.0/24", "gateway": "100.64.0.1/24"}],
            },
            "--ipam-driver l3fabric",
        ),
        (
            "cnm.create_network",
            {"network_id": NID, "options": {"com.docker.network.generic": {"mtu": "1400"}}},
            "mtu",
        ),
        (
            "cnm.create_network",
            {"network_id": NID, "options": {"com.docker.network.internal": True}},
            "internal",
        ),
        (
            "cnm.create_endpoint",
            {"network_id": NID, "endpoint_id": EID, "address": "100.64.0.5/24"},
            "not assigned by l3fabric",
        ),
        ("cnm.join", {"network_id": NID, "endpoint_id": EID, "sandbox_key": "/x"}, "not created"),
    ],
)
def test_refusals_name_what_is_wrong(
    tmp_path: Path, method: str, params: dict[str, Any], message: str
) -> None:
    agent = make_agent(tmp_path)
    with pytest.raises(RequestError, match=message):
        call(agent, method, **params)
    assert agent.workloads.list() == []
    assert agent.ipam.show()["totals"]["used"] == 0


def test_scope_follows_the_datastore(tmp_path: Path) -> None:
    assert call(make_agent(tmp_path / "a"), "cnm.capabilities") == {"scope": "local"}
    assert call(make_agent(tmp_path / "b", "etcd"), "cnm.capabilities") == {"scope": "global"}
