"""The control methods the CNI plugin calls (`cni.add`, `cni.del`,
`cni.check`, `cni.gc`, `cni.status`; docs/cni.md and l3fabric/cni/plugin.py
are the other side).

An attachment is keyed by (container id, ifname) and is an ordinary
workload whose name is a hash of that key (model.cni_workload_name), so an
ADD goes through WorkloadManager.add like any other workload: IPAM, the
record, the wiring, the route table and the BGP announcement. Workload
errors are raised as they are; handlers.py maps them to control codes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from l3fabric.agent.server import Handler, RequestError
from l3fabric.agent.workloads import Attachment, WiringFailed
from l3fabric.drift import workload_drift
from l3fabric.model import (
    GATEWAY_V4,
    IPNetwork,
    Workload,
    cni_workload_name,
    valid_ifname,
    valid_name,
)

if TYPE_CHECKING:
    from l3fabric.agent.handlers import NodeAgent

OWNER = "cni"

Wrap = Callable[[Handler], Handler]


def cni_handlers(agent: NodeAgent, *, mapped: Wrap, guarded: Wrap) -> dict[str, Handler]:
    """The methods, each through `mapped` (domain errors to control codes);
    ADD also through `guarded`, which refuses at once while the datastore is
    known to be down instead of letting the ADD time out. DEL and GC try,
    and their datastore errors say "datastore-unavailable"."""
    return {
        "cni.add": guarded(mapped(lambda p: cni_add(agent, p))),
        "cni.del": mapped(lambda p: cni_del(agent, p)),
        "cni.check": mapped(lambda p: cni_check(agent, p)),
        "cni.gc": mapped(lambda p: cni_gc(agent, p)),
        "cni.status": lambda p: cni_status(agent),
    }


def cni_add(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    container_id, ifname = _key(params)
    netns = _netns(params, required=True)
    assert netns is not None
    labels = params.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise RequestError("invalid", "labels must be an object of strings")
    attachment = Attachment(
        ifname=ifname,
        container_id=container_id,
        owner=OWNER,
        namespace=_optional_str(params, "pod_namespace") or "default",
        pod=_optional_str(params, "pod_name") or "",
        labels=tuple(sorted(labels.items())),
    )
    workload = agent.workloads.add(
        cni_workload_name(container_id, ifname),
        netns,
        attachment=attachment,
        pools=_pools(params),
    )
    return add_result(agent, workload, netns)


def add_result(agent: NodeAgent, workload: Workload, sandbox: str) -> dict[str, Any]:
    """The contract's ADD result, from the record and the kernel's MACs."""
    observed = agent.workloads.inspect(workload)
    v6_gateway = observed.host_link_local
    ips: list[dict[str, str]] = []
    routes: list[dict[str, str]] = []
    if any(a.version == 4 for a in workload.addresses):
        routes.append({"dst": "0.0.0.0/0", "gw": str(GATEWAY_V4)})
    if any(a.version == 6 for a in workload.addresses):
        if v6_gateway is None:
            raise WiringFailed(f"{workload.host_iface} has no IPv6 link-local address")
        routes.append({"dst": "::/0", "gw": str(v6_gateway)})
    for address in workload.addresses:
        gateway = GATEWAY_V4 if address.version == 4 else v6_gateway
        ips.append(
            {
                "address": str(ipaddress.ip_network(address)),
                "gateway": str(gateway),
            }
        )
    host: dict[str, str] = {"name": workload.host_iface}
    if observed.host_mac:
        host["mac"] = observed.host_mac
    container: dict[str, str] = {"name": workload.ifname, "sandbox": sandbox}
    if observed.container_mac:
        container["mac"] = observed.container_mac
    return {
        "workload": workload.name,
        "host_interface": host,
        "container_interface": container,
        "ips": ips,
        "routes": routes,
    }


def cni_del(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: an attachment this node does not have is not an error."""
    container_id, ifname = _key(params)
    _netns(params, required=False)  # checked, not needed: the host end is ours
    workload = agent.workloads.get(cni_workload_name(container_id, ifname))
    if workload is None or workload.owner != OWNER or workload.container_id != container_id:
        return {"deleted": False}
    agent.workloads.delete(workload.name)
    return {"deleted": True}


