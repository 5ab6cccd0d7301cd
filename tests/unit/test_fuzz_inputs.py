"""Hostile input at every boundary, generated: the node config, topology
files, control-socket messages and ExaBGP's JSON events. Whatever comes in,
the answer is a clear input error (ConfigError, a control error, ParseError),
never a crash, and nothing already running or stored changes."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from l3fabric import control
from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.server import ControlServer
from l3fabric.bgp import api
from l3fabric.config import ConfigError, load_config, parse_config
from l3fabric.lab.topology import TopologyError, load_topology

SETTINGS = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)

GOOD_CONFIG: dict[str, Any] = {
    "node": {"name": "node1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
    "pools": [{"cidr": "100.64.0.0/16"}],
    "state_dir": "/var/lib/l3fabric",
}
CONFIG_KEYS = ("node", "pools", "state_dir", "datastore", "bgp", "metrics", "ipam", "log")


@SETTINGS
@given(
    key=st.sampled_from(CONFIG_KEYS),
    value=json_values,
)
def test_any_value_at_any_config_key_is_accepted_or_a_config_error(key: str, value: Any) -> None:
    data = json.loads(json.dumps(GOOD_CONFIG))
    data[key] = value
    try:
        parse_config(data, source="fuzz.yaml")
    except ConfigError as exc:
        assert exc.errors and all(line.startswith("fuzz.yaml: ") for line in exc.errors)


@SETTINGS
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_any_config_file_text_is_accepted_or_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_config(str(path))
    except ConfigError as exc:
        assert exc.errors and all(str(path) in line for line in exc.errors)


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"node\.yaml"):
        load_config(str(path))


@SETTINGS
@given(
    section=st.sampled_from(("name", "topology", "mgmt", "linkz", "nodes", "links")),
    value=json_values,
)
def test_any_topology_value_is_loaded_or_a_topology_error(
    tmp_path: Path, section: str, value: Any
) -> None:
    data: dict[str, Any] = {
        "name": "fuzz",
        "topology": {"nodes": {"n1": {"kind": "linux", "image": "l3fabric:latest"}}},
    }
    if section in ("nodes", "links"):
        data["topology"][section] = value
    else:
        data[section] = value
    path = tmp_path / "t.clab.yml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_topology(path)
    except TopologyError as exc:
        assert str(path) in str(exc) or "t.clab.yml" in str(exc)


@SETTINGS
@given(line=st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_any_exabgp_line_parses_or_is_a_parse_error(line: str) -> None:
    try:
        events = api.parse_message(line)
    except api.ParseError:
        return
    assert isinstance(events, list)


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "agent.sock"
    loop = WorkLoop()
    stop = threading.Event()
    calls: list[object] = []

    def echo(params: dict[str, Any]) -> Any:
        calls.append(params)
        return {"ok": True}

    server = ControlServer(path, loop, {"echo": echo})
    server.start()
    thread = threading.Thread(target=loop.run, args=(lambda: not stop.is_set(), lambda: None))
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def raw_exchange(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


@SETTINGS
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode() + b"\n"),
        st.fixed_dictionaries({"method": json_values, "params": json_values}).map(
            lambda v: json.dumps(v).encode() + b"\n"
        ),
    )
)
def test_any_control_message_gets_an_answer_and_the_server_keeps_serving(
    control_server: Path, payload: bytes
) -> None:
    reply = raw_exchange(control_server, payload)
    assert set(reply) <= {"result", "error"} and len(reply) == 1
    if "error" in reply:
        assert reply["error"]["code"] in ("bad-request", "invalid", "internal")
    # The server still answers a good request afterwards.
    assert control.call("echo", {}, socket_path=control_server) == {"ok": True}


def test_a_huge_control_message_is_refused(control_server: Path) -> None:
    payload = b'{"method": "echo", "params": {"x": "' + b"a" * (control.MAX_MESSAGE + 10)
    try:
        reply = raw_exchange(control_server, payload)
    except (ConnectionResetError, BrokenPipeError):
        reply = {"error": {"code": "bad-request"}}
    assert reply["error"]["code"] == "bad-request"
    assert control.call("echo", {}, socket_path=control_server) == {"ok": True}
