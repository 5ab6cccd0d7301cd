"""The etcd v3 datastore: the fabric's state shared by every host.

Keys are stored in etcd as they are (a node record is the etcd key
/l3fabric/nodes/NODE), so etcdctl shows the same layout as the docs. A key's
version is its mod_revision, and revision() is the cluster's revision, so the
protocol maps onto etcd without translation:

    put/delete with expect_version  a txn comparing the key's mod_revision
                                    (0 is what etcd compares for an absent key)
    leases                          etcd leases; a key under one is deleted
                                    by etcd when it expires
    watch                           a watch stream from since_revision + 1

A watch follows the whole fabric prefix (every key under it when the watched
prefix lies inside it, else every key), not just the watched prefix: every
revision is then seen as an event, which is how watch() knows how far it has
caught up and can hand back the store's revision even when nothing under the
watched prefix changed, as the file backend does. Without that, a quiet
prefix would keep its watch at an old revision, and etcd would replay the
whole history since then on every call.
"""

from __future__ import annotations

import builtins
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

from l3fabric.datastore.base import (
    DatastoreError,
    KeyValue,
    LeaseExpired,
    VersionConflict,
    WatchCompacted,
    WatchEvent,
    validate_expect_version,
    validate_key,
    validate_lease,
    validate_lease_id,
    validate_prefix,
    validate_ttl,
)
from l3fabric.datastore.etcd_gateway import (
    GRPC_NOT_FOUND,
    EtcdError,
    Gateway,
    StreamEnded,
    b64,
    range_end,
    stream_messages,
    unb64,
)

DEFAULT_TIMEOUT = 2.0
DEFAULT_CONNECT_TIMEOUT = 1.0
LIST_PAGE = 1000
# Longest a watch waits past its timeout for a history replay etcd has
# announced (a watch from an old revision is answered on etcd's next sync
# pass, up to 100 ms later).
CATCH_UP_GRACE = 1.0
_ASCEND, _BY_KEY = 1, 0


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        unb64(item.get("key")).decode(errors="replace"),
        unb64(item.get("value")),
        int(item.get("mod_revision", 0)),
        int(item.get("lease", 0) or 0),
    )


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


