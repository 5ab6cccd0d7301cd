"""Prefixes for the receive path: ipaddress networks that hash once.

A learned route's prefix is a key in a dozen dicts and sets between ExaBGP's
JSON and the netlink message (the RIB's two indexes, its dirty set, the best
routes, the route table's desired, programmed and dirty entries). The
standard library's networks compute their hash from scratch every time
(two address-to-integer conversions and a mask), which at 100k routes was a
fifth of the agent's time. `Prefix4` and `Prefix6` are those networks with
the hash kept after the first use; they are equal to, and hash like, the
plain networks, so they mix freely with prefixes made anywhere else.

`parse_prefix` reads the text ExaBGP writes ("198.19.0.1/32") without the
general parser's detours, and falls back to it (with its checks and its
errors) for anything else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from l3fabric.model import IPNetwork

# Dotted quad without leading zeros and a decimal length: what ExaBGP writes.
# Anything else (leading zeros, masks, IPv6) takes the standard parser.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V4_PREFIX_RE = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}/(3[0-2]|[12]?[0-9])")
_HOST_BITS4 = tuple((1 << (32 - length)) - 1 for length in range(33))


class _HashedOnce:
    """Equality and a kept hash for Prefix4 and Prefix6; first among their
    bases, so these win over ipaddress's."""

    __slots__ = ("_hash",)

    def __eq__(self, other: object) -> bool:
        # Withdrawals and lookups meet the stored prefix as another object of
        # the same class: compare the integers, not through the properties.
        if type(other) is type(self):
            return (
                self._prefixlen == other._prefixlen  # type: ignore[attr-defined]
                and self.network_address._ip == other.network_address._ip  # type: ignore[attr-defined]
            )
        return super().__eq__(other)

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash: int = super().__hash__()
            return self._hash


class Prefix4(_HashedOnce, ipaddress.IPv4Network):
    """An IPv4Network whose hash is computed once."""

    __slots__ = ()

    def hosts(self) -> Iterator[ipaddress.IPv4Address]:
        # The standard library stores a function per /31 and /32 for this.
        if self.prefixlen >= 31:
            return iter(self)
        return super().hosts()

    @classmethod
    def from_int(cls, value: int, prefixlen: int) -> Prefix4:
        """The prefix of network address `value` (host bits clear)."""
        if value & _HOST_BITS4[prefixlen]:
            raise ValueError(f"{ipaddress.IPv4Address(value)}/{prefixlen} has host bits set")
        prefix = cls.__new__(cls)
        prefix.network_address = ipaddress.IPv4Address(value)
        prefix.netmask, prefix._prefixlen = cls._make_netmask(prefixlen)  # type: ignore[attr-defined]
        return prefix


class Prefix6(_HashedOnce, ipaddress.IPv6Network):
    """An IPv6Network whose hash is computed once."""

    __slots__ = ()

    def hosts(self) -> Iterator[ipaddress.IPv6Address]:
        if self.prefixlen >= 127:
            return iter(self)
        return super().hosts()


def parse_prefix(text: str) -> IPNetwork:
    """The network `text` names, host bits clear (as ipaddress.ip_network);
    ValueError when it is not one."""
    match = _V4_PREFIX_RE.fullmatch(text)
    if match is not None:
        a, b, c, d, length = match.groups()
        value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        return Prefix4.from_int(value, int(length))
    try:
        return Prefix4(text)
    except ValueError:
        pass
    try:
        return Prefix6(text)
    except ValueError:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network") from None
