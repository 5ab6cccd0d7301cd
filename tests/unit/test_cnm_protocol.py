"""The CNM codec and driver: every libnetwork call decoded into its typed
request and answered in the protocol's shape; bad bodies are HTTP 400 with
an Err naming the field, unknown methods 404, refusals 500 with an Err."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.cnm import protocol as p
from l3fabric.cnm.driver import Driver
from l3fabric.control import ControlError

EID = "a" * 64
NID = "b" * 64


class Agent:
    """A stand-in for the control socket: records calls, answers canned."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers or {}

    def __call__(self, method: str, params: dict[str, Any]) -> Any:
        self.calls.append((method, params))
        answer = self.answers.get(method, {})
        if isinstance(answer, Exception):
            raise answer
        return answer


GOOD_ANSWERS: dict[str, Any] = {
    "cnm.capabilities": {"scope": "local"},
    "cnm.join": {"src_name": "l3fcnm0", "dst_prefix": "eth", "static_routes": []},
    "cnm.request_pool": {"pool_id": "l3fabric:10.0.0.0/8", "pool": "10.0.0.0/8", "data": {}},
    "cnm.request_address": {"address": "10.0.0.1/32"},
}


def call(driver: Driver, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return driver.handle(path, data)


def test_activate_implements_both_drivers() -> None:
    status, answer = Driver(Agent()).handle("/Plugin.Activate", b"")
    assert (status, answer) == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert Driver(Agent()).handle("/Plugin.Activate", b"null\n")[0] == 200


def test_capabilities_come_from_the_agent() -> None:
    agent = Agent({"cnm.capabilities": {"scope": "global"}})
    _status, answer = Driver(agent).handle("/NetworkDriver.GetCapabilities", b"")
    assert answer == {"Scope": "global", "ConnectivityScope": "global"}
    with pytest.raises(ValueError):
        p.CapabilitiesResponse("swarm")


def test_ipam_handshake_is_answered_without_the_agent() -> None:
    agent = Agent()
    driver = Driver(agent)
    assert driver.handle("/IpamDriver.GetCapabilities", b"")[1] == {
        "RequiresMACAddress": False,
        "RequiresRequestReplay": False,
    }
    assert driver.handle("/IpamDriver.GetDefaultAddressSpaces", b"")[1] == {
        "LocalDefaultAddressSpace": "l3fabric-local",
        "GlobalDefaultAddressSpace": "l3fabric-global",
    }
    assert agent.calls == []


def test_unknown_method_is_404_with_an_err() -> None:
    status, answer = Driver(Agent()).handle("/NetworkDriver.AllocateNetwork", b"{}")
    assert status == 404 and "AllocateNetwork" in answer["Err"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/NetworkDriver.Join", b"{not json", "not JSON"),
        ("/NetworkDriver.Join", b"[1, 2]", "list, not an object"),
        ("/NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID}, "SandboxKey is missing"),
        (
            "/NetworkDriver.Join",
            {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "relative"},
            "SandboxKey",
        ),
        (
            "/NetworkDriver.Leave",
            {"NetworkID": NID, "EndpointID": 5},
            "EndpointID must be a string",
        ),
        ("/NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": "../x"}, "EndpointID"),
        (
            "/NetworkDriver.CreateNetwork",
            {"NetworkID": NID, "IPv4Data": {}},
            "IPv4Data must be a list",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            {"NetworkID": NID, "IPv4Data": [{"AddressSpace": "x"}]},
            "IPv4Data[0].Pool is missing",
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            {"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": 1}},
            "Interface.Address must be a string",
        ),
        ("/IpamDriver.RequestPool", {"V6": False}, "AddressSpace is missing"),
        ("/IpamDriver.RequestPool", {"AddressSpace": "a", "V6": "yes"}, "V6 must be true or false"),
        ("/IpamDriver.RequestPool", {"AddressSpace": "a", "SubPool": "10.0.0.0/24"}, "SubPool"),
        ("/IpamDriver.RequestAddress", {"PoolID": "x", "Options": {"k": 1}}, "Options.k"),
        ("/IpamDriver.ReleaseAddress", {"PoolID": "x"}, "Address is missing"),
        ("/NetworkDriver.DiscoverNew", {"DiscoveryType": "1"}, "DiscoveryType"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(path: str, body: Any, field: str) -> None:
    agent = Agent()
    status, answer = call(Driver(agent), path, body)
    assert status == 400
    assert field in answer["Err"]
    assert agent.calls == []


def test_join_answer_has_the_protocols_shape() -> None:
    result = {
        "src_name": "l3fcnm0123456789",
        "dst_prefix": "eth",
        "gateway": "169.254.1.1",
        "gateway_ipv6": "fe80::1",
        "static_routes": [
            {"destination": "169.254.1.1/32", "route_type": 1},
            {"destination": "fe80::1/128", "route_type": 1},
        ],
    }
    agent = Agent({"cnm.join": result})
    status, answer = call(
        Driver(agent),
        "/NetworkDriver.Join",
        {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x"},
    )
    assert status == 200
    assert answer == {
        "InterfaceName": {"SrcName": "l3fcnm0123456789", "DstPrefix": "eth"},
        "Gateway": "169.254.1.1",
        "GatewayIPv6": "fe80::1",
        "StaticRoutes": [
            {"Destination": "169.254.1.1/32", "RouteType": 1},
            {"Destination": "fe80::1/128", "RouteType": 1},
        ],
    }
    assert agent.calls == [
        (
            "cnm.join",
            {"network_id": NID, "endpoint_id": EID, "sandbox_key": "/var/run/docker/netns/x"},
        )
    ]


def test_agent_refusals_are_500_with_its_message() -> None:
    agent = Agent({"cnm.leave": ControlError("not-found", "endpoint aaaa is not joined")})
    status, answer = call(
        Driver(agent), "/NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID}
    )
    assert (status, answer) == (500, {"Err": "endpoint aaaa is not joined"})


def test_create_endpoint_answers_an_empty_interface() -> None:
    agent = Agent()
    status, answer = call(
        Driver(agent),
        "/NetworkDriver.CreateEndpoint",
        {
            "NetworkID": NID,
            "EndpointID": EID,
            "Interface": {"Address": "100.64.0.5/32", "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.endpoint.exposedports": None},
        },
    )
    assert (status, answer) == (200, {})
    assert agent.calls[0][1]["address"] == "100.64.0.5/32"


def test_port_mappings_are_refused_without_the_agent() -> None:
    agent = Agent()
    body = {
        "NetworkID": NID,
        "EndpointID": EID,
        "Options": {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080}]},
    }
    status, answer = call(Driver(agent), "/NetworkDriver.ProgramExternalConnectivity", body)
    assert status == 500 and "NAT" in answer["Err"] and "-p" in answer["Err"]
    body["Options"] = {}
    assert call(Driver(agent), "/NetworkDriver.ProgramExternalConnectivity", body) == (200, {})
    assert agent.calls == []


def test_ipam_calls_go_to_the_agent() -> None:
    agent = Agent(
        {
            "cnm.request_pool": {
                "pool_id": "l3fabric:100.64.0.0/16",
                "pool": "100.64.0.0/16",
                "data": {"com.docker.network.gateway": "169.254.1.1/32"},
            },
            "cnm.request_address": {"address": "100.64.0.7/32"},
        }
    )
    driver = Driver(agent)
    _status, answer = call(driver, "/IpamDriver.RequestPool", {"AddressSpace": "l3fabric-local"})
    assert answer == {
        "PoolID": "l3fabric:100.64.0.0/16",
        "Pool": "100.64.0.0/16",
        "Data": {"com.docker.network.gateway": "169.254.1.1/32"},
    }
    _status, answer = call(
        driver, "/IpamDriver.RequestAddress", {"PoolID": "l3fabric:100.64.0.0/16", "Address": ""}
    )
    assert answer == {"Address": "100.64.0.7/32", "Data": {}}
    assert [m for m, _ in agent.calls] == ["cnm.request_pool", "cnm.request_address"]


@settings(deadline=None, max_examples=300)
@given(
    path=st.sampled_from(Driver(Agent()).methods),
    body=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "NetworkID",
                            "EndpointID",
                            "SandboxKey",
                            "PoolID",
                            "Address",
                            "Options",
                            "Interface",
                            "IPv4Data",
                            "Pool",
                            "AddressSpace",
                            "V6",
                            "DiscoveryType",
                        ]
                    ),
                    children,
                    max_size=6,
                )
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_any_body_gets_an_answer_never_an_exception(path: str, body: bytes) -> None:
    status, answer = Driver(Agent(GOOD_ANSWERS)).handle(path, body)
    assert status in (200, 400)
    assert isinstance(answer, dict)
    if status == 400:
        assert isinstance(answer["Err"], str) and answer["Err"]
