"""The control API's methods: parameters checked, domain errors mapped to
control error codes here, at the edge, and nowhere else.

Every handler runs on the agent's work loop (ControlServer.dispatch).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any, Protocol

from l3fabric import limits
from l3fabric.agent.bgp import BgpService
from l3fabric.agent.cni import cni_handlers
from l3fabric.agent.cnm import cnm_handlers
from l3fabric.agent.server import Handler, RequestError
from l3fabric.agent.workloads import (
    AddressesUnavailable,
    Attachment,
    InvalidWorkload,
    UnknownPoolRequested,
    WiringFailed,
    WorkloadConflict,
    WorkloadError,
    WorkloadManager,
    WorkloadNotFound,
)
from l3fabric.datastore.base import Datastore, DatastoreUnavailable
from l3fabric.datastore.keys import KeyLayout
from l3fabric.datastore.services import ServiceError, check_labels
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.check import DEFAULT_LEAK_GRACE
from l3fabric.model import IPAddress, Route, Workload

ERROR_CODES: dict[type[WorkloadError], str] = {
    InvalidWorkload: "invalid",
    WorkloadConflict: "conflict",
    WorkloadNotFound: "not-found",
    AddressesUnavailable: "ipam",
    UnknownPoolRequested: "unknown-pool",
    WiringFailed: "dataplane",
}


class NodeAgent(Protocol):
    """What the handlers need of the agent."""

    @property
    def workloads(self) -> WorkloadManager: ...
    @property
    def ipam(self) -> Ipam: ...
    @property
    def bgp(self) -> BgpService | None: ...
    @property
    def store(self) -> Datastore: ...
    @property
    def keys(self) -> KeyLayout: ...
    def reconcile(self, *, look_inside_all: bool = False) -> dict[str, Any]: ...
    def reload(self) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...
    @property
    def datastore_error(self) -> str | None: ...
    def programmed_routes(self) -> list[Route]: ...


def handlers(agent: NodeAgent) -> dict[str, Handler]:
    def mapped(fn: Callable[[dict[str, Any]], Any]) -> Handler:
        def handle(params: dict[str, Any]) -> Any:
            try:
                return fn(params)
            except WorkloadError as exc:
                raise RequestError(ERROR_CODES.get(type(exc), "invalid"), str(exc)) from None

        return handle

    def changes_store(fn: Callable[[dict[str, Any]], Any]) -> Handler:
        """A request that writes the datastore fails at once, without a
        timeout, while the agent knows the datastore does not answer."""

        def handle(params: dict[str, Any]) -> Any:
            if agent.datastore_error is not None:
                raise RequestError(
                    "datastore-unavailable",
                    f"datastore unavailable, try again: {agent.datastore_error}",
                )
            return fn(params)

        return handle

    table: dict[str, Handler] = {
        "workload.add": changes_store(mapped(lambda p: _workload_add(agent, p))),
        "workload.del": mapped(lambda p: agent.workloads.delete(_str_param(p, "name")).to_dict()),
        "workload.list": lambda p: [w.to_dict() for w in agent.workloads.list()],
        "ipam.show": lambda p: _ipam_show(agent, p),
        "ipam.release": changes_store(lambda p: _ipam_release(agent, p)),
        "ipam.check": lambda p: _ipam_check(agent, p),
        "reconcile": lambda p: agent.reconcile(look_inside_all=True),
        "config.reload": lambda p: agent.reload(),
        "status": lambda p: _status(agent, p),
        "routes": lambda p: _routes(agent, p),
        "health": lambda p: agent.health(),
    }
    table |= cni_handlers(agent, mapped=mapped, guarded=changes_store)
    table |= cnm_handlers(agent, mapped=mapped, guarded=changes_store)
    return {method: _store_errors(handler) for method, handler in table.items()}


def _store_errors(handler: Handler) -> Handler:
    def handle(params: dict[str, Any]) -> Any:
        try:
            return handler(params)
        except DatastoreUnavailable as exc:
            raise RequestError("datastore-unavailable", f"{exc}; try again") from None

    return handle


def _workload_add(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    name = _str_param(params, "name")
    problem = limits.workload_name_error(name)
    if problem is not None:
        raise RequestError("invalid", f"workload name: {problem}")
    netns = _str_param(params, "netns")
    ips = params.get("ips") or []
    if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
        raise RequestError("invalid", "ips must be a list of strings")
    namespace = params.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise RequestError("invalid", "namespace must be a string")
    labels = params.get("labels") or {}
    if not isinstance(labels, dict):
        raise RequestError("invalid", "labels must be an object of strings")
    try:
        pairs = check_labels(labels.items(), "--label")
    except ServiceError as exc:
        raise RequestError("invalid", str(exc)) from None
    attachment = Attachment(namespace=namespace, labels=pairs)
    return agent.workloads.add(name, netns, ips, attachment=attachment).to_dict()


def _ipam_check(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    repair = params.get("repair", False)
    if not isinstance(repair, bool):
        raise RequestError("invalid", "repair must be true or false")
    keys = agent.keys
    live: dict[str, set[str]] = {}
    for kv in agent.store.list(keys.all_workloads):
        node, name = keys.workload_owner(kv.key)
        live.setdefault(node, set()).add(name)
    nodes = {keys.node_name(kv.key) for kv in agent.store.list(keys.nodes)}
    gone = _vanished_runtime_workloads(agent)
    if repair:
        for name in gone:
            # Its record and addresses go: the IPAM check below sees them gone.
            agent.workloads.delete(name)
            for names in live.values():
                names.discard(name)
    report = agent.ipam.check(live, nodes, repair=repair)
    report["vanished_workloads"] = gone
    report["released_workloads"] = gone if repair else []
    return report


def _vanished_runtime_workloads(agent: NodeAgent) -> list[str]:
    """Docker endpoints whose container went without a Leave (dockerd gone):
    their sandbox and both veth ends are gone. A CNI pod is never one: its
    runtime deletes it (DEL, GC); a CLI workload is the operator's."""
    gone = []
    for workload in agent.workloads.list():
        if workload.owner != "cnm":
            continue
        seen = agent.workloads.inspect(workload)
        if not seen.netns_present and not seen.host_present:
            gone.append(workload.name)
    return gone