def cni_check(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    container_id, ifname = _key(params)
    _netns(params, required=True)
    workload = agent.workloads.get(cni_workload_name(container_id, ifname))
    if workload is None or workload.owner != OWNER or workload.container_id != container_id:
        raise RequestError(
            "not-found", f"no CNI attachment ({container_id}, {ifname}) on this node"
        )
    expected = params.get("expected") or {}
    if not isinstance(expected, dict):
        raise RequestError("invalid", "expected must be an object")
    mac = expected.get("mac")
    if mac is not None and not isinstance(mac, str):
        raise RequestError("invalid", "expected.mac must be a string")
    observed = agent.workloads.inspect(workload)
    problems = workload_drift(
        workload,
        observed,
        agent.programmed_routes(),
        expected_mac=mac,
        expected_addresses=_networks(expected.get("addresses") or [], "expected.addresses"),
    )
    return {"problems": problems}


def cni_gc(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Release every CNI attachment not in the valid list; a failed release
    does not stop the others. Workloads made otherwise are never touched."""
    raw = params.get("valid")
    if not isinstance(raw, list):
        raise RequestError("invalid", "valid must be a list of {container_id, ifname}")
    valid = set()
    for item in raw:
        if not isinstance(item, dict):
            raise RequestError("invalid", "valid must be a list of {container_id, ifname}")
        valid.add(_key(item))
    released: list[str] = []
    errors: list[str] = []
    for workload in agent.workloads.list():
        if workload.owner != OWNER or (workload.container_id, workload.ifname) in valid:
            continue
        try:
            agent.workloads.delete(workload.name)
            released.append(workload.name)
        except Exception as exc:  # go on with the others; the runtime is told
            errors.append(f"{workload.name} ({workload.container_id}, {workload.ifname}): {exc}")
    return {"released": released, "errors": errors}


def cni_status(agent: NodeAgent) -> dict[str, Any]:
    """Ready as the agent's readiness says; degraded when BGP has peers to
    have and none is Established (pods here reach no other node)."""
    health = agent.health()
    bgp = agent.bgp
    degraded = bgp is not None and bgp.neighbor_count > 0 and not bgp.any_established()
    return {
        "ready": bool(health.get("ready")),
        "reason": str(health.get("ready_reason") or ""),
        "degraded": degraded,
        "degraded_reason": "no BGP session is Established" if degraded else "",
    }


# -- parameters ---------------------------------------------------------------------


def _key(params: dict[str, Any]) -> tuple[str, str]:
    container_id = params.get("container_id")
    ifname = params.get("ifname")
    if not isinstance(container_id, str) or not valid_name(container_id):
        raise RequestError("invalid", f"container_id {container_id!r} is not a valid id")
    if not isinstance(ifname, str) or not valid_ifname(ifname):
        raise RequestError("invalid", f"ifname {ifname!r} is not a valid interface name")
    return container_id, ifname


def _netns(params: dict[str, Any], *, required: bool) -> str | None:
    netns = params.get("netns")
    if netns is None and not required:
        return None
    if not isinstance(netns, str) or not netns.startswith("/"):
        raise RequestError("invalid", f"netns {netns!r} must be an absolute path")
    return netns


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError("invalid", f"{key} must be a string or null")
    return value


def _pools(params: dict[str, Any]) -> list[IPNetwork] | None:
    raw = params.get("pools")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise RequestError("invalid", "pools must be a non-empty list of CIDRs or null")
    return _networks(raw, "pools")


def _networks(raw: Any, key: str) -> list[IPNetwork]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise RequestError("invalid", f"{key} must be a list of CIDRs")
    try:
        return [ipaddress.ip_network(x, strict=False) for x in raw]
    except ValueError as exc:
        raise RequestError("invalid", f"{key}: {exc}") from None
