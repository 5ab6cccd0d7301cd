"""Input checks for the BIRD configuration values (l3fabric.bgp.bird).

Each raises ValueError naming the field, so that nothing which could change
the meaning of a generated file reaches a template.
"""

from __future__ import annotations

import ipaddress
import re

from l3fabric.model import IPNetwork

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
# TCP-MD5 keys are at most 80 bytes (TCP_MD5SIG_MAXKEYLEN).
PASSWORD_RE = re.compile(r"[\x20-\x7e]{1,80}")
MAX_ASN = 2**32 - 1


def check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {message}")


def check_name(name: object, where: str) -> None:
    check(isinstance(name, str), where, "must be a string")
    assert isinstance(name, str)
    check(
        bool(NAME_RE.fullmatch(name)),
        where,
        f"{name!r} must start with a letter and contain only letters, digits and '_' "
        "(at most 32 characters)",
    )


def check_asn(asn: object, where: str) -> None:
    check(
        isinstance(asn, int) and not isinstance(asn, bool) and 1 <= asn <= MAX_ASN,
        where,
        f"{asn!r} is not an AS number (1..{MAX_ASN})",
    )


def check_int(value: object, where: str, low: int, high: int) -> None:
    check(
        isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
        where,
        f"{value!r} must be an integer in {low}..{high}",
    )


def check_bool(value: object, where: str) -> None:
    check(isinstance(value, bool), where, f"{value!r} must be true or false")


def check_password(password: object, where: str) -> None:
    if password is None:
        return
    check(isinstance(password, str), where, "must be a string")
    assert isinstance(password, str)
    check(
        bool(PASSWORD_RE.fullmatch(password)) and '"' not in password and "\\" not in password,
        where,
        "must be 1-80 printable ASCII characters without '\"', '\\' or newlines",
    )


def check_timers(hold: object, keepalive: object, where: str) -> None:
    # BGP allows a hold time of 0 (no keepalives), but a fabric must notice a
    # dead peer, so 0 is refused along with the RFC 4271 minimum of 3.
    if hold is not None:
        check_int(hold, f"{where}hold_time", 3, 65535)
    if keepalive is not None:
        check_int(keepalive, f"{where}keepalive", 1, 21845)
    if isinstance(hold, int) and isinstance(keepalive, int):
        check(
            keepalive * 3 <= hold,
            f"{where}keepalive",
            f"{keepalive} must be at most a third of hold_time {hold}, so that two "
            "lost keepalives do not drop the session",
        )


def check_ipv6_next_hop(next_hop: object, session_version: int, where: str) -> None:
    # On an IPv4 session BIRD takes the IPv6 next hop from the interface
    # facing the peer; a multihop session has no such interface.
    if next_hop is None:
        return
    check(
        isinstance(next_hop, ipaddress.IPv6Address)
        and not next_hop.is_link_local
        and not next_hop.is_unspecified,
        where,
        f"{next_hop!r} must be a global IPv6 address",
    )
    check(session_version == 4, where, "only IPv4 sessions need an IPv6 next hop address")


def check_networks(networks: object, where: str) -> None:
    check(isinstance(networks, tuple), where, "must be a tuple")
    assert isinstance(networks, tuple)
    for i, prefix in enumerate(networks):
        check(
            isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network),
            f"{where}[{i}]",
            f"{prefix!r} is not a network",
        )


def inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False
