"""The CNI codec: network configuration, environment and results as the
specification (1.1.0, 1.0.0, 0.4.0) defines them, and the error codes a
runtime gets for each kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from l3fabric import control
from l3fabric.cni import errors
from l3fabric.cni.conflist import parse_conflist, plugin_stdin
from l3fabric.cni.env import parse_args, parse_env
from l3fabric.cni.errors import CniError
from l3fabric.cni.netconf import Attachment, DnsConfig, parse_netconf
from l3fabric.cni.result import from_agent, parse_result

FIXTURES = Path(__file__).parent / "fixtures" / "cni"
DNS = DnsConfig(
    ("10.96.0.10",),
    "cluster.local",
    ("default.svc.cluster.local", "svc.cluster.local"),
    ("ndots:5",),
)


def conf(**fields: Any) -> bytes:
    base: dict[str, Any] = {"cniVersion": "1.1.0", "name": "l3fabric", "type": "l3fabric"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def code_of(call: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(CniError) as info:
        call(*args)
    return info.value.code, info.value.details


def agent_reply() -> dict[str, Any]:
    reply: dict[str, Any] = json.loads((FIXTURES / "agent-add-reply.json").read_text())
    return reply


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0"])
def test_add_result_has_each_versions_shape(version: str) -> None:
    result = from_agent(agent_reply(), DNS)
    golden = json.loads((FIXTURES / f"result-{version}.json").read_text())
    assert result.to_dict(version) == golden


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0"])
def test_a_result_reads_back_as_prev_result(version: str) -> None:
    golden = json.loads((FIXTURES / f"result-{version}.json").read_text())
    assert parse_result(golden).to_dict(version) == golden


def test_a_chained_result_keeps_the_earlier_interfaces_first() -> None:
    earlier = parse_result(json.loads((FIXTURES / "result-1.0.0.json").read_text()))
    chained = from_agent(agent_reply(), DnsConfig()).after(earlier)
    out = chained.to_dict("1.0.0")
    assert len(out["interfaces"]) == 4
    assert [ip["interface"] for ip in out["ips"]] == [1, 1, 3, 3]
    assert out["dns"] == earlier.dns.to_dict()


def test_prev_result_with_fields_of_later_plugins_is_accepted() -> None:
    golden = json.loads((FIXTURES / "result-1.1.0.json").read_text())
    golden["interfaces"][1]["mtu"] = 1450
    golden["interfaces"][1]["socketPath"] = "/x"
    golden["routes"][0]["priority"] = 5
    assert parse_result(golden).interfaces[1].mtu == 1450


def test_bad_agent_reply_is_an_agent_failure() -> None:
    reply = agent_reply()
    reply["ips"][0]["address"] = "100.64.0.5"
    code, details = code_of(from_agent, reply, DnsConfig())
    assert code == errors.AGENT_FAILED and "ips[0].address" in details


def test_full_config_parses() -> None:
    parsed = parse_netconf(
        conf(
            socket="/run/l3f/agent.sock",
            pools=["100.64.0.0/16", "fd00:64:0::/48"],
            dns={"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            runtimeConfig={"portMappings": []},
            args={"cni": {"labels": [{"key": "app", "value": "web"}]}},
            someOtherTool={"anything": 1},
        )
    )
    assert parsed.socket == Path("/run/l3f/agent.sock")
    assert parsed.pools == ("100.64.0.0/16", "fd00:64::/48")
    assert parsed.dns.nameservers == ("10.96.0.10",)
    assert parsed.labels == (("app", "web"),)
    assert parsed.runtime_config == {"portMappings": []}
    assert parsed.valid_attachments is None


def test_socket_defaults_to_the_clis_default() -> None:
    assert parse_netconf(conf()).socket == control.DEFAULT_SOCKET


def test_gc_attachments_are_the_union_of_both_keys() -> None:
    parsed = parse_netconf(
        conf(
            **{
                "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                "cni.dev/attachments": [
                    {"containerID": "a", "ifname": "eth0"},
                    {"containerID": "b", "ifname": "net1"},
                ],
            }
        )
    )
    assert parsed.valid_attachments == (Attachment("a", "eth0"), Attachment("b", "net1"))


@pytest.mark.parametrize(
    ("data", "code", "names"),
    [
        (b"{not json", errors.DECODING_FAILURE, "JSON"),
        (b"[1, 2]", errors.DECODING_FAILURE, "object"),
        (conf(cniVersion=...), errors.INVALID_NETWORK_CONFIG, "cniVersion"),
        (conf(cniVersion=1), errors.INVALID_NETWORK_CONFIG, "cniVersion"),
        (conf(cniVersion="0.3.1"), errors.INCOMPATIBLE_VERSION, "0.3.1"),
        (conf(cniVersion="2.0.0"), errors.INCOMPATIBLE_VERSION, "2.0.0"),
        (conf(name=...), errors.INVALID_NETWORK_CONFIG, "name"),
        (conf(name="-bad"), errors.INVALID_NETWORK_CONFIG, "name"),
        (conf(type=...), errors.INVALID_NETWORK_CONFIG, "type"),
        (conf(type=7), errors.INVALID_NETWORK_CONFIG, "type"),
        (conf(socket="relative.sock"), errors.INVALID_NETWORK_CONFIG, "socket"),
        (conf(socket=5), errors.INVALID_NETWORK_CONFIG, "socket"),
        (conf(pools="100.64.0.0/16"), errors.INVALID_NETWORK_CONFIG, "pools"),
        (conf(pools=[]), errors.INVALID_NETWORK_CONFIG, "pools"),
        (conf(pools=["100.64.0.1/16"]), errors.INVALID_NETWORK_CONFIG, "pools[0]"),
        (conf(pools=["a", "b"]), errors.INVALID_NETWORK_CONFIG, "pools[0]"),
        (conf(dns=[]), errors.INVALID_NETWORK_CONFIG, "dns"),
        (conf(dns={"nameservers": "1.1.1.1"}), errors.INVALID_NETWORK_CONFIG, "nameservers"),
        (conf(dns={"nameservers": ["x"]}), errors.INVALID_NETWORK_CONFIG, "nameservers[0]"),
        (conf(dns={"servers": ["1.1.1.1"]}), errors.UNSUPPORTED_FIELD, "dns.servers"),
        (conf(ipam={"type": "host-local"}), errors.UNSUPPORTED_FIELD, "ipam"),
        (conf(runtimeConfig=[]), errors.INVALID_NETWORK_CONFIG, "runtimeConfig"),
        (conf(prevResult="x"), errors.INVALID_NETWORK_CONFIG, "prevResult"),
        (conf(args={"cni": {"labels": {}}}), errors.INVALID_NETWORK_CONFIG, "labels"),
        (
            conf(**{"cni.dev/valid-attachments": [{"containerID": "a"}]}),
            errors.INVALID_NETWORK_CONFIG,
            "ifname",
        ),
    ],
)
def test_bad_config_gives_the_specs_code_naming_the_key(data: bytes, code: int, names: str) -> None:
    got, details = code_of(parse_netconf, data)
    assert (got, names in details) == (code, True), details


def env(**overrides: str | None) -> dict[str, str]:
    base: dict[str, str | None] = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "3f6940ab5ab4",
        "CNI_NETNS": "/var/run/netns/cni-1234",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_environment_parses_with_the_pod_identity() -> None:
    parsed = parse_env(env())
    assert (parsed.pod_name, parsed.pod_namespace) == ("web-0", "default")
    assert parsed.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert parse_env(env(CNI_ARGS=None)).pod_name is None


@pytest.mark.parametrize(
    ("overrides", "code", "names"),
    [
        ({"CNI_COMMAND": None}, errors.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_COMMAND": "FROB"}, errors.INVALID_ENVIRONMENT, "CNI_COMMAND"),
        ({"CNI_NETNS": None}, errors.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_NETNS": "netns/x"}, errors.INVALID_ENVIRONMENT, "CNI_NETNS"),
        ({"CNI_CONTAINERID": None}, errors.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "_x"}, errors.INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": None}, errors.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a" * 16}, errors.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_IFNAME": "eth:0"}, errors.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_IFNAME": ".."}, errors.INVALID_ENVIRONMENT, "CNI_IFNAME"),
        ({"CNI_PATH": None}, errors.INVALID_ENVIRONMENT, "CNI_PATH"),
        ({"CNI_ARGS": "K8S_POD_NAME"}, errors.DECODING_FAILURE, "CNI_ARGS"),
    ],
)
def test_bad_environment_gives_the_specs_code(
    overrides: dict[str, str | None], code: int, names: str
) -> None:
    got, details = code_of(parse_env, env(**overrides))
    assert (got, names in details) == (code, True), details


def test_a_15_character_ifname_is_fine_and_del_needs_no_netns() -> None:
    assert parse_env(env(CNI_IFNAME="a" * 15)).ifname == "a" * 15
    assert parse_env(env(CNI_COMMAND="DEL", CNI_NETNS=None)).netns is None
    assert parse_env({"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}).container_id is None
    assert parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_cni_args_keep_order_and_empty_values() -> None:
    assert parse_args("A=1;;B=;C=x=y") == (("A", "1"), ("B", ""), ("C", "x=y"))


def test_error_object_has_the_specs_fields() -> None:
    error = CniError(errors.TRY_AGAIN_LATER, "agent restarting")
    assert json.loads(error.to_json("1.0.0")) == {
        "cniVersion": "1.0.0",
        "code": 11,
        "msg": "try again later",
        "details": "agent restarting",
    }
    assert errors.from_control("datastore-unavailable", "etcd down").code == 11
    assert errors.from_control("something-new", "?").code == errors.AGENT_FAILED


def test_conflist_gives_each_plugin_its_runtime_stdin() -> None:
    raw = {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "l3fabric",
        "plugins": [
            {"type": "l3fabric"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    parsed = parse_conflist(json.dumps(raw).encode())
    assert parsed.negotiate(("0.4.0", "1.0.0")) == "1.0.0"
    assert parsed.negotiate(("1.0.0", "1.1.0")) == "1.1.0"
    maps = {"portMappings": [{"hostPort": 8080}], "bandwidth": {}}
    second = json.loads(plugin_stdin(parsed, 1, version="1.1.0", runtime_config=maps))
    assert second == {
        "type": "portmap",
        "name": "l3fabric",
        "cniVersion": "1.1.0",
        "runtimeConfig": {"portMappings": [{"hostPort": 8080}]},
    }
    assert parse_netconf(plugin_stdin(parsed, 0)).cni_version == "1.0.0"
    code, _ = code_of(parse_conflist, json.dumps({**raw, "plugins": []}).encode())
    assert code == errors.INVALID_NETWORK_CONFIG
