"""libnetwork's remote driver protocol (moby/libnetwork docs/remote.md and
docs/ipam.md) as typed values: every request body decoded and checked into a
frozen dataclass, every answer encoded from one.

A body that is not JSON, not an object, or has a field of the wrong type or
a required one missing is a ProtocolError naming the field; the server
answers it with HTTP 400 and `{"Err": ...}`, as the protocol asks for a
request the driver cannot decode. Field names are Docker's, spelled exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
IMPLEMENTS = ("NetworkDriver", "IpamDriver")
# Docker's ids are 64 hex digits; anything plain of a sane length is taken.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ProtocolError(ValueError):
    """A request body that does not decode into what its method takes."""


JsonObject = Mapping[str, Any]


def decode_body(body: bytes) -> JsonObject:
    """The body as a JSON object; empty and `null` are the empty object (a
    request with no payload, as Docker sends for Plugin.Activate)."""
    text = body.strip()
    if not text or text == b"null":
        return {}
    try:
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the body is a JSON {type(value).__name__}, not an object")
    return value


def encode(answer: JsonObject) -> bytes:
    return json.dumps(answer, separators=(",", ":"), sort_keys=True).encode()


def error(message: str) -> dict[str, str]:
    return {"Err": message}


# -- field readers ---------------------------------------------------------------


def _str(obj: JsonObject, key: str, *, required: bool = False, where: str = "") -> str:
    value = obj.get(key)
    name = where + key
    if value is None:
        if required:
            raise ProtocolError(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise ProtocolError(f"{name} is empty")
    return value


def _id(obj: JsonObject, key: str) -> str:
    value = _str(obj, key, required=True)
    if not _ID_RE.match(value):
        raise ProtocolError(f"{key} {value[:80]!r} is not a valid id")
    return value


def _object(obj: JsonObject, key: str, *, where: str = "") -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}{key} must be an object, not {type(value).__name__}")
    return value


def _str_map(obj: JsonObject, key: str, *, where: str = "") -> dict[str, str]:
    value = _object(obj, key, where=where)
    for k, v in value.items():
        if not isinstance(v, str):
            raise ProtocolError(f"{where}{key}.{k} must be a string, not {type(v).__name__}")
    return value


def _bool(obj: JsonObject, key: str) -> bool:
    value = obj.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProtocolError(f"{key} must be true or false, not {type(value).__name__}")
    return value


def _int(obj: JsonObject, key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{key} must be an integer")
    return value


# -- NetworkDriver requests -------------------------------------------------------


@dataclass(frozen=True)
class IpamData:
    """One entry of CreateNetwork's IPv4Data or IPv6Data."""

    address_space: str
    pool: str
    gateway: str
    aux_addresses: tuple[tuple[str, str], ...] = ()

    @classmethod
    def decode(cls, value: Any, where: str) -> IpamData:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object")
        prefix = where + "."
        return cls(
            _str(value, "AddressSpace", where=prefix),
            _str(value, "Pool", required=True, where=prefix),
            _str(value, "Gateway", where=prefix),
            tuple(sorted(_str_map(value, "AuxAddresses", where=prefix).items())),
        )

    def to_params(self) -> dict[str, Any]:
        return {
            "address_space": self.address_space,
            "pool": self.pool,
            "gateway": self.gateway,
            "aux_addresses": dict(self.aux_addresses),
        }


