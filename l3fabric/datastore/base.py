"""The datastore interface every backend implements, and the values it trades in.

A datastore is a flat map from keys ("/l3fabric/nodes/node1") to opaque bytes,
with a per-key version for compare-and-swap and a store-wide revision that
orders every change so that watchers can follow along. The semantics follow
etcd's (version == the key's modification revision), so an etcd backend can
implement the same protocol without translation.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import Literal, Protocol

MAX_KEY_LENGTH = 200
_SPACE = re.compile(r"\s")


class DatastoreError(Exception):
    """The store cannot do what was asked (I/O failure, corruption, closed)."""


class DatastoreUnavailable(DatastoreError):
    """No endpoint of the store answered in time. Nothing is known to have
    changed (a write whose answer was lost says so in the message); the caller
    may try again later. The file backend never raises it."""


class LeaseExpired(DatastoreError):
    """The lease named by a write or a keep-alive has expired, been revoked,
    or never existed: grant a new one and write again."""

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease:x} has expired or does not exist; grant a new one")
        self.lease = lease


class InvalidKey(DatastoreError, ValueError):
    """A key or prefix that is not well formed."""


class VersionConflict(DatastoreError):
    """A compare-and-swap found a different version than the caller expected."""

    def __init__(self, key: str, expected: int, actual: int | None) -> None:
        found = "absent" if actual is None else f"version {actual}"
        wanted = "absent" if expected == 0 else f"version {expected}"
        super().__init__(f"version conflict on {key}: expected {wanted}, found {found}")
        self.key = key
        self.expected = expected
        self.actual = actual


class WatchCompacted(DatastoreError):
    """The change history no longer reaches back to the revision asked for;
    the caller must list again and watch from the revision it got then."""

    def __init__(self, since_revision: int, oldest_available: int) -> None:
        super().__init__(
            f"watch from revision {since_revision} is no longer possible: history was "
            f"compacted up to revision {oldest_available}; list again and watch from there"
        )
        self.since_revision = since_revision
        self.oldest_available = oldest_available


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    version: int  # the store revision of the key's last put; > 0
    lease: int = 0  # the lease the key lives under; 0 for none


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    key: str
    value: bytes | None  # None for deletes
    revision: int


class Datastore(Protocol):
    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None when it does not exist."""
        ...

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write a value; returns its new version.

        expect_version None writes unconditionally, 0 only if the key is
        absent, n only if the key's current version is n; otherwise raises
        VersionConflict and changes nothing.

        lease attaches the key to a lease from grant_lease (None or 0: no
        lease): when the lease expires or is revoked the key is deleted, and
        watchers see a delete event. A write under a dead lease raises
        LeaseExpired and changes nothing.
        """
        ...

    def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        """Remove a key; False if it was absent. expect_version as for put
        (0 means "only if absent", so it deletes nothing)."""
        ...

    def list(self, prefix: str) -> list[KeyValue]:
        """Every key starting with prefix, sorted by key."""
        ...

    def revision(self) -> int:
        """The store-wide revision: 0 for an empty store, +1 per change."""
        ...

    def watch(
        self, prefix: str, since_revision: int, timeout: float
    ) -> tuple[int, builtins.list[WatchEvent]]:
        """Changes under prefix with revision > since_revision, oldest first.

        Blocks up to timeout seconds while there are none. Returns the
        revision the caller should pass next time, and the events (possibly
        none). Raises WatchCompacted when history before since_revision is gone.
        """
        ...

    def grant_lease(self, ttl: float) -> int:
        """A new lease that expires ttl seconds from now unless kept alive;
        returns its id (> 0). etcd rounds ttl up to whole seconds and may
        raise it to its minimum."""
        ...

    def keep_alive(self, lease_id: int) -> float | None:
        """Restart the lease's ttl; returns the ttl now remaining, or None
        when the lease has already expired, been revoked or never existed."""
        ...

    def lease_ttl(self, lease_id: int) -> float | None:
        """Seconds left before the lease expires, or None as for keep_alive."""
        ...

    def revoke_lease(self, lease_id: int) -> bool:
        """End the lease now, deleting its keys; False if it was not alive."""
        ...

    def close(self) -> None: ...


def validate_key(key: object) -> str:
    """Keys are absolute slash-separated paths of printable characters."""
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a string, not {type(key).__name__}")
    if not key.startswith("/"):
        raise InvalidKey(f"key {key!r} is not absolute: it must start with '/'")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"key {key[:40]!r}... is {len(key)} characters; at most {MAX_KEY_LENGTH}")
    _check_characters(key, "key")
    if key.endswith("/"):
        raise InvalidKey(f"key {key!r} ends with '/'; keys name values, not directories")
    segments = key[1:].split("/")
    if "" in segments:
        raise InvalidKey(f"key {key!r} has an empty path segment ('//')")
    if ".." in segments or "." in segments:
        raise InvalidKey(f"key {key!r} has a '.' or '..' path segment")
    return key


def validate_prefix(prefix: object) -> str:
    """A prefix is any absolute key start; "/" matches everything."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a string, not {type(prefix).__name__}")
    if not prefix.startswith("/"):
        raise InvalidKey(f"prefix {prefix!r} is not absolute: it must start with '/'")
    if len(prefix) > MAX_KEY_LENGTH:
        raise InvalidKey(f"prefix {prefix[:40]!r}... is longer than {MAX_KEY_LENGTH} characters")
    _check_characters(prefix, "prefix")
    return prefix


def validate_expect_version(expect_version: object) -> int | None:
    if expect_version is None:
        return None
    if not isinstance(expect_version, int) or isinstance(expect_version, bool):
        raise TypeError(f"expect_version must be an int or None, not {expect_version!r}")
    if expect_version < 0:
        raise ValueError(f"expect_version must be >= 0, not {expect_version}")
    return expect_version


def validate_lease(lease: object) -> int:
    """A lease id for put: None and 0 mean no lease."""
    if lease is None:
        return 0
    if not isinstance(lease, int) or isinstance(lease, bool) or lease < 0:
        raise ValueError(f"lease must be a lease id (an int > 0) or None, not {lease!r}")
    return lease


def validate_lease_id(lease_id: object) -> int:
    """A lease id for the lease calls: > 0."""
    lease = validate_lease(lease_id)
    if lease == 0:
        raise ValueError("lease id must be > 0")
    return lease


def validate_ttl(ttl: object) -> float:
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 86400 * 365:
        raise ValueError(f"lease ttl must be a number of seconds > 0, not {ttl!r}")
    return float(ttl)


def _check_characters(text: str, what: str) -> None:
    if text.isprintable() and not _SPACE.search(text):
        return
    for char in text:
        if not char.isprintable() or char.isspace():
            raise InvalidKey(
                f"{what} {text!r} contains {char!r}; only printable non-space characters"
            )