class EtcdDatastore:
    """Datastore on an etcd v3 cluster through its JSON gateway.

    Safe for many threads. The constructor only checks its arguments; the
    first request connects. Every request fails over between the endpoints
    and gives up with DatastoreUnavailable after `timeout` seconds.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "/l3fabric",
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        validate_prefix(prefix)
        if prefix.endswith("/"):
            raise DatastoreError(f"datastore prefix {prefix!r} must not end with '/'")
        if not 0 < timeout <= 300:
            raise DatastoreError(f"etcd timeout must be in (0, 300] seconds, not {timeout}")
        if not 0 < connect_timeout <= timeout:
            raise DatastoreError(
                f"etcd connect timeout must be in (0, timeout={timeout}] seconds, "
                f"not {connect_timeout}"
            )
        if (cert is None) != (key is None):
            raise DatastoreError("etcd TLS needs both a client cert and its key, or neither")
        if (ca or cert) and not all(str(url).startswith("https://") for url in endpoints):
            raise DatastoreError("etcd TLS settings (ca, cert, key) need https:// endpoints")
        self.prefix = prefix
        self._gateway = Gateway(
            endpoints, timeout=timeout, connect_timeout=connect_timeout, ca=ca, cert=cert, key=key
        )

    def __repr__(self) -> str:
        return f"EtcdDatastore({list(self._gateway.urls)!r}, prefix={self.prefix!r})"

    def _call(self, path: str, payload: dict[str, Any], *, write: bool = False) -> dict[str, Any]:
        return self._gateway.call(path, payload, write=write)

    # -- reading -------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        answer = self._call("kv/range", {"key": b64(validate_key(key))})
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[KeyValue]:
        start = validate_prefix(prefix).encode()
        end = b64(range_end(start))
        found: list[KeyValue] = []
        revision = None
        while True:
            request: dict[str, Any] = {
                "key": b64(start),
                "range_end": end,
                "limit": LIST_PAGE,
                "sort_order": _ASCEND,
                "sort_target": _BY_KEY,
            }
            if revision is not None:
                request["revision"] = revision  # every page from one snapshot
            answer = self._call("kv/range", request)
            revision = _revision(answer)
            kvs = answer.get("kvs") or []
            found += [_kv(item) for item in kvs]
            if not answer.get("more") or not kvs:
                return found
            start = unb64(kvs[-1]["key"]) + b"\0"

    def revision(self) -> int:
        # A key inside the prefix: a role may grant no more than that.
        answer = self._call("kv/range", {"key": b64(self.prefix + "/"), "count_only": True})
        return _revision(answer)

    # -- writing -------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_version: int | None = None,
        lease: int | None = None,
    ) -> int:
        validate_key(key)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"value for {key} must be bytes, not {type(value).__name__}")
        expected = validate_expect_version(expect_version)
        lease_id = validate_lease(lease)
        request: dict[str, Any] = {"key": b64(key), "value": b64(bytes(value))}
        if lease_id:
            request["lease"] = str(lease_id)
        try:
            if expected is None:
                return _revision(self._call("kv/put", request, write=True))
            answer = self._txn(key, expected, {"request_put": request})
        except EtcdError as exc:
            raise self._lease_error(exc, lease_id) from exc
        return _revision(answer)

    def delete(self, key: str, *, expect_version: int | None = None) -> bool:
        validate_key(key)
        expected = validate_expect_version(expect_version)
        request = {"key": b64(key)}
        if expected is None:
            answer = self._call("kv/deleterange", request, write=True)
            return int(answer.get("deleted", 0)) > 0
        if expected == 0:
            # "Only if absent": there is nothing to delete either way.
            current = self.get(key)
            if current is not None:
                raise VersionConflict(key, 0, current.version)
            return False
        answer = self._txn(key, expected, {"request_delete_range": request})
        responses = answer.get("responses") or [{}]
        deleted = responses[0].get("response_delete_range", {}).get("deleted", 0)
        return int(deleted) > 0

    def _txn(self, key: str, expected: int, operation: dict[str, Any]) -> dict[str, Any]:
        """Run operation if the key's mod_revision is expected, else raise
        VersionConflict with the version found."""
        txn = {
            "compare": [
                {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": expected}
            ],
            "success": [operation],
            "failure": [{"request_range": {"key": b64(key)}}],
        }
        answer = self._call("kv/txn", txn, write=True)
        if answer.get("succeeded"):
            return answer
        responses = answer.get("responses") or [{}]
        kvs = responses[0].get("response_range", {}).get("kvs") or []
        raise VersionConflict(key, expected, _kv(kvs[0]).version if kvs else None)

    @staticmethod
    def _lease_error(exc: EtcdError, lease_id: int) -> DatastoreError:
        if lease_id and exc.code == GRPC_NOT_FOUND and "lease" in exc.message:
            return LeaseExpired(lease_id)
        return exc

    # -- leases --------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        seconds = max(1, math.ceil(validate_ttl(ttl)))
        answer = self._call("lease/grant", {"TTL": seconds, "ID": 0}, write=True)
        if answer.get("error"):
            raise DatastoreError(f"etcd refused a lease of {seconds}s: {answer['error']}")
        return int(answer["ID"])

    def keep_alive(self, lease_id: int) -> float | None:
        lease = validate_lease_id(lease_id)
        # A keep-alive is idempotent, so it may be sent again elsewhere.
        answer = self._call("lease/keepalive", {"ID": str(lease)})
        ttl = int(answer.get("result", answer).get("TTL", 0) or 0)
        return float(ttl) if ttl > 0 else None

    def lease_ttl(self, lease_id: int) -> float | None:
        lease = validate_lease_id(lease_id)
        try:
            answer = self._call("kv/lease/timetolive", {"ID": str(lease)})
        except EtcdError as exc:
            if exc.code == GRPC_NOT_FOUND:
                return None
            raise
        ttl = int(answer.get("TTL", -1))
        return float(ttl) if ttl > 0 else None

    def revoke_lease(self, lease_id: int) -> bool:
        lease = validate_lease_id(lease_id)
        try:
            self._call("kv/lease/revoke", {"ID": str(lease)}, write=True)
        except EtcdError as exc:
            if exc.code == GRPC_NOT_FOUND:
                return False
            raise
        return True

    # -- watching ------------------------------------------------------------

    def _scope(self, prefix: str) -> str:
        root = self.prefix + "/"
        return root if prefix.startswith(root) else "/"

    def watch(
        self, prefix: str, since_revision: int, timeout: float
    ) -> tuple[int, builtins.list[WatchEvent]]:
        validate_prefix(prefix)
        if not isinstance(since_revision, int) or since_revision < 0:
            raise ValueError(f"since_revision must be an int >= 0, not {since_revision!r}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
        started = time.monotonic()
        scope = self._scope(prefix).encode()
        create = {
            "create_request": {
                "key": b64(scope),
                "range_end": b64(range_end(scope)),
                "start_revision": since_revision + 1,
            }
        }
        state = _WatchState(since_revision, started, timeout)
        resp, url = self._gateway.open_stream("watch", create, state.deadline())
        with contextlib.closing(resp):
            try:
                for message in stream_messages(resp, state.deadline):
                    state.take(message, prefix, url)
                    if state.events:
                        break
            except StreamEnded:
                if not state.events and time.monotonic() < state.deadline():
                    raise self._gateway.unavailable([f"{url}: the watch stream ended"]) from None
            except (OSError, ValueError) as exc:
                if not state.events:
                    raise self._gateway.unavailable([f"{url}: watch failed: {exc}"]) from exc
        return state.last, state.events

    def close(self) -> None:
        self._gateway.close()


class _WatchState:
    """What one watch call has seen so far."""

    def __init__(self, since: int, started: float, timeout: float) -> None:
        self.since = since
        self.last = since  # every event in scope up to here has been seen
        self.head: int | None = None  # the store's revision when the watch began
        self.events: list[WatchEvent] = []
        self._end = started + timeout
        self._catch_up_end = started + max(timeout, CATCH_UP_GRACE)

    def caught_up(self) -> bool:
        return self.head is not None and self.last >= self.head

    def deadline(self) -> float:
        # Before the first answer, or with announced history still on its way,
        # wait a little longer than asked rather than return without it.
        return self._end if self.caught_up() else self._catch_up_end

    def take(self, message: dict[str, Any], prefix: str, url: str) -> None:
        if "error" in message:
            error = message["error"]
            raise DatastoreError(f"etcd at {url} broke off the watch: {error}")
        result = message.get("result", {})
        compacted = int(result.get("compact_revision", 0) or 0)
        if compacted:
            raise WatchCompacted(self.since, max(compacted - 1, 0))
        if result.get("canceled"):
            reason = result.get("cancel_reason") or "no reason given"
            raise DatastoreError(f"etcd at {url} cancelled the watch: {reason}")
        if result.get("created"):
            self.head = _revision(result)
            return
        for raw in result.get("events") or []:
            kv = raw.get("kv", {})
            revision = int(kv.get("mod_revision", 0))
            self.last = max(self.last, revision)
            key = unb64(kv.get("key")).decode(errors="replace")
            if not key.startswith(prefix):
                continue
            kind: Literal["put", "delete"] = "delete" if raw.get("type") == "DELETE" else "put"
            value = unb64(kv.get("value")) if kind == "put" else None
            self.events.append(WatchEvent(kind, key, value, revision))
