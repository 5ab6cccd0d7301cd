"""The generic machinery of a strict reader of YAML data, used by config.py.

A Section hands out typed values by key, tracks the key path of every value
for messages, and reports unknown keys; Errors collects every problem so that
the caller can raise them all at once. Converters turn one raw YAML value into
a typed one or raise Invalid with a message that the reader prefixes with the
file and key path.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from l3fabric.model import IPAddress, IPNetwork

T = TypeVar("T")
D = TypeVar("D")
A = TypeVar("A", ipaddress.IPv4Address, ipaddress.IPv6Address)
H = TypeVar("H", bound=Hashable)


# --- the reader ---------------------------------------------------------------


class Invalid(ValueError):
    """A converter's complaint about one value; the reader adds file and path."""


class Errors:
    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self._failed: set[str] = set()

    def add(self, path: str, message: str) -> None:
        self.messages.append(f"{self.source}: {path}: {message}")
        self._failed.add(path)

    def ok(self, *paths: str) -> bool:
        """True when neither the paths nor a section around them failed, so a
        cross-check does not pile a second error onto a placeholder value."""
        return not any(_within(path, bad) for path in paths for bad in self._failed)

    def clean(self, path: str) -> bool:
        """True when nothing at or below path failed."""
        return not any(_within(bad, path) for bad in self._failed)


def _within(path: str, outer: str) -> bool:
    return path == outer or path.startswith((outer + ".", outer + "["))


class Section:
    """One mapping of the file. Hands out typed values by key, knows the key
    path for messages, and remembers which keys were read so that close() can
    report the rest as unknown. A section that is absent or broken reads as
    empty and does not complain about its required keys."""

    def __init__(self, errors: Errors, path: str, data: Mapping[str, object], present: bool):
        self.errors = errors
        self.path = path
        self.present = present
        self._data = data
        self._read: set[str] = set()

    @classmethod
    def of(cls, errors: Errors, path: str, raw: object) -> Section:
        if raw is None:
            return cls(errors, path, {}, present=False)
        if not isinstance(raw, Mapping):
            errors.add(path, f"expected a mapping, got {describe(raw)}")
            return cls(errors, path, {}, present=False)
        for key in raw:
            if not isinstance(key, str):
                errors.add(path or "(top level)", f"key {key!r} is not a string (quote it)")
        data = {key: value for key, value in raw.items() if isinstance(key, str)}
        return cls(errors, path, data, present=True)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> None:
        self.errors.add(self.at(key), message)

    def ok(self, *keys: str) -> bool:
        return self.errors.ok(*(self.at(key) for key in keys))

    def has(self, key: str) -> bool:
        # A key set to null (`ipv6:` with nothing after it) counts as absent.
        return self._data.get(key) is not None

    def _take(self, key: str, required: bool = False) -> object:
        self._read.add(key)
        if required and self.present and not self.has(key):
            self.fail(key, "is required")
        return self._data.get(key)

    def value(
        self, key: str, convert: Callable[[object], T], default: D, *, required: bool = False
    ) -> T | D:
        raw = self._take(key, required)
        if raw is None:
            return default
        try:
            return convert(raw)
        except Invalid as exc:
            self.fail(key, str(exc))
            return default

    def section(self, key: str, *, required: bool = False) -> Section:
        return Section.of(self.errors, self.at(key), self._take(key, required))

    def items(self, key: str) -> list[tuple[str, object]]:
        """The items of a list with their own key paths; [] when absent."""
        raw = self._take(key)
        if raw is not None and not isinstance(raw, list):
            self.fail(key, f"expected a list, got {describe(raw)}")
        if not isinstance(raw, list):
            return []
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(raw)]

    def values(self, key: str, convert: Callable[[object], T]) -> list[tuple[str, T]]:
        """The convertible items of a list; bad items are reported."""
        converted = []
        for path, item in self.items(key):
            try:
                converted.append((path, convert(item)))
            except Invalid as exc:
                self.errors.add(path, str(exc))
        return converted

    def close(self) -> None:
        known = sorted(self._read)
        for key in self._data.keys() - self._read:
            match = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {match[0]!r}?" if match else f"known keys: {', '.join(known)}"
            self.fail(key, f"unknown key ({hint})")


