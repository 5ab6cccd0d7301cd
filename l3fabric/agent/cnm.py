"""The control methods Docker's driver calls (`cnm.*`; l3fabric/cnm/ is the
other side, docs/docker.md the user's view).

libnetwork's order for a container: RequestAddress (IPAM, per family), then
CreateEndpoint with those addresses, then Join with the sandbox; the
reverse on `docker rm`: Leave, DeleteEndpoint, ReleaseAddress. Nothing is
kept here between calls; the state is IPAM handles and workload records:

- an address Docker requested is held by a handle named from the address
  (`reservation_handle`), so ReleaseAddress finds it from the address alone;
- CreateEndpoint moves the endpoint's addresses to a handle named from the
  endpoint id (`endpoint_name`), the name its workload will have;
- Join adds that workload through WorkloadManager.add like any other (the
  record, the route table, the BGP announcement), wired with the container
  end left in the node's namespace for Docker to move into the sandbox;
- Leave deletes the workload, which gives its addresses back.

An address reserved but never joined (Docker gone in between) is a leak
`ipam check --repair` releases once it is older than the leak grace.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from l3fabric.agent.server import Handler, RequestError
from l3fabric.agent.workloads import Attachment
from l3fabric.ipam.errors import IpamError
from l3fabric.model import GATEWAY_V4, RUNTIME_PEER_PREFIX, IPAddress, IPNetwork, Workload

if TYPE_CHECKING:
    from l3fabric.agent.handlers import NodeAgent

OWNER = "cnm"
DST_PREFIX = "eth"  # Docker names the interface eth0, eth1... in the sandbox
POOL_ID_PREFIX = "l3fabric:"
# RequestPool's gateway, so that libnetwork does not ask IPAM for one: the
# containers' IPv4 gateway is the link-local one every workload has; for
# IPv6 it is each host veth's own link-local address, so none per network.
GATEWAY_DATA_KEY = "com.docker.network.gateway"
NETWORK_GATEWAY = {4: f"{GATEWAY_V4}/32", 6: "::/0"}
ANY_POOL = {4: "0.0.0.0/0", 6: "::/0"}
ADDRESS_TYPE = "RequestAddressType"
GATEWAY_REQUEST = "com.docker.network.gateway"
# Docker's network options (libnetwork netlabel) this driver understands.
GENERIC = "com.docker.network.generic"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"
ROUTE_CONNECTED = 1


def endpoint_name(endpoint_id: str) -> str:
    """The workload (and IPAM handle) of a Docker endpoint: a function of
    its id alone, short whatever Docker's ids look like."""
    return "cnm-" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:16]


def reservation_handle(address: IPAddress) -> str:
    return "cnm-ip-" + hashlib.sha256(str(address).encode()).hexdigest()[:16]


def runtime_ifname(workload_name: str) -> str:
    """The container end's name while it waits in the node's namespace: not
    an owned name (model.is_owned_iface), so reconcile never deletes it."""
    return RUNTIME_PEER_PREFIX + hashlib.sha256(workload_name.encode()).hexdigest()[:9]


Wrap = Callable[[Handler], Handler]


def cnm_handlers(agent: NodeAgent, *, mapped: Wrap, guarded: Wrap) -> dict[str, Handler]:
    """The methods, each through `mapped` (domain errors to control codes);
    those that take addresses or add a workload also through `guarded`,
    refused at once while the datastore is known to be down."""
    methods: dict[str, tuple[Callable[[NodeAgent, dict[str, Any]], Any], bool]] = {
        "cnm.capabilities": (capabilities, False),
        "cnm.create_network": (create_network, False),
        "cnm.request_pool": (request_pool, False),
        "cnm.release_pool": (release_pool, False),
        "cnm.request_address": (request_address, True),
        "cnm.release_address": (release_address, False),
        "cnm.create_endpoint": (create_endpoint, True),
        "cnm.delete_endpoint": (delete_endpoint, False),
        "cnm.endpoint_info": (endpoint_info, False),
        "cnm.join": (join, True),
        "cnm.leave": (leave, False),
    }
    table: dict[str, Handler] = {}
    for name, (fn, changes) in methods.items():
        handler = mapped(_ipam_errors(agent, fn))
        table[name] = guarded(handler) if changes else handler
    return table


