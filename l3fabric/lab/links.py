"""containerlab links: veth links in either form (`endpoints: ["a:eth1",
"b:eth1"]` or `type: veth` with node/interface mappings), checked strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from l3fabric.lab.keys import check_keys
from l3fabric.model import IFNAMSIZ

LINK_KEYS = ("type", "endpoints")
LINK_UNSUPPORTED = ("mtu", "ipv4", "ipv6", "vars", "labels")
ENDPOINT_KEYS = ("node", "interface")
ENDPOINT_UNSUPPORTED = ("mac", "ipv4", "ipv6", "vars")
_IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, order=True)
class Endpoint:
    node: str
    iface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.iface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


def _parse_endpoint(value: Any, key: str, error: Any) -> Endpoint | None:
    if isinstance(value, str):
        node, sep, iface = value.partition(":")
        if not sep or not node or not iface:
            error(key, f"{value!r} is not NODE:INTERFACE")
            return None
    elif isinstance(value, dict):
        check_keys(value, key, ENDPOINT_KEYS, ENDPOINT_UNSUPPORTED, error)
        raw_node, raw_iface = value.get("node"), value.get("interface")
        if not isinstance(raw_node, str) or not isinstance(raw_iface, str):
            error(key, "needs node and interface")
            return None
        node, iface = raw_node, raw_iface
    else:
        error(key, "must be NODE:INTERFACE or a mapping with node and interface")
        return None
    if len(iface) > IFNAMSIZ:
        error(key, f"interface name {iface!r} is longer than {IFNAMSIZ} characters")
        return None
    if not _IFACE_RE.match(iface) or iface == "lo":
        error(key, f"{iface!r} is not a usable interface name")
        return None
    return Endpoint(node, iface)


def parse_links(raw: Any, valid_nodes: set[str], all_nodes: set[str], error: Any) -> list[Link]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        error("topology.links", "must be a list")
        return []
    links: list[Link] = []
    seen: dict[Endpoint, str] = {}
    for i, item in enumerate(raw):
        key = f"topology.links[{i}]"
        if not isinstance(item, dict):
            error(key, "must be a mapping with endpoints")
            continue
        check_keys(item, key, LINK_KEYS, LINK_UNSUPPORTED, error)
        link_type = item.get("type", "veth")
        if link_type != "veth":
            error(f"{key}.type", f"link type {link_type!r} is not supported (only veth)")
            continue
        raw_endpoints = item.get("endpoints")
        if not isinstance(raw_endpoints, list) or len(raw_endpoints) != 2:
            error(f"{key}.endpoints", "must list exactly two endpoints")
            continue
        ends = [
            _parse_endpoint(value, f"{key}.endpoints[{j}]", error)
            for j, value in enumerate(raw_endpoints)
        ]
        ok = True
        for j, end in enumerate(ends):
            if end is None:
                ok = False
                continue
            if end.node not in all_nodes:
                error(f"{key}.endpoints[{j}]", f"unknown node {end.node!r}")
                ok = False
            elif end in seen:
                error(f"{key}.endpoints[{j}]", f"{end} is already used by {seen[end]}")
                ok = False
            else:
                seen[end] = key
        a, b = ends
        if (
            ok
            and a is not None
            and b is not None
            and a.node in valid_nodes
            and b.node in valid_nodes
        ):
            links.append(Link(a, b))
    return links