def _ipam_show(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    ip, blocks = params.get("ip"), params.get("blocks", False)
    if not isinstance(blocks, bool):
        raise RequestError("invalid", "blocks must be true or false")
    if ip is not None and blocks:
        raise RequestError("invalid", "--ip and --blocks are separate views: ask for one")
    if blocks:
        return {"node": agent.ipam.node, "blocks": agent.ipam.block_details()}
    if ip is None:
        return agent.ipam.show()
    address = _address_param(params, "ip")
    info = agent.ipam.lookup(address)
    holder = _live_holder(agent, address, info["handle"])
    info["workload"] = holder.name if holder is not None else None
    info["workload_node"] = holder.node if holder is not None else None
    return info


def _ipam_release(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Free one address that no live workload holds: what `ipam check`
    reports as leaked, without waiting for its grace period to end."""
    address = _address_param(params, "address")
    info = agent.ipam.lookup(address)
    handle = info["handle"]
    if handle is None:
        raise RequestError("not-found", f"{address} is not assigned")
    holder = _live_holder(agent, address, handle)
    if holder is not None:
        raise RequestError(
            "conflict",
            f"{address} is held by live workload {holder.name} on node {holder.node}: "
            "delete the workload instead",
        )
    age = info["age"]
    if age < DEFAULT_LEAK_GRACE:
        # An agent assigns before it writes the workload record: a young
        # address without a record may be an add still in progress.
        raise RequestError(
            "conflict",
            f"{address} was assigned to {handle} by node {info['node']} {age:.0f}s ago and may "
            f"be an add in progress; try again after {DEFAULT_LEAK_GRACE:.0f}s",
        )
    released = agent.ipam.release_address(address, handle)
    return {"address": str(address), "handle": handle, "released": released}


def _live_holder(agent: NodeAgent, address: IPAddress, handle: str | None) -> Workload | None:
    """The workload record, on any node, named `handle` or listing `address`.
    A record that cannot be read counts as live when its key names the
    handle: an address is never freed on a guess."""
    keys = agent.keys
    for kv in agent.store.list(keys.all_workloads):
        node, name = keys.workload_owner(kv.key)
        try:
            workload = Workload.from_dict(json.loads(kv.value))
        except (ValueError, TypeError, KeyError):
            if name == handle:
                return Workload(name, node, "")
            continue
        if workload.name == handle or address in workload.addresses:
            return workload
    return None


def _address_param(params: dict[str, Any], name: str) -> IPAddress:
    value = _str_param(params, name)
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise RequestError("invalid", f"{value!r} is not an IP address") from None


def _routes(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    view = params.get("view", "programmed")
    if view == "programmed":
        routes = sorted(
            agent.programmed_routes(),
            key=lambda r: (r.family, int(r.prefix.network_address), r.prefix.prefixlen),
        )
        owner = {a: w.name for w in agent.workloads.list() for a in w.addresses}
        rows = []
        for r in routes:
            local = all(nh.gateway is None for nh in r.nexthops)
            rows.append(
                {
                    "prefix": str(r.prefix),
                    "nexthops": [str(nh) for nh in r.nexthops],
                    "kind": "local" if local else "learned",
                    "workload": owner.get(r.prefix.network_address) if local else None,
                }
            )
        return {"view": view, "routes": rows}
    bgp = agent.bgp
    if bgp is None:
        raise RequestError("invalid", "BGP is disabled on this node")
    if view not in ("advertised", "received"):
        raise RequestError("invalid", f"unknown routes view {view!r}")
    peer = _peer_param(bgp, params)
    if view == "advertised":
        if peer is None:
            return {"view": view, "routes": bgp.advertised()}
        return {"view": view, "peer": str(peer), "routes": bgp.advertised_to(peer) or []}
    return {"view": view, "routes": bgp.received(str(peer) if peer else None)}


def _peer_param(bgp: BgpService, params: dict[str, Any]) -> IPAddress | None:
    """The `peer` parameter: None, or an address that is a BGP neighbour."""
    peer = params.get("peer")
    if peer is None:
        return None
    if not isinstance(peer, str):
        raise RequestError("invalid", "peer must be an address")
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        raise RequestError("invalid", f"--peer {peer!r} is not an IP address") from None
    if not bgp.is_peer(address):
        raise RequestError("not-found", f"--peer {peer} is not a configured BGP peer")
    return address


def _status(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("peer") is None:
        return agent.status()
    bgp = agent.bgp
    if bgp is None:
        raise RequestError("invalid", "BGP is disabled on this node")
    peer = _peer_param(bgp, params)
    detail = bgp.peer_detail(peer) if peer is not None else None
    if detail is None:
        raise RequestError("not-found", f"--peer {params['peer']} is not a configured BGP peer")
    return {"node": agent.ipam.node, "peer": detail}


def _str_param(params: dict[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError("invalid", f"missing or invalid parameter {name!r}")
    return value
