"""Input checks for the BIRD configuration values (l3fabric.bgp.bird).

Each raises ValueError naming the field, so that nothing which could change
the meaning of a generated file reaches a template. AS numbers, passwords
and timers follow l3fabric.limits, as the node config and the ExaBGP
renderer do; names here are BIRD symbols, which have their own rule.
"""

from __future__ import annotations

import ipaddress
import re

from l3fabric import limits
from l3fabric.model import IPNetwork

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


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


def check_limit(problem: str | None, where: str) -> None:
    """One of l3fabric.limits' checks: problem is its message, or None."""
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def check_asn(asn: object, where: str) -> None:
    check_limit(limits.asn_error(asn), where)


def check_int(value: object, where: str, low: int, high: int) -> None:
    check_limit(limits.range_error(value, low, high), where)


def check_bool(value: object, where: str) -> None:
    check(isinstance(value, bool), where, f"{value!r} must be true or false")


def check_password(password: object, where: str) -> None:
    if password is not None:
        check_limit(limits.password_error(password), where)


def check_timers(hold: object, keepalive: object, where: str) -> None:
    """hold and keepalive may be None (the session takes the defaults); a
    keepalive alone is checked against the longest hold time."""
    if hold is not None:
        check_limit(limits.hold_time_error(hold), f"{where}hold_time")
    if keepalive is not None:
        longest = hold if isinstance(hold, int) else limits.HOLD_TIME_MAX
        check_limit(limits.keepalive_error(keepalive, longest), f"{where}keepalive")


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