def _ipam_list(obj: JsonObject, key: str) -> tuple[IpamData, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError(f"{key} must be a list")
    return tuple(IpamData.decode(item, f"{key}[{i}]") for i, item in enumerate(value))


@dataclass(frozen=True)
class CreateNetworkRequest:
    network_id: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    ipv4_data: tuple[IpamData, ...] = ()
    ipv6_data: tuple[IpamData, ...] = ()

    @classmethod
    def decode(cls, obj: JsonObject) -> CreateNetworkRequest:
        return cls(
            _id(obj, "NetworkID"),
            _object(obj, "Options"),
            _ipam_list(obj, "IPv4Data"),
            _ipam_list(obj, "IPv6Data"),
        )


@dataclass(frozen=True)
class NetworkRequest:
    """DeleteNetwork."""

    network_id: str

    @classmethod
    def decode(cls, obj: JsonObject) -> NetworkRequest:
        return cls(_id(obj, "NetworkID"))


@dataclass(frozen=True)
class EndpointInterface:
    address: str = ""  # IPv4 CIDR, e.g. 100.64.0.5/32
    address_ipv6: str = ""
    mac_address: str = ""


@dataclass(frozen=True)
class CreateEndpointRequest:
    network_id: str
    endpoint_id: str
    interface: EndpointInterface
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def decode(cls, obj: JsonObject) -> CreateEndpointRequest:
        raw = _object(obj, "Interface")
        interface = EndpointInterface(
            _str(raw, "Address", where="Interface."),
            _str(raw, "AddressIPv6", where="Interface."),
            _str(raw, "MacAddress", where="Interface."),
        )
        return cls(
            _id(obj, "NetworkID"), _id(obj, "EndpointID"), interface, _object(obj, "Options")
        )


@dataclass(frozen=True)
class EndpointRequest:
    """DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity."""

    network_id: str
    endpoint_id: str

    @classmethod
    def decode(cls, obj: JsonObject) -> EndpointRequest:
        return cls(_id(obj, "NetworkID"), _id(obj, "EndpointID"))


@dataclass(frozen=True)
class JoinRequest:
    network_id: str
    endpoint_id: str
    sandbox_key: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def decode(cls, obj: JsonObject) -> JoinRequest:
        sandbox = _str(obj, "SandboxKey", required=True)
        if not sandbox.startswith("/"):
            raise ProtocolError(f"SandboxKey {sandbox[:80]!r} is not an absolute path")
        return cls(_id(obj, "NetworkID"), _id(obj, "EndpointID"), sandbox, _object(obj, "Options"))


@dataclass(frozen=True)
class ExternalConnectivityRequest:
    """ProgramExternalConnectivity."""

    network_id: str
    endpoint_id: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def decode(cls, obj: JsonObject) -> ExternalConnectivityRequest:
        return cls(_id(obj, "NetworkID"), _id(obj, "EndpointID"), _object(obj, "Options"))


@dataclass(frozen=True)
class DiscoveryRequest:
    """DiscoverNew and DiscoverDelete."""

    discovery_type: int
    discovery_data: Any = field(default=None, compare=False)

    @classmethod
    def decode(cls, obj: JsonObject) -> DiscoveryRequest:
        return cls(_int(obj, "DiscoveryType"), obj.get("DiscoveryData"))


@dataclass(frozen=True)
class EmptyRequest:
    """Plugin.Activate and the GetCapabilities/GetDefaultAddressSpaces calls."""

    @classmethod
    def decode(cls, obj: JsonObject) -> EmptyRequest:
        return cls()


# -- IpamDriver requests ------------------------------------------------------------


@dataclass(frozen=True)
class RequestPoolRequest:
    address_space: str
    pool: str = ""
    sub_pool: str = ""
    options: tuple[tuple[str, str], ...] = ()
    v6: bool = False

    @classmethod
    def decode(cls, obj: JsonObject) -> RequestPoolRequest:
        request = cls(
            _str(obj, "AddressSpace", required=True),
            _str(obj, "Pool"),
            _str(obj, "SubPool"),
            tuple(sorted(_str_map(obj, "Options").items())),
            _bool(obj, "V6"),
        )
        if request.sub_pool and not request.pool:
            raise ProtocolError("SubPool is given without a Pool")
        return request


@dataclass(frozen=True)
class PoolRequest:
    """ReleasePool."""

    pool_id: str

    @classmethod
    def decode(cls, obj: JsonObject) -> PoolRequest:
        return cls(_str(obj, "PoolID", required=True))


@dataclass(frozen=True)
class RequestAddressRequest:
    pool_id: str
    address: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def decode(cls, obj: JsonObject) -> RequestAddressRequest:
        return cls(
            _str(obj, "PoolID", required=True),
            _str(obj, "Address"),
            tuple(sorted(_str_map(obj, "Options").items())),
        )


@dataclass(frozen=True)
class ReleaseAddressRequest:
    pool_id: str
    address: str

    @classmethod
    def decode(cls, obj: JsonObject) -> ReleaseAddressRequest:
        return cls(_str(obj, "PoolID", required=True), _str(obj, "Address", required=True))


# -- answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticRoute:
    destination: str
    route_type: int  # 0: via next_hop; 1: connected (no next hop)
    next_hop: str = ""

    def encode(self) -> dict[str, Any]:
        route: dict[str, Any] = {"Destination": self.destination, "RouteType": self.route_type}
        if self.next_hop:
            route["NextHop"] = self.next_hop
        return route


@dataclass(frozen=True)
class JoinResponse:
    src_name: str
    dst_prefix: str
    gateway: str = ""
    gateway_ipv6: str = ""
    static_routes: tuple[StaticRoute, ...] = ()

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> JoinResponse:
        return cls(
            str(result["src_name"]),
            str(result["dst_prefix"]),
            str(result.get("gateway") or ""),
            str(result.get("gateway_ipv6") or ""),
            tuple(
                StaticRoute(
                    str(r["destination"]), int(r["route_type"]), str(r.get("next_hop") or "")
                )
                for r in result.get("static_routes") or ()
            ),
        )

    def encode(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "InterfaceName": {"SrcName": self.src_name, "DstPrefix": self.dst_prefix},
            "StaticRoutes": [r.encode() for r in self.static_routes],
        }
        if self.gateway:
            answer["Gateway"] = self.gateway
        if self.gateway_ipv6:
            answer["GatewayIPv6"] = self.gateway_ipv6
        return answer


@dataclass(frozen=True)
class CapabilitiesResponse:
    scope: str  # "local" or "global"
    connectivity_scope: str = "global"

    def __post_init__(self) -> None:
        for value in (self.scope, self.connectivity_scope):
            if value not in ("local", "global"):
                raise ValueError(f"scope {value!r} is not local or global")

    def encode(self) -> dict[str, Any]:
        return {"Scope": self.scope, "ConnectivityScope": self.connectivity_scope}


@dataclass(frozen=True)
class RequestPoolResponse:
    pool_id: str
    pool: str
    data: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> RequestPoolResponse:
        data = result.get("data") or {}
        return cls(
            str(result["pool_id"]),
            str(result["pool"]),
            tuple(sorted((str(k), str(v)) for k, v in data.items())),
        )

    def encode(self) -> dict[str, Any]:
        return {"PoolID": self.pool_id, "Pool": self.pool, "Data": dict(self.data)}


@dataclass(frozen=True)
class RequestAddressResponse:
    address: str  # CIDR: A.B.C.D/32 or X::Y/128

    def encode(self) -> dict[str, Any]:
        return {"Address": self.address, "Data": {}}


@dataclass(frozen=True)
class OperInfoResponse:
    value: tuple[tuple[str, str], ...] = ()

    def encode(self) -> dict[str, Any]:
        return {"Value": dict(self.value)}


def activate() -> dict[str, Any]:
    return {"Implements": list(IMPLEMENTS)}


def ipam_capabilities() -> dict[str, Any]:
    # No MAC address is needed to pick an address; no replay of requests on
    # a restart of Docker either: the state is in the datastore.
    return {"RequiresMACAddress": False, "RequiresRequestReplay": False}


LOCAL_ADDRESS_SPACE = "l3fabric-local"
GLOBAL_ADDRESS_SPACE = "l3fabric-global"


def address_spaces() -> dict[str, Any]:
    return {
        "LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
        "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE,
    }
