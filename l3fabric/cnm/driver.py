"""What each of libnetwork's calls does: decoded by protocol.py, answered
here or by the agent through its control socket (`cnm.*` methods,
agent/cnm.py). Nothing is kept in memory between calls: every answer comes
from the request and the agent's state, so a restarted server answers the
same.

The answer to a call is (HTTP status, JSON object):
- 200 and the method's answer when it was done;
- 500 and `{"Err": ...}` when the request was understood but cannot be done
  (the agent refused it or cannot be reached). docs/remote.md asks for the
  Err object; the status is what Docker's plugin SDK sends, and the one
  both sides of libnetwork read the Err from: its IPAM client ignores an Err
  in a 200 answer (it looks for "Error");
- 400 and `{"Err": ...}` when the body does not decode (ProtocolError);
- 404 and `{"Err": ...}` for a method this driver does not implement, so
  libnetwork can tell a method it may skip from a failed one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from l3fabric.cnm import protocol as p
from l3fabric.control import ControlError

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Any]
Answer = tuple[int, dict[str, Any]]
REFUSED = 500

# Docker's option keys (libnetwork netlabel) this driver looks at.
PORT_MAP = "com.docker.network.portmap"


class Refused(Exception):
    """A request this driver understood and will not do."""


@dataclass(frozen=True)
class Method:
    decode: Callable[[p.JsonObject], Any]
    run: Callable[[Any], dict[str, Any]]


class Driver:
    def __init__(self, call: Call) -> None:
        self._call = call
        self._methods: dict[str, Method] = {
            "/Plugin.Activate": Method(p.EmptyRequest.decode, lambda r: p.activate()),
            # NetworkDriver
            "/NetworkDriver.GetCapabilities": Method(p.EmptyRequest.decode, self._capabilities),
            "/NetworkDriver.CreateNetwork": Method(
                p.CreateNetworkRequest.decode, self._create_network
            ),
            "/NetworkDriver.DeleteNetwork": Method(p.NetworkRequest.decode, lambda r: {}),
            "/NetworkDriver.CreateEndpoint": Method(
                p.CreateEndpointRequest.decode, self._create_endpoint
            ),
            "/NetworkDriver.EndpointOperInfo": Method(p.EndpointRequest.decode, self._oper_info),
            "/NetworkDriver.DeleteEndpoint": Method(
                p.EndpointRequest.decode, lambda r: self._endpoint("cnm.delete_endpoint", r)
            ),
            "/NetworkDriver.Join": Method(p.JoinRequest.decode, self._join),
            "/NetworkDriver.Leave": Method(
                p.EndpointRequest.decode, lambda r: self._endpoint("cnm.leave", r)
            ),
            "/NetworkDriver.DiscoverNew": Method(p.DiscoveryRequest.decode, lambda r: {}),
            "/NetworkDriver.DiscoverDelete": Method(p.DiscoveryRequest.decode, lambda r: {}),
            "/NetworkDriver.ProgramExternalConnectivity": Method(
                p.ExternalConnectivityRequest.decode, self._program_external
            ),
            "/NetworkDriver.RevokeExternalConnectivity": Method(
                p.EndpointRequest.decode, lambda r: {}
            ),
            # IpamDriver
            "/IpamDriver.GetCapabilities": Method(
                p.EmptyRequest.decode, lambda r: p.ipam_capabilities()
            ),
            "/IpamDriver.GetDefaultAddressSpaces": Method(
                p.EmptyRequest.decode, lambda r: p.address_spaces()
            ),
            "/IpamDriver.RequestPool": Method(p.RequestPoolRequest.decode, self._request_pool),
            "/IpamDriver.ReleasePool": Method(p.PoolRequest.decode, self._release_pool),
            "/IpamDriver.RequestAddress": Method(
                p.RequestAddressRequest.decode, self._request_address
            ),
            "/IpamDriver.ReleaseAddress": Method(
                p.ReleaseAddressRequest.decode, self._release_address
            ),
        }

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._methods)

    def handle(self, path: str, body: bytes) -> Answer:
        method = self._methods.get(path)
        if method is None:
            return 404, p.error(f"{path} is not a method of the l3fabric driver")
        try:
            request = method.decode(p.decode_body(body))
        except p.ProtocolError as exc:
            return 400, p.error(f"{path.lstrip('/')}: {exc}")
        try:
            answer = method.run(request)
        except Refused as exc:
            return REFUSED, p.error(str(exc))
        except ControlError as exc:
            return REFUSED, p.error(exc.message)
        log.debug("cnm call done", extra={"method": path})
        return 200, answer

    # -- NetworkDriver ------------------------------------------------------------

    def _capabilities(self, request: p.EmptyRequest) -> dict[str, Any]:
        result = self._call("cnm.capabilities", {})
        return p.CapabilitiesResponse(str(result["scope"])).encode()

    def _create_network(self, request: p.CreateNetworkRequest) -> dict[str, Any]:
        self._call(
            "cnm.create_network",
            {
                "network_id": request.network_id,
                "options": request.options,
                "ipv4_data": [d.to_params() for d in request.ipv4_data],
                "ipv6_data": [d.to_params() for d in request.ipv6_data],
            },
        )
        return {}

    def _create_endpoint(self, request: p.CreateEndpointRequest) -> dict[str, Any]:
        iface = request.interface
        self._call(
            "cnm.create_endpoint",
            {
                "network_id": request.network_id,
                "endpoint_id": request.endpoint_id,
                "address": iface.address,
                "address_ipv6": iface.address_ipv6,
            },
        )
        # Docker gave the addresses, so the Interface answered is empty:
        # anything in it would count as the driver changing them.
        return {}

    def _oper_info(self, request: p.EndpointRequest) -> dict[str, Any]:
        result = self._call("cnm.endpoint_info", _endpoint_params(request))
        value = tuple(sorted((str(k), str(v)) for k, v in (result or {}).items()))
        return p.OperInfoResponse(value).encode()

    def _endpoint(self, method: str, request: p.EndpointRequest) -> dict[str, Any]:
        self._call(method, _endpoint_params(request))
        return {}

    def _join(self, request: p.JoinRequest) -> dict[str, Any]:
        result = self._call(
            "cnm.join",
            {
                "network_id": request.network_id,
                "endpoint_id": request.endpoint_id,
                "sandbox_key": request.sandbox_key,
            },
        )
        return p.JoinResponse.from_result(result).encode()

    def _program_external(self, request: p.ExternalConnectivityRequest) -> dict[str, Any]:
        ports = request.options.get(PORT_MAP)
        if ports:
            raise Refused(
                "l3fabric does no NAT, so port mappings (-p/--publish) are not supported: "
                "the container is reachable at its own address from every node of the fabric"
            )
        return {}

    # -- IpamDriver -------------------------------------------------------------------

    def _request_pool(self, request: p.RequestPoolRequest) -> dict[str, Any]:
        result = self._call(
            "cnm.request_pool",
            {
                "pool": request.pool,
                "sub_pool": request.sub_pool,
                "options": dict(request.options),
                "v6": request.v6,
            },
        )
        return p.RequestPoolResponse.from_result(result).encode()

    def _release_pool(self, request: p.PoolRequest) -> dict[str, Any]:
        # A pool is one of the node's configured pools, never made for the
        # network, so there is nothing to give back.
        self._call("cnm.release_pool", {"pool_id": request.pool_id})
        return {}

    def _request_address(self, request: p.RequestAddressRequest) -> dict[str, Any]:
        result = self._call(
            "cnm.request_address",
            {
                "pool_id": request.pool_id,
                "address": request.address,
                "options": dict(request.options),
            },
        )
        return p.RequestAddressResponse(str(result["address"])).encode()

    def _release_address(self, request: p.ReleaseAddressRequest) -> dict[str, Any]:
        self._call("cnm.release_address", {"pool_id": request.pool_id, "address": request.address})
        return {}


def _endpoint_params(request: p.EndpointRequest) -> dict[str, Any]:
    return {"network_id": request.network_id, "endpoint_id": request.endpoint_id}


def agent_call(socket_path: Any, timeout: float) -> Call:
    """`call` for Driver: the agent's control socket, each request on its
    own connection."""
    from l3fabric import control

    def call(method: str, params: Mapping[str, Any]) -> Any:
        return control.call(method, dict(params), socket_path=socket_path, timeout=timeout)

    return call