def _ipam_errors(agent: NodeAgent, fn: Callable[[NodeAgent, dict[str, Any]], Any]) -> Handler:
    def handle(params: dict[str, Any]) -> Any:
        try:
            return fn(agent, params)
        except IpamError as exc:
            raise RequestError("ipam", str(exc)) from None

    return handle


# -- network ---------------------------------------------------------------------------


def capabilities(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Global scope when the datastore is shared by the hosts (etcd): a
    network and its endpoints are then the same on every Docker host."""
    kind = agent.status().get("datastore", {}).get("type")
    return {"scope": "global" if kind == "etcd" else "local"}


def create_network(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    options = _dict(params, "options")
    generic = options.get(GENERIC) or {}
    if not isinstance(generic, dict):
        raise RequestError("invalid", "options.com.docker.network.generic must be an object")
    if generic:
        raise RequestError(
            "invalid",
            "the l3fabric driver takes no -o/--opt options (got "
            + ", ".join(sorted(generic))
            + "): pick pools with --subnet",
        )
    if options.get(INTERNAL) is True:
        raise RequestError(
            "invalid", "--internal is not supported: every l3fabric address is routed"
        )
    pools = _node_pools(agent)
    for key, version in (("ipv4_data", 4), ("ipv6_data", 6)):
        for entry in _list(params, key):
            if not isinstance(entry, dict):
                raise RequestError("invalid", f"{key} must be a list of objects")
            if entry.get("gateway") != NETWORK_GATEWAY[version]:
                raise RequestError(
                    "invalid",
                    "the network's addresses are not from l3fabric's IPAM: "
                    "create it with --ipam-driver l3fabric (and no --gateway)",
                )
            if entry.get("aux_addresses"):
                raise RequestError("invalid", "--aux-address is not supported")
            pool = _network(entry.get("pool"), f"{key}.pool")
            if str(pool) != ANY_POOL[version] and pool not in pools:
                raise RequestError("invalid", _outside(pool, pools))
    return {}


def request_pool(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """A Docker pool is one or more of the node's pools, named in its id, so
    RequestAddress needs nothing else: `l3fabric:CIDR[,CIDR...]`."""
    if _str(params, "sub_pool"):
        raise RequestError(
            "invalid", "--ip-range is not supported: addresses come from the node's blocks"
        )
    options = _dict(params, "options")
    if options:
        raise RequestError(
            "invalid",
            "the l3fabric IPAM takes no --ipam-opt (got " + ", ".join(sorted(options)) + ")",
        )
    pools = _node_pools(agent)
    wanted = _str(params, "pool")
    if wanted:
        subnet = _network(wanted, "pool")
        chosen = [p for p in pools if p.version == subnet.version and _within(subnet, p)]
        if not chosen:
            raise RequestError("invalid", _outside(subnet, pools))
        version = subnet.version
    else:
        version = 6 if params.get("v6") is True else 4
        chosen = [p for p in pools if p.version == version]
        if not chosen:
            raise RequestError(
                "invalid",
                f"node {agent.ipam.node} has no IPv{version} pool (pools: "
                + (", ".join(map(str, pools)) or "none")
                + ")",
            )
    return {
        "pool_id": POOL_ID_PREFIX + ",".join(map(str, chosen)),
        "pool": str(chosen[0]) if len(chosen) == 1 else ANY_POOL[version],
        "data": {GATEWAY_DATA_KEY: NETWORK_GATEWAY[version]},
    }


def release_pool(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    _pool_id(_str(params, "pool_id"))  # checked; nothing was made for it
    return {}


# -- addresses ---------------------------------------------------------------------------


def request_address(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    pools = _pool_id(_str(params, "pool_id"))
    options = _dict(params, "options")
    if options.get(ADDRESS_TYPE) == GATEWAY_REQUEST:
        raise RequestError(
            "invalid",
            "containers on l3fabric are routed through a link-local gateway: "
            "--gateway is not supported",
        )
    raw = _str(params, "address")
    ipam = agent.ipam
    if raw:
        address = _address(raw, "address")
        if ipam.addresses_of(reservation_handle(address)):
            # Asked for again before the first asker made its endpoint.
            raise RequestError("conflict", f"{address} is already requested by another endpoint")
        ipam.assign(reservation_handle(address), [address], pools=pools)
    else:
        # The handle is named from the address, unknown before it is
        # picked: pick under a one-off handle, then move the address over.
        # In between the address is free only in this node's block, which
        # only this agent assigns from (another node borrows only when it
        # has no block of its own left).
        temporary = "cnm-req-" + secrets.token_hex(8)
        picked = ipam.assign(temporary, [], pools=pools)
        ipam.release(temporary)
        if len(picked) != 1:
            raise RequestError("ipam", f"expected one address from {pools}, got {picked}")
        address = picked[0]
        ipam.assign(reservation_handle(address), [address], pools=pools)
    return {"address": f"{address}/{address.max_prefixlen}"}


def release_address(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Idempotent; an address an endpoint holds is its workload's, released
    when the endpoint goes."""
    _pool_id(_str(params, "pool_id"))
    address = _address(_str(params, "address"), "address")
    agent.ipam.release(reservation_handle(address))
    return {}


# -- endpoints ----------------------------------------------------------------------------


def create_endpoint(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    endpoint_id = _id(params, "endpoint_id")
    name = endpoint_name(endpoint_id)
    addresses = [
        _address(raw.split("/", 1)[0], key)
        for key in ("address", "address_ipv6")
        if (raw := _str(params, key))
    ]
    if not addresses:
        raise RequestError(
            "invalid", "the endpoint has no address: create the network with --ipam-driver l3fabric"
        )
    ipam = agent.ipam
    held = set(ipam.addresses_of(name))
    moving = [a for a in addresses if a not in held]
    for address in moving:
        handle = reservation_handle(address)
        if ipam.addresses_of(handle) != (address,) or ipam.holder(handle) != ipam.node:
            raise RequestError(
                "invalid",
                f"{address} was not assigned by l3fabric's IPAM on node {ipam.node}: "
                "create the network with --ipam-driver l3fabric",
            )
    # The same short window as in request_address: the address is free only
    # in this node's block between the release and the assign.
    for address in moving:
        ipam.release(reservation_handle(address))
    ipam.assign(name, addresses)
    return {}


def delete_endpoint(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: Leave has normally deleted the workload already; an
    endpoint that never joined still holds its addresses."""
    name = endpoint_name(_id(params, "endpoint_id"))
    workload = agent.workloads.get(name)
    if workload is not None and workload.owner == OWNER:
        agent.workloads.delete(name)
    agent.ipam.release(name)
    return {}


def endpoint_info(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    endpoint_id = _id(params, "endpoint_id")
    name = endpoint_name(endpoint_id)
    workload = agent.workloads.get(name)
    info = {"workload": name, "node": agent.ipam.node}
    if workload is not None:
        info["host_iface"] = workload.host_iface
        info["addresses"] = ",".join(map(str, workload.addresses))
    return info


def join(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    network_id = _id(params, "network_id")
    endpoint_id = _id(params, "endpoint_id")
    sandbox = _str(params, "sandbox_key")
    if not sandbox.startswith("/"):
        raise RequestError("invalid", f"sandbox_key {sandbox!r} must be an absolute path")
    name = endpoint_name(endpoint_id)
    existing = agent.workloads.get(name)
    if existing is not None:
        raise RequestError(
            "conflict", f"endpoint {endpoint_id[:12]} has already joined sandbox {existing.netns}"
        )
    addresses = agent.ipam.addresses_of(name)
    if not addresses:
        raise RequestError(
            "not-found", f"endpoint {endpoint_id[:12]} was not created on node {agent.ipam.node}"
        )
    attachment = Attachment(
        ifname=DST_PREFIX + "0",
        container_id=endpoint_id,
        owner=OWNER,
        labels=(("docker.network", network_id),),
    )
    peer = runtime_ifname(name)
    workload = agent.workloads.add(
        name, sandbox, [str(a) for a in addresses], attachment=attachment, runtime_ifname=peer
    )
    return join_result(agent, workload, peer)


def join_result(agent: NodeAgent, workload: Workload, peer: str) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    result: dict[str, Any] = {"src_name": peer, "dst_prefix": DST_PREFIX}
    if any(a.version == 4 for a in workload.addresses):
        result["gateway"] = str(GATEWAY_V4)
        # Connected, so the default route via it works on a /32 address.
        routes.append({"destination": f"{GATEWAY_V4}/32", "route_type": ROUTE_CONNECTED})
    if any(a.version == 6 for a in workload.addresses):
        gateway = agent.workloads.inspect(workload).host_link_local
        if gateway is None:
            raise RequestError("dataplane", f"{workload.host_iface} has no IPv6 link-local address")
        result["gateway_ipv6"] = str(gateway)
        routes.append({"destination": f"{gateway}/128", "route_type": ROUTE_CONNECTED})
    result["static_routes"] = routes
    return result


def leave(agent: NodeAgent, params: dict[str, Any]) -> dict[str, Any]:
    endpoint_id = _id(params, "endpoint_id")
    name = endpoint_name(endpoint_id)
    workload = agent.workloads.get(name)
    if workload is None or workload.owner != OWNER:
        raise RequestError(
            "not-found", f"endpoint {endpoint_id[:12]} is not joined on node {agent.ipam.node}"
        )
    agent.workloads.delete(name)
    return {}


# -- parameters -----------------------------------------------------------------------------


def _node_pools(agent: NodeAgent) -> list[IPNetwork]:
    return [ipaddress.ip_network(p["cidr"]) for p in agent.ipam.show()["pools"]]


def _pool_id(pool_id: str) -> list[IPNetwork]:
    if not pool_id.startswith(POOL_ID_PREFIX):
        raise RequestError("invalid", f"pool id {pool_id!r} is not one l3fabric's IPAM gave")
    try:
        return [ipaddress.ip_network(c) for c in pool_id[len(POOL_ID_PREFIX) :].split(",")]
    except ValueError:
        raise RequestError(
            "invalid", f"pool id {pool_id!r} is not one l3fabric's IPAM gave"
        ) from None


def _within(subnet: IPNetwork, pool: IPNetwork) -> bool:
    return subnet.version == pool.version and subnet.subnet_of(pool)  # type: ignore[arg-type]


def _outside(subnet: IPNetwork, pools: list[IPNetwork]) -> str:
    return (
        f"subnet {subnet} is outside every l3fabric pool (pools: "
        + (", ".join(map(str, pools)) or "none")
        + ")"
    )


def _str(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RequestError("invalid", f"{key} must be a string")
    return value


def _id(params: dict[str, Any], key: str) -> str:
    value = _str(params, key)
    if not value:
        raise RequestError("invalid", f"{key} is missing")
    return value


def _dict(params: dict[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError("invalid", f"{key} must be an object")
    return value


def _list(params: dict[str, Any], key: str) -> list[Any]:
    value = params.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("invalid", f"{key} must be a list")
    return value


def _network(value: Any, key: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise RequestError("invalid", f"{key} {value!r} is not a CIDR") from None


def _address(value: str, key: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise RequestError("invalid", f"{key} {value!r} is not an IP address") from None
