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
    DatastoreUnavailable,
    InvalidKey,
    KeyValue,
    LeaseExpired,
    VersionConflict,
    WatchCompacted,
    WatchEvent,
    validate_prefix,
)
from l3fabric.datastore.etcd import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, EtcdDatastore
from l3fabric.datastore.file import FileDatastore

__all__ = [
    "Datastore",
    "DatastoreError",
    "DatastoreUnavailable",
    "EtcdDatastore",
    "FileDatastore",
    "InvalidKey",
    "KeyValue",
    "LeaseExpired",
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
    timeout: float = DEFAULT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> Datastore:
    """A datastore of the named type. Does no I/O: the file backend creates
    its directory on first use, the etcd backend connects on its first request.

    prefix is the key namespace callers build their keys under; it is checked
    here so a bad one fails at start-up. The file backend keeps one fabric per
    directory and needs no more than that; the etcd backend scopes its watches
    to it. timeout bounds every etcd request, failover included (it then
    raises DatastoreUnavailable); ca, cert and key are PEM files for TLS.
    """
    validate_prefix(prefix)
    if prefix.endswith("/"):
        raise DatastoreError(f"datastore prefix {prefix!r} must not end with '/'")
    if type == "file":
        if path is None:
            raise DatastoreError("the file datastore needs a path (datastore.path)")
        if endpoints:
            raise DatastoreError("the file datastore takes no endpoints; they are for etcd")
        if ca or cert or key:
            raise DatastoreError("the file datastore takes no TLS files; they are for etcd")
        return FileDatastore(Path(path))
    if type == "etcd":
        if path is not None:
            raise DatastoreError("the etcd datastore takes no path; it is for the file datastore")
        return EtcdDatastore(
            list(endpoints),
            prefix=prefix,
            timeout=timeout,
            connect_timeout=min(connect_timeout, timeout),
            ca=None if ca is None else str(ca),
            cert=None if cert is None else str(cert),
            key=None if key is None else str(key),
        )
    raise DatastoreError(f"unknown datastore type {type!r}; expected one of {', '.join(BACKENDS)}")
