"""Spec versions this plugin speaks, and small value checks shared by the
config, environment and result codecs."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from l3fabric.cni.errors import INVALID_NETWORK_CONFIG, CniError

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
# GC and STATUS exist from 1.1.0 on; CHECK from 0.4.0 (the oldest supported).
GC_STATUS_VERSION = "1.1.0"

# Network names and container ids: an alphanumeric, then alphanumerics, _ . -
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


def fail(key: str, problem: str, code: int = INVALID_NETWORK_CONFIG) -> CniError:
    return CniError(code, f"{key}: {problem}")


def string(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise fail(path + key, "is required")
        return None
    if not isinstance(value, str):
        raise fail(path + key, f"must be a string, not {type(value).__name__}")
    return value


def string_list(obj: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fail(path + key, "must be a list of strings")
    return tuple(value)


def mapping(obj: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail(path + key, f"must be an object, not {type(value).__name__}")
    return value


def boolean(obj: dict[str, Any], key: str, path: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise fail(path + key, f"must be true or false, not {value!r}")
    return value


def address(text: str, key: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise fail(key, f"{text!r} is not an IP address") from None


def network(text: str, key: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise fail(key, f"{text!r} is not a network (ADDRESS/LEN, no host bits)") from None


def interface_address(text: str, key: str) -> IPInterface:
    if "/" not in text:
        raise fail(key, f"{text!r} is not ADDRESS/LEN")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise fail(key, f"{text!r} is not ADDRESS/LEN") from None
