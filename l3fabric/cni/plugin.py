"""The CNI plugin executable (`l3fabric-cni`, installed as `l3fabric` in the
runtime's plugin directory): one CNI command per run, carried out by the
node agent over its control socket (the `cni.*` methods).

Only the standard library, `l3fabric.control` and `l3fabric.cni` are
imported: a runtime starts this for every pod, so start-up time counts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from l3fabric import control
from l3fabric.cni import errors, spec
from l3fabric.cni.env import CniEnv, parse_command, parse_env
from l3fabric.cni.errors import CniError
from l3fabric.cni.netconf import NetConf, parse_netconf, reply_version
from l3fabric.cni.result import from_agent, parse_result

# (method, params, socket path) -> the agent's result; raises ControlError.
Caller = Callable[[str, dict[str, Any], Path], Any]


def agent_call(method: str, params: dict[str, Any], socket_path: Path) -> Any:
    return control.call(method, params, socket_path=socket_path)


def run(environ: Mapping[str, str], stdin: bytes, caller: Caller = agent_call) -> tuple[int, str]:
    """One plugin run: (exit code, stdout text)."""
    try:
        command = parse_command(environ)
        if command == "VERSION":
            return 0, version_info(stdin)
        env = parse_env(environ)
        conf = parse_netconf(stdin)
        return 0, HANDLERS[command](env, conf, caller)
    except CniError as exc:
        return 1, exc.to_json(reply_version(stdin))
    except Exception as exc:  # a bug: still answer the runtime with an error object
        failure = CniError(errors.PLUGIN_FAILED, f"{type(exc).__name__}: {exc}")
        return 1, failure.to_json(reply_version(stdin))


def version_info(stdin: bytes) -> str:
    info = {"cniVersion": reply_version(stdin), "supportedVersions": list(spec.SUPPORTED_VERSIONS)}
    return json.dumps(info)


def _agent(caller: Caller, conf: NetConf, method: str, params: dict[str, Any]) -> Any:
    try:
        return caller(method, params, conf.socket)
    except control.ControlError as exc:
        raise errors.from_control(exc.code, exc.message) from None


def cmd_add(env: CniEnv, conf: NetConf, caller: Caller) -> str:
    assert env.container_id and env.netns and env.ifname
    if not os.path.exists(env.netns):
        raise CniError(errors.UNKNOWN_CONTAINER, f"CNI_NETNS {env.netns} does not exist")
    params = {
        "container_id": env.container_id,
        "ifname": env.ifname,
        "netns": env.netns,
        "pod_name": env.pod_name,
        "pod_namespace": env.pod_namespace,
        "pools": list(conf.pools) if conf.pools is not None else None,
        "labels": dict(conf.labels) or None,
    }
    result = from_agent(_agent(caller, conf, "cni.add", params), conf.dns)
    if conf.prev_result is not None:  # not the first plugin of its chain
        result = result.after(parse_result(conf.prev_result))
    return json.dumps(result.to_dict(conf.cni_version))


def cmd_del(env: CniEnv, conf: NetConf, caller: Caller) -> str:
    """Best effort and idempotent: an attachment the agent does not know, or
    whose netns is gone, is deleted as far as CNI is concerned. An agent that
    cannot be reached is error 11, so the runtime retries rather than
    forgetting addresses that are still assigned."""
    assert env.container_id and env.ifname
    netns = env.netns if env.netns and os.path.exists(env.netns) else None
    params = {"container_id": env.container_id, "ifname": env.ifname, "netns": netns}
    try:
        caller("cni.del", params, conf.socket)
    except control.ControlError as exc:
        if exc.code != "not-found":
            raise errors.from_control(exc.code, exc.message) from None
    return ""


def cmd_check(env: CniEnv, conf: NetConf, caller: Caller) -> str:
    assert env.container_id and env.netns and env.ifname
    if conf.prev_result is None:
        raise spec.fail("prevResult", "is required for CHECK")
    prev = parse_result(conf.prev_result)
    index = prev.container_interface(env.ifname, env.netns)
    if index is None:
        raise CniError(
            errors.CHECK_DRIFT, f"prevResult has no interface {env.ifname} in {env.netns}"
        )
    if not any(ip.interface == index for ip in prev.ips):
        raise CniError(errors.CHECK_DRIFT, f"prevResult has no address on {env.ifname}")
    if not os.path.exists(env.netns):
        raise CniError(errors.UNKNOWN_CONTAINER, f"CNI_NETNS {env.netns} does not exist")
    # What the runtime was told at ADD must still hold, besides the record.
    expected = {
        "mac": prev.interfaces[index].mac,
        "addresses": [ip.address.with_prefixlen for ip in prev.ips if ip.interface == index],
    }
    params = {
        "container_id": env.container_id,
        "ifname": env.ifname,
        "netns": env.netns,
        "expected": expected,
    }
    reply = _agent(caller, conf, "cni.check", params)
    problems = reply.get("problems") if isinstance(reply, dict) else None
    if not isinstance(problems, list):
        raise CniError(errors.AGENT_FAILED, f"unexpected cni.check reply: {reply!r}")
    if problems:
        raise CniError(errors.CHECK_DRIFT, "; ".join(str(p) for p in problems))
    return ""


def _needs_1_1(conf: NetConf, command: str) -> None:
    if not spec.at_least(conf.cni_version, spec.GC_STATUS_VERSION):
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            f"{command} needs cniVersion {spec.GC_STATUS_VERSION} or later, not {conf.cni_version}",
        )


def cmd_status(env: CniEnv, conf: NetConf, caller: Caller) -> str:
    _needs_1_1(conf, "STATUS")
    try:
        reply = caller("cni.status", {}, conf.socket)
    except control.ControlError as exc:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE, exc.message) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ready"), bool):
        raise CniError(errors.PLUGIN_NOT_AVAILABLE, f"unexpected cni.status reply: {reply!r}")
    if reply.get("degraded"):
        reason = str(reply.get("degraded_reason") or "degraded")
        raise CniError(errors.LIMITED_CONNECTIVITY, reason)
    if not reply["ready"]:
        raise CniError(errors.PLUGIN_NOT_AVAILABLE, str(reply.get("reason") or "not ready"))
    return ""


def cmd_gc(env: CniEnv, conf: NetConf, caller: Caller) -> str:
    _needs_1_1(conf, "GC")
    if conf.valid_attachments is None:
        # Never read a missing list as "nothing is valid": that would release every pod.
        raise spec.fail("cni.dev/valid-attachments", "is required for GC")
    valid = [{"container_id": a.container_id, "ifname": a.ifname} for a in conf.valid_attachments]
    reply = _agent(caller, conf, "cni.gc", {"valid": valid})
    failures = reply.get("errors") if isinstance(reply, dict) else None
    if not isinstance(failures, list):
        raise CniError(errors.AGENT_FAILED, f"unexpected cni.gc reply: {reply!r}")
    if failures:
        raise CniError(errors.GC_INCOMPLETE, "; ".join(str(f) for f in failures))
    return ""


HANDLERS: dict[str, Callable[[CniEnv, NetConf, Caller], str]] = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "STATUS": cmd_status,
    "GC": cmd_gc,
}


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def main() -> None:
    try:
        stdin = _read_stdin()
    except OSError as exc:
        failure = CniError(errors.IO_FAILURE, f"reading stdin: {exc}")
        code, out = 1, failure.to_json(spec.LATEST_VERSION)
    else:
        code, out = run(os.environ, stdin)
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
