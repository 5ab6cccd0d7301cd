"""The ADD result, in the shape of each supported spec version.

A Result is version-neutral; `to_dict(version)` writes it as that version
expects (0.4.0 carries `version` in every ip entry, 1.x does not). Results
read back from `prevResult` are parsed leniently: plugins chained after
l3fabric may add fields this code does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from l3fabric.cni import spec
from l3fabric.cni.errors import AGENT_FAILED, CniError
from l3fabric.cni.netconf import DnsConfig, parse_dns


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None = None
    sandbox: str | None = None  # the netns path; None for host interfaces
    mtu: int | None = None  # 1.1.0 only


@dataclass(frozen=True)
class IPConfig:
    address: spec.IPInterface
    gateway: spec.IPAddress | None = None
    interface: int | None = None  # index into Result.interfaces


@dataclass(frozen=True)
class Route:
    dst: spec.IPNetwork
    gw: spec.IPAddress | None = None


@dataclass(frozen=True)
class Result:
    interfaces: tuple[Interface, ...]
    ips: tuple[IPConfig, ...]
    routes: tuple[Route, ...]
    dns: DnsConfig

    def to_dict(self, version: str) -> dict[str, Any]:
        legacy = not spec.at_least(version, "1.0.0")
        out: dict[str, Any] = {"cniVersion": version}
        out["interfaces"] = [_interface(i, version) for i in self.interfaces]
        out["ips"] = [_ip(ip, legacy) for ip in self.ips]
        out["routes"] = [_route(r) for r in self.routes]
        out["dns"] = self.dns.to_dict()
        return out

    def after(self, prev: Result) -> Result:
        """This plugin's result chained after an earlier plugin's: the
        earlier interfaces first, this plugin's ip indexes shifted."""
        shift = len(prev.interfaces)
        ips = tuple(
            replace(ip, interface=None if ip.interface is None else ip.interface + shift)
            for ip in self.ips
        )
        return Result(
            prev.interfaces + self.interfaces,
            prev.ips + ips,
            prev.routes + self.routes,
            self.dns or prev.dns,
        )

    def container_interface(self, ifname: str, sandbox: str) -> int | None:
        """The index of the interface named ifname in sandbox, if any."""
        for index, iface in enumerate(self.interfaces):
            if iface.name == ifname and iface.sandbox == sandbox:
                return index
        return None


def _interface(iface: Interface, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    if iface.sandbox:
        out["sandbox"] = iface.sandbox
    if iface.mtu is not None and spec.at_least(version, "1.1.0"):
        out["mtu"] = iface.mtu
    return out


def _ip(ip: IPConfig, legacy: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if legacy:
        out["version"] = str(ip.address.version)
    out["address"] = ip.address.with_prefixlen
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    if ip.interface is not None:
        out["interface"] = ip.interface
    return out


def _route(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {"dst": str(route.dst)}
    if route.gw is not None:
        out["gw"] = str(route.gw)
    return out


def from_agent(reply: Any, dns: DnsConfig) -> Result:
    """The ADD result from the agent's `cni.add` answer: interface 0 is the
    host end of the veth, interface 1 the container end, which every
    address is on."""
    try:
        if not isinstance(reply, dict):
            raise CniError(AGENT_FAILED, "reply is not an object")
        host = _agent_interface(reply.get("host_interface"), "host_interface", sandbox=False)
        container = _agent_interface(
            reply.get("container_interface"), "container_interface", sandbox=True
        )
        raw_ips = reply.get("ips")
        raw_routes = reply.get("routes", [])
        if not isinstance(raw_ips, list) or not isinstance(raw_routes, list):
            raise CniError(AGENT_FAILED, "ips and routes must be lists")
        ips = tuple(
            replace(_parse_ip(item, f"ips[{i}]"), interface=1) for i, item in enumerate(raw_ips)
        )
        routes = tuple(_parse_route(item, f"routes[{i}]") for i, item in enumerate(raw_routes))
    except CniError as exc:
        raise CniError(AGENT_FAILED, f"unexpected cni.add reply: {exc.details}") from None
    return Result((host, container), ips, routes, dns)


def _agent_interface(raw: Any, key: str, *, sandbox: bool) -> Interface:
    if not isinstance(raw, dict):
        raise spec.fail(key, "must be an object")
    name = spec.string(raw, "name", key + ".", required=True)
    mac = spec.string(raw, "mac", key + ".")
    box = spec.string(raw, "sandbox", key + ".", required=sandbox)
    assert name is not None
    if mac is not None and not spec.MAC.fullmatch(mac):
        raise spec.fail(key + ".mac", f"{mac!r} is not a MAC address")
    return Interface(name, mac, box if sandbox else None)


def _parse_ip(raw: Any, key: str) -> IPConfig:
    if not isinstance(raw, dict):
        raise spec.fail(key, "must be an object")
    text = spec.string(raw, "address", key + ".", required=True)
    assert text is not None
    address = spec.interface_address(text, key + ".address")
    gateway_text = spec.string(raw, "gateway", key + ".")
    gateway = spec.address(gateway_text, key + ".gateway") if gateway_text else None
    index = raw.get("interface")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
        raise spec.fail(key + ".interface", "must be an interface index")
    return IPConfig(address, gateway, index)


def _parse_route(raw: Any, key: str) -> Route:
    if not isinstance(raw, dict):
        raise spec.fail(key, "must be an object")
    dst = spec.string(raw, "dst", key + ".", required=True)
    assert dst is not None
    gw = spec.string(raw, "gw", key + ".")
    return Route(spec.network(dst, key + ".dst"), spec.address(gw, key + ".gw") if gw else None)


def parse_result(raw: dict[str, Any], key: str = "prevResult") -> Result:
    """A result of any supported version (a prevResult); unknown fields are
    kept out, the fields read are checked."""
    raw_ifaces = raw.get("interfaces") or []
    raw_ips = raw.get("ips") or []
    raw_routes = raw.get("routes") or []
    for field, value in (("interfaces", raw_ifaces), ("ips", raw_ips), ("routes", raw_routes)):
        if not isinstance(value, list):
            raise spec.fail(f"{key}.{field}", "must be a list")
    interfaces = []
    for i, item in enumerate(raw_ifaces):
        path = f"{key}.interfaces[{i}]"
        if not isinstance(item, dict):
            raise spec.fail(path, "must be an object")
        name = spec.string(item, "name", path + ".", required=True)
        assert name is not None
        mtu = item.get("mtu")
        interfaces.append(
            Interface(
                name,
                spec.string(item, "mac", path + "."),
                spec.string(item, "sandbox", path + ".") or None,
                mtu if isinstance(mtu, int) and not isinstance(mtu, bool) else None,
            )
        )
    ips = tuple(_parse_ip(item, f"{key}.ips[{i}]") for i, item in enumerate(raw_ips))
    for i, ip in enumerate(ips):
        if ip.interface is not None and ip.interface >= len(interfaces):
            raise spec.fail(f"{key}.ips[{i}].interface", f"no interface {ip.interface}")
    routes = tuple(_parse_route(item, f"{key}.routes[{i}]") for i, item in enumerate(raw_routes))
    dns = parse_dns(spec.mapping(raw, "dns", key + "."), key + ".dns.")
    return Result(tuple(interfaces), ips, routes, dns)
