"""The network configuration a runtime streams to the plugin on stdin.

Strict where l3fabric reads a key (a wrong type is an error naming the key),
silent about keys it does not know: the specification lets runtimes and
other tools add their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l3fabric import control
from l3fabric.cni import spec
from l3fabric.cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    UNSUPPORTED_FIELD,
    CniError,
)

DNS_KEYS = ("nameservers", "domain", "search", "options")
# GC's list of attachments still in use; runtimes send both names (the older
# one from a slip in early 1.1.0 drafts), and a union of the two is kept.
ATTACHMENT_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


@dataclass(frozen=True)
class DnsConfig:
    nameservers: tuple[str, ...] = ()
    domain: str | None = None
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.nameservers or self.domain or self.search or self.options)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.domain:
            out["domain"] = self.domain
        if self.search:
            out["search"] = list(self.search)
        if self.options:
            out["options"] = list(self.options)
        return out


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    socket: Path
    pools: tuple[str, ...] | None  # pool CIDRs to assign from; None: the agent's choice
    dns: DnsConfig
    labels: tuple[tuple[str, str], ...]  # from args.cni.labels
    runtime_config: dict[str, Any]
    prev_result: dict[str, Any] | None  # raw; result.parse_result reads it when needed
    valid_attachments: tuple[Attachment, ...] | None  # GC only; None when absent


def decode(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODING_FAILURE, f"network configuration is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CniError(DECODING_FAILURE, "network configuration is not a JSON object")
    return obj


def check_version(obj: dict[str, Any], path: str = "") -> str:
    version = spec.string(obj, "cniVersion", path, required=True)
    assert version is not None
    if version not in spec.SUPPORTED_VERSIONS:
        supported = ", ".join(spec.SUPPORTED_VERSIONS)
        raise CniError(
            INCOMPATIBLE_VERSION, f"cniVersion {version!r} is not supported ({supported} are)"
        )
    return version


def reply_version(data: bytes) -> str:
    """The version to answer in: the config's own when it is usable."""
    try:
        return check_version(decode(data))
    except CniError:
        return spec.LATEST_VERSION


def parse_netconf(data: bytes) -> NetConf:
    obj = decode(data)
    version = check_version(obj)
    name = spec.string(obj, "name", "", required=True)
    assert name is not None
    if not spec.IDENTIFIER.fullmatch(name):
        raise spec.fail("name", f"{name!r} must start with a letter or digit, then [A-Za-z0-9_.-]")
    kind = spec.string(obj, "type", "", required=True)
    if not kind:
        raise spec.fail("type", "must not be empty")
    if obj.get("ipam") is not None:
        raise CniError(
            UNSUPPORTED_FIELD,
            f"ipam: {json.dumps(obj['ipam'])}: l3fabric assigns addresses itself (use pools)",
        )
    socket = spec.string(obj, "socket", "")
    if socket is not None and not socket.startswith("/"):
        raise spec.fail("socket", f"{socket!r} must be an absolute path")
    return NetConf(
        cni_version=version,
        name=name,
        type=kind,
        socket=Path(socket) if socket else control.DEFAULT_SOCKET,
        pools=_pools(obj),
        dns=parse_dns(spec.mapping(obj, "dns", ""), "dns."),
        labels=_labels(spec.mapping(obj, "args", "")),
        runtime_config=spec.mapping(obj, "runtimeConfig", "") or {},
        prev_result=spec.mapping(obj, "prevResult", ""),
        valid_attachments=_attachments(obj),
    )


def _pools(obj: dict[str, Any]) -> tuple[str, ...] | None:
    if obj.get("pools") is None:
        return None
    pools = spec.string_list(obj, "pools", "")
    if not pools:
        raise spec.fail("pools", "must list at least one pool CIDR (or leave the key out)")
    canonical = [str(spec.network(cidr, f"pools[{i}]")) for i, cidr in enumerate(pools)]
    if len(set(canonical)) != len(canonical):
        raise spec.fail("pools", "lists a pool twice")
    return tuple(canonical)


def parse_dns(obj: dict[str, Any] | None, path: str) -> DnsConfig:
    if obj is None:
        return DnsConfig()
    for key in obj:
        if key not in DNS_KEYS:
            raise CniError(
                UNSUPPORTED_FIELD, f"{path}{key}: {json.dumps(obj[key])}: unknown DNS key"
            )
    nameservers = spec.string_list(obj, "nameservers", path)
    for i, server in enumerate(nameservers):
        spec.address(server, f"{path}nameservers[{i}]")
    return DnsConfig(
        nameservers=nameservers,
        domain=spec.string(obj, "domain", path),
        search=spec.string_list(obj, "search", path),
        options=spec.string_list(obj, "options", path),
    )


def _labels(args: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """args.cni.labels: [{"key": K, "value": V}, ...] (the CNI conventions)."""
    cni = spec.mapping(args or {}, "cni", "args.")
    raw = (cni or {}).get("labels")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise spec.fail("args.cni.labels", "must be a list of {key, value} objects")
    labels: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"args.cni.labels[{i}]."
        if not isinstance(item, dict):
            raise spec.fail(path[:-1], "must be a {key, value} object")
        key = spec.string(item, "key", path, required=True)
        value = spec.string(item, "value", path, required=True)
        assert key is not None and value is not None
        labels[key] = value
    return tuple(sorted(labels.items()))


def _attachments(obj: dict[str, Any]) -> tuple[Attachment, ...] | None:
    found: dict[Attachment, None] = {}
    present = False
    for key in ATTACHMENT_KEYS:
        raw = obj.get(key)
        if raw is None:
            continue
        present = True
        if not isinstance(raw, list):
            raise spec.fail(key, "must be a list of {containerID, ifname} objects")
        for i, item in enumerate(raw):
            path = f"{key}[{i}]."
            if not isinstance(item, dict):
                raise spec.fail(path[:-1], "must be a {containerID, ifname} object")
            container_id = spec.string(item, "containerID", path, required=True)
            ifname = spec.string(item, "ifname", path, required=True)
            assert container_id is not None and ifname is not None
            found[Attachment(container_id, ifname)] = None
    return tuple(found) if present else None