def unique(errors: Errors, entries: Iterable[tuple[str, str, H]]) -> tuple[H, ...]:
    """The distinct values of (error path, where, value) entries; a repeat is
    reported at its own path, naming where the value was first seen."""
    seen: dict[H, str] = {}
    for path, where, value in entries:
        if value in seen:
            errors.add(path, f"{value} is also {seen[value]}")
        seen.setdefault(value, where)
    return tuple(seen)


# --- converters: a raw YAML value to a typed one, or Invalid ------------------


def describe(value: object) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else f"boolean {str(value).lower()}"
    for kind, word in ((int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return f"{word} {value!r}"
    if isinstance(value, list | Mapping):
        return "a list" if isinstance(value, list) else "a mapping"
    return type(value).__name__


def string(raw: object) -> str:
    if not isinstance(raw, str):
        raise Invalid(f"expected a string, got {describe(raw)}")
    if not raw.isprintable():  # the value is not echoed: it may be a password
        raise Invalid("contains control characters")
    return raw


def boolean(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise Invalid(f"expected true or false, got {describe(raw)}")
    return raw


def integer(lo: int, hi: int) -> Callable[[object], int]:
    def convert(raw: object) -> int:
        value = whole(raw)
        if not lo <= value <= hi:
            raise Invalid(f"{value} is out of range {lo}..{hi}")
        return value

    return convert


def limited(
    base: Callable[[object], T], error_of: Callable[[object], str | None]
) -> Callable[[object], T]:
    """A converter from one of l3fabric.limits' checks: `base` checks the type
    (with this reader's wording), then the check its value."""

    def convert(raw: object) -> T:
        value = base(raw)
        message = error_of(value)
        if message is not None:
            raise Invalid(message)
        return value

    return convert


def whole(raw: object) -> int:
    # bool is an int in Python, but `asn: true` is a mistake, not 1.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise Invalid(f"expected an integer, got {describe(raw)}")
    return raw


def secret(raw: object) -> str:
    """A string that is never echoed, not even when it is a YAML number."""
    if not isinstance(raw, str):
        raise Invalid("expected a string (quote it)")
    return raw


def interval(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise Invalid(f"expected a number of seconds, got {describe(raw)}")
    if not 0 < raw <= 86400:  # also false for NaN
        raise Invalid(f"{raw} must be more than 0 and at most 86400 seconds")
    return float(raw)


def choice(*choices: str) -> Callable[[object], str]:
    def convert(raw: object) -> str:
        if string(raw) not in choices:
            raise Invalid(f"{raw!r} is not one of {', '.join(choices)}")
        return str(raw)

    return convert


def absolute_path(raw: object) -> Path:
    text = string(raw)
    if not os.path.isabs(text):
        raise Invalid(f"{text!r} is not an absolute path")
    return Path(text)


def unicast(raw: object) -> IPAddress:
    if not isinstance(raw, str):
        # YAML 1.1 reads an unquoted 1:2:3:4:5:6:7:8 as a base-60 integer.
        raise Invalid(f"expected an IP address string, got {describe(raw)} (quote it)")
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise Invalid(f"{raw} is not a valid IP address") from None
    for kind in ("unspecified", "loopback", "multicast", "link_local", "reserved"):
        if getattr(address, "is_" + kind):
            raise Invalid(f"{address} is not a unicast address ({kind.replace('_', '-')})")
    return address


def unicast_of(kind: type[A]) -> Callable[[object], A]:
    def convert(raw: object) -> A:
        address = unicast(raw)
        if not isinstance(address, kind):
            raise Invalid(
                f"{address} is not an IPv{4 if kind is ipaddress.IPv4Address else 6} address"
            )
        return address

    return convert


def network(raw: object) -> IPNetwork:
    if not isinstance(raw, str):
        raise Invalid(f"expected a network like 100.64.0.0/16, got {describe(raw)}")
    try:
        return ipaddress.ip_network(raw)
    except ValueError:
        pass
    try:
        ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise Invalid(f"{raw} is not a valid network") from None
    raise Invalid(f"{raw} has host bits set")
