"""The plugin run as a runtime runs it: the installed executable, the CNI_*
environment and the network configuration on stdin, against a fake agent
answering the control socket's `cni.*` methods."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from l3fabric import control
from l3fabric.cni import install
from l3fabric.cni.install import InstallOptions

FIXTURES = Path(__file__).parent / "fixtures" / "cni"
ADD_REPLY = json.loads((FIXTURES / "agent-add-reply.json").read_text())


@dataclass
class FakeAgent:
    """A unix-socket server answering one request per connection, as the
    agent does; `answers` maps a method to a result or an error."""

    path: Path
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = control.read_message(conn)
                self.calls.append((request["method"], request["params"]))
                answer = self.answers.get(request["method"], {"error": ("bad-request", "no")})
                if isinstance(answer, dict) and "error" in answer:
                    code, message = answer["error"]
                    reply = {"error": {"code": code, "message": message}}
                else:
                    reply = {"result": answer}
                conn.sendall(control.encode(reply))


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[FakeAgent]:
    fake = FakeAgent(tmp_path / "agent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(fake.path))
    server.listen(16)
    thread = threading.Thread(target=fake.serve, args=(server,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=10)


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """The executable `l3fabric cni install` writes."""
    options = InstallOptions(bin_dir=tmp_path / "bin", conf_dir=tmp_path / "net.d")
    install.apply(install.plan(options), options)
    return tmp_path / "bin" / "l3fabric"


@pytest.fixture
def netns(tmp_path: Path) -> Path:
    path = tmp_path / "netns-1234"  # the fake agent never enters it
    path.touch()
    return path


def stdin(sock: Path, version: str = "1.1.0", **extra: Any) -> bytes:
    conf = {"cniVersion": version, "name": "l3fabric", "type": "l3fabric", "socket": str(sock)}
    return json.dumps({**conf, **extra}).encode()


def run(plugin: Path, command: str, data: bytes, **env: str) -> tuple[int, Any]:
    environ = {"CNI_COMMAND": command, "CNI_PATH": str(plugin.parent), **env}
    done = subprocess.run(
        [str(plugin)], input=data, env=environ, capture_output=True, timeout=60, check=False
    )
    out = done.stdout.decode()
    return done.returncode, json.loads(out) if out.strip() else None


def pod_env(netns: Path, **extra: str) -> dict[str, str]:
    return {
        "CNI_CONTAINERID": "3f6940ab5ab4",
        "CNI_NETNS": str(netns),
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        **extra,
    }


def test_version_lists_the_supported_versions(plugin: Path) -> None:
    code, out = run(plugin, "VERSION", b'{"cniVersion": "0.4.0"}')
    assert code == 0
    assert out == {"cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


@pytest.mark.parametrize("version", ["1.1.0", "1.0.0", "0.4.0"])
def test_add_sends_the_contract_params_and_prints_the_result(
    plugin: Path, agent: FakeAgent, netns: Path, version: str
) -> None:
    agent.answers["cni.add"] = {
        **ADD_REPLY,
        "container_interface": {**ADD_REPLY["container_interface"], "sandbox": str(netns)},
    }
    data = stdin(
        agent.path,
        version,
        pools=["100.64.0.0/16"],
        args={"cni": {"labels": [{"key": "app", "value": "web"}]}},
    )
    code, out = run(plugin, "ADD", data, **pod_env(netns))
    assert code == 0, out
    assert agent.calls == [
        (
            "cni.add",
            {
                "container_id": "3f6940ab5ab4",
                "ifname": "eth0",
                "netns": str(netns),
                "pod_name": "web-0",
                "pod_namespace": "default",
                "pools": ["100.64.0.0/16"],
                "labels": {"app": "web"},
            },
        )
    ]
    golden = json.loads((FIXTURES / f"result-{version}.json").read_text())
    golden["interfaces"][1]["sandbox"] = str(netns)
    golden.pop("dns")
    assert out == {**golden, "dns": {}}


def test_add_errors_map_to_cni_codes(plugin: Path, agent: FakeAgent, netns: Path) -> None:
    for control_code, cni_code in [
        ("ipam", 100),
        ("unknown-pool", 108),
        ("conflict", 103),
        ("dataplane", 102),
        ("datastore-unavailable", 11),
        ("internal", 106),
    ]:
        agent.answers["cni.add"] = {"error": (control_code, "said no")}
        code, out = run(plugin, "ADD", stdin(agent.path), **pod_env(netns))
        assert (code, out["code"], out["cniVersion"]) == (1, cni_code, "1.1.0"), out
        assert "said no" in out["details"]


def test_unreachable_agent_is_try_again_later(plugin: Path, tmp_path: Path, netns: Path) -> None:
    prev = json.loads((FIXTURES / "result-1.1.0.json").read_text())
    prev["interfaces"][1]["sandbox"] = str(netns)
    data = stdin(tmp_path / "none.sock", prevResult=prev)
    for command in ("ADD", "DEL", "CHECK"):
        code, out = run(plugin, command, data, **pod_env(netns))
        assert (code, out["code"]) == (1, 11), (command, out)
        assert "cannot reach the l3fabric agent" in out["details"]


def test_missing_netns_on_add_is_unknown_container(
    plugin: Path, agent: FakeAgent, tmp_path: Path
) -> None:
    code, out = run(plugin, "ADD", stdin(agent.path), **pod_env(tmp_path / "gone"))
    assert (code, out["code"]) == (1, 3)
    assert agent.calls == []


@pytest.mark.parametrize(
    ("env", "data", "expected"),
    [
        ({"CNI_NETNS": "relative/ns"}, None, 4),
        ({"CNI_NETNS": ""}, None, 4),
        ({"CNI_IFNAME": "a-very-long-name0"}, None, 4),
        ({}, b"not json", 6),
        ({}, b'{"name": "l3fabric", "type": "l3fabric"}', 7),
        ({}, b'{"cniVersion": "0.2.0", "name": "l3fabric", "type": "l3fabric"}', 1),
    ],
)
def test_bad_input_is_refused_before_the_agent_is_asked(
    plugin: Path,
    agent: FakeAgent,
    netns: Path,
    env: dict[str, str],
    data: bytes | None,
    expected: int,
) -> None:
    code, out = run(plugin, "ADD", data or stdin(agent.path), **{**pod_env(netns), **env})
    assert (code, out["code"]) == (1, expected), out
    assert agent.calls == []


def test_no_command_is_invalid_environment(plugin: Path) -> None:
    done = subprocess.run([str(plugin)], input=b"{}", env={}, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == 4


def test_del_is_idempotent_and_best_effort(plugin: Path, agent: FakeAgent, tmp_path: Path) -> None:
    agent.answers["cni.del"] = {"deleted": False}
    env = pod_env(tmp_path / "gone")
    assert run(plugin, "DEL", stdin(agent.path), **env) == (0, None)
    env.pop("CNI_NETNS")
    assert run(plugin, "DEL", stdin(agent.path), **env) == (0, None)
    agent.answers["cni.del"] = {"error": ("not-found", "never seen")}
    assert run(plugin, "DEL", stdin(agent.path), **env) == (0, None)
    # A gone netns is sent as null: nothing is left to enter.
    assert [params["netns"] for _, params in agent.calls] == [None, None, None]


def test_check_passes_then_names_the_drift(plugin: Path, agent: FakeAgent, netns: Path) -> None:
    prev = json.loads((FIXTURES / "result-1.0.0.json").read_text())
    prev["interfaces"][1]["sandbox"] = str(netns)
    data = stdin(agent.path, "1.0.0", prevResult=prev)
    agent.answers["cni.check"] = {"problems": []}
    assert run(plugin, "CHECK", data, **pod_env(netns)) == (0, None)
    problem = "host route 100.64.0.5/32 via l3f3f6940ab5ab missing"
    agent.answers["cni.check"] = {"problems": [problem]}
    code, out = run(plugin, "CHECK", data, **pod_env(netns))
    assert (code, out["code"], out["details"]) == (1, 104, problem)
    agent.answers["cni.check"] = {"error": ("not-found", "unknown attachment")}
    code, out = run(plugin, "CHECK", data, **pod_env(netns))
    assert (code, out["code"]) == (1, 3)
    assert agent.calls[0] == (
        "cni.check",
        {
            "container_id": "3f6940ab5ab4",
            "ifname": "eth0",
            "netns": str(netns),
            "expected": {
                "mac": "5a:7d:15:4c:0b:01",
                "addresses": ["100.64.0.5/32", "fd00:64::5/128"],
            },
        },
    )


def test_check_needs_a_prev_result_with_this_interface(
    plugin: Path, agent: FakeAgent, netns: Path
) -> None:
    code, out = run(plugin, "CHECK", stdin(agent.path), **pod_env(netns))
    assert (code, out["code"]) == (1, 7) and "prevResult" in out["details"]
    prev = json.loads((FIXTURES / "result-1.1.0.json").read_text())  # another sandbox
    code, out = run(plugin, "CHECK", stdin(agent.path, prevResult=prev), **pod_env(netns))
    assert (code, out["code"]) == (1, 104) and "eth0" in out["details"]
    assert agent.calls == []


def test_gc_sends_the_valid_list_and_reports_failures(plugin: Path, agent: FakeAgent) -> None:
    valid = [{"containerID": "a1", "ifname": "eth0"}]
    data = stdin(agent.path, **{"cni.dev/valid-attachments": valid, "cni.dev/attachments": valid})
    agent.answers["cni.gc"] = {"released": ["cni-b2-eth0"], "errors": []}
    assert run(plugin, "GC", data) == (0, None)
    assert agent.calls == [("cni.gc", {"valid": [{"container_id": "a1", "ifname": "eth0"}]})]
    agent.answers["cni.gc"] = {"released": [], "errors": ["cni-c3-eth0: veth busy"]}
    code, out = run(plugin, "GC", data)
    assert (code, out["code"], out["details"]) == (1, 105, "cni-c3-eth0: veth busy")
    older = stdin(agent.path, **{"cni.dev/attachments": valid})
    agent.answers["cni.gc"] = {"released": [], "errors": []}
    assert run(plugin, "GC", older) == (0, None)


def test_gc_without_a_list_releases_nothing(plugin: Path, agent: FakeAgent) -> None:
    code, out = run(plugin, "GC", stdin(agent.path))
    assert (code, out["code"]) == (1, 7)
    code, out = run(plugin, "GC", stdin(agent.path, "1.0.0", **{"cni.dev/attachments": []}))
    assert (code, out["code"]) == (1, 1)
    assert agent.calls == []


def test_status_reports_readiness(plugin: Path, agent: FakeAgent, tmp_path: Path) -> None:
    status = {"ready": True, "reason": "", "degraded": False, "degraded_reason": ""}
    agent.answers["cni.status"] = status
    assert run(plugin, "STATUS", stdin(agent.path)) == (0, None)
    agent.answers["cni.status"] = {**status, "ready": False, "reason": "datastore not synced"}
    code, out = run(plugin, "STATUS", stdin(agent.path))
    assert (code, out["code"], out["details"]) == (1, 50, "datastore not synced")
    agent.answers["cni.status"] = {**status, "degraded": True, "degraded_reason": "bgp down"}
    code, out = run(plugin, "STATUS", stdin(agent.path))
    assert (code, out["code"], out["details"]) == (1, 51, "bgp down")
    code, out = run(plugin, "STATUS", stdin(tmp_path / "none.sock"))
    assert (code, out["code"]) == (1, 50)


def test_plugin_imports_only_the_standard_library_and_its_own_modules() -> None:
    probe = (
        "import sys; before = set(sys.modules); import l3fabric.cni.plugin; "
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    ours = {m for m in loaded if m == "l3fabric" or m.startswith("l3fabric.")}
    copied = {
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in install.PLUGIN_MODULES
    }
    assert ours == copied, "install.PLUGIN_MODULES must list exactly what the plugin imports"
    stdlib = sys.stdlib_module_names
    foreign = {
        m
        for m in loaded - ours
        if m.split(".")[0].lstrip("_") not in stdlib and m.split(".")[0] not in stdlib
    }
    assert not foreign, f"the plugin imports non-stdlib modules: {sorted(foreign)}"
    for heavy in ("pyroute2", "prometheus_client", "yaml", "jinja2"):
        assert heavy not in loaded
