"""Where l3fabric keeps shared state: nodes, workloads, IPAM blocks.

open_datastore() picks a backend by name; everything above this package
talks to the Datastore protocol only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from l3fabric.datastore.base import (
    Datastore,
    DatastoreError,
    InvalidKey,
    KeyValue,
    VersionConflict,
    WatchCompacted,
    WatchEvent,
    validate_prefix,
)
from l3fabric.datastore.file import FileDatastore

__all__ = [
    "Datastore",
    "DatastoreError",
    "FileDatastore",
    "InvalidKey",
    "KeyValue",
    "VersionConflict",
    "WatchCompacted",
    "WatchEvent",
    "open_datastore",
]

BACKENDS = ("file", "etcd")


def open_datastore(
    type: str,
    *,
    path: Path | None = None,
    endpoints: Sequence[str] = (),
    prefix: str = "/l3fabric",
) -> Datastore:
    """A datastore of the named type. Does no I/O: the file backend creates
    its directory on first use.

    prefix is the key namespace callers build their keys under; it is checked
    here so a bad one fails at start-up. The file backend keeps one fabric per
    directory and needs no more than that; an etcd backend will scope its
    credentials and watches to it.
    """
    validate_prefix(prefix)
    if prefix.endswith("/"):
        raise DatastoreError(f"datastore prefix {prefix!r} must not end with '/'")
    if type == "file":
        if path is None:
            raise DatastoreError("the file datastore needs a path (datastore.path)")
        if endpoints:
            raise DatastoreError("the file datastore takes no endpoints; they are for etcd")
        return FileDatastore(Path(path))
    if type == "etcd":
        raise DatastoreError("etcd backend not available yet")
    raise DatastoreError(f"unknown datastore type {type!r}; expected one of {', '.join(BACKENDS)}")
