"""Requests to etcd's JSON gateway (/v3/...), failing over between endpoints.

etcd3gw supplies a client per endpoint (its requests session, with TLS, and
its URLs); this module decides where each request goes and how long it may
take. A request goes to the endpoint that answered last, then to the others
in turn, all within one deadline, so that a caller learns within the
configured timeout that no endpoint answers. A read is tried elsewhere on
any failure. A write only when it surely never reached the server (connection
refused, connect timeout, or etcd saying it has no leader): a write whose
answer was lost may have been applied, and sending it again could apply it
twice.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import requests
import urllib3

from l3fabric.datastore.base import DatastoreError, DatastoreUnavailable

API_PATH = "/v3/"  # etcd >= 3.4; 3.3's /v3beta/ and older are not supported
GRPC_NOT_FOUND = 5
GRPC_UNAVAILABLE = 14
_MAX_LINE = 256 * 1024 * 1024  # a watch response with a big history replay


class EtcdError(DatastoreError):
    """etcd answered, with an error."""

    def __init__(self, url: str, path: str, code: int, message: str) -> None:
        super().__init__(f"etcd at {url} refused {path}: {message} (code {code})")
        self.code = code
        self.message = message


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with prefix (etcd's range_end)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def check_endpoint(url: object) -> tuple[str, str, int]:
    """(scheme, host, port) of an endpoint URL such as http://10.0.0.1:2379."""
    if not isinstance(url, str):
        raise DatastoreError(f"etcd endpoint must be a URL string, not {url!r}")
    parts = urlsplit(url)
    try:
        port = parts.port or 2379
    except ValueError as exc:
        raise DatastoreError(f"etcd endpoint {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DatastoreError(f"etcd endpoint {url!r} must look like http(s)://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise DatastoreError(f"etcd endpoint {url!r} must be just http(s)://HOST:PORT")
    return parts.scheme, parts.hostname, port


class Gateway:
    """The endpoints of one etcd cluster. Thread-safe; no I/O until a request."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        connect_timeout: float,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        if not endpoints:
            raise DatastoreError("the etcd datastore needs at least one endpoint")
        self.urls = tuple(endpoints)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._clients = []
        for url in self.urls:
            scheme, host, port = check_endpoint(url)
            client = etcd3gw.Etcd3Client(
                host, port, scheme, ca_cert=ca, cert_key=key, cert_cert=cert, api_path=API_PATH
            )
            # Not from the environment: REQUESTS_CA_BUNDLE would override the
            # configured CA, and an HTTP(S)_PROXY would carry the watch streams.
            client.session.trust_env = False
            self._clients.append(client)
        self._preferred = 0
        self.closed = False

    def describe(self) -> str:
        return ", ".join(self.urls)

    def unavailable(self, reasons: Sequence[str], extra: str = "") -> DatastoreUnavailable:
        reason = "; ".join(reasons) if reasons else f"no answer within {self.timeout:g}s"
        return DatastoreUnavailable(
            f"datastore unavailable (etcd at {self.describe()}): {reason}{extra}; try again"
        )

    def _order(self) -> Iterator[int]:
        first = self._preferred
        for n in range(len(self._clients)):
            yield (first + n) % len(self._clients)

    def call(self, path: str, payload: dict[str, Any], *, write: bool) -> dict[str, Any]:
        """POST one request; the decoded answer, or EtcdError/DatastoreUnavailable."""
        if self.closed:
            raise DatastoreError(f"etcd datastore ({self.describe()}) is closed")
        deadline = time.monotonic() + self.timeout
        reasons: list[str] = []
        for index in self._order():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            client = self._clients[index]
            url = self.urls[index]
            try:
                resp = client.session.post(
                    client.get_url(path),
                    json=payload,
                    timeout=(min(self.connect_timeout, remaining), remaining),
                )
            except (requests.RequestException, OSError) as exc:
                if write and not never_sent(exc):
                    raise self.unavailable(
                        [f"{url}: {describe_error(exc)}"],
                        " (the write may or may not have been applied)",
                    ) from exc
                reasons.append(f"{url}: {describe_error(exc)}")
                continue
            body = decode_body(resp)
            if resp.status_code == 200:
                self._preferred = index
                return body
            code = int(body.get("code", 0) or 0)
            message = str(body.get("message") or body.get("error") or resp.reason)
            if code == GRPC_UNAVAILABLE or resp.status_code == 503:
                # No leader, or the member is shutting down: another may do.
                reasons.append(f"{url}: {message}")
                continue
            raise EtcdError(url, path, code, message)
        raise self.unavailable(reasons)

    def open_stream(
        self, path: str, payload: dict[str, Any], deadline: float
    ) -> tuple[requests.Response, str]:
        """Start a streaming request (a watch) on the first endpoint that takes it."""
        if self.closed:
            raise DatastoreError(f"etcd datastore ({self.describe()}) is closed")
        connect_deadline = min(deadline, time.monotonic() + self.timeout)
        reasons: list[str] = []
        for index in self._order():
            remaining = connect_deadline - time.monotonic()
            if remaining <= 0:
                break
            client = self._clients[index]
            url = self.urls[index]
            try:
                resp = client.session.post(
                    client.get_url(path),
                    json=payload,
                    stream=True,
                    timeout=(min(self.connect_timeout, remaining), max(remaining, 0.01)),
                )
            except (requests.RequestException, OSError) as exc:
                reasons.append(f"{url}: {describe_error(exc)}")
                continue
            if resp.status_code != 200:
                body = decode_body(resp)
                resp.close()
                reasons.append(f"{url}: {body.get('message') or body.get('error') or resp.reason}")
                continue
            self._preferred = index
            return resp, url
        raise self.unavailable(reasons)

    def close(self) -> None:
        self.closed = True
        for client in self._clients:
            client.session.close()


def stream_messages(resp: requests.Response, deadline: Any) -> Iterator[dict[str, Any]]:
    """The JSON messages of a gateway stream, one per line, until the deadline
    (deadline() is asked before every read, as it may move) or the end."""
    sock = _socket_of(resp)
    buffer = b""
    raw = resp.raw
    while True:
        newline = buffer.find(b"\n")
        if newline >= 0:
            line, buffer = buffer[:newline], buffer[newline + 1 :]
            if line.strip():
                yield json.loads(line)
            continue
        remaining = deadline() - time.monotonic()
        if remaining <= 0:
            return
        if sock is not None:
            sock.settimeout(remaining)
        try:
            chunk = raw.read1(65536)  # what has arrived, unlike read()
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            return
        if not chunk:
            if buffer.strip():
                yield json.loads(buffer)
            raise StreamEnded()
        buffer += chunk
        if len(buffer) > _MAX_LINE:
            raise DatastoreError("etcd sent a watch response larger than 256 MiB")


class StreamEnded(Exception):
    """The server closed the stream."""


def _socket_of(resp: requests.Response) -> socket.socket | None:
    connection = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def decode_body(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"message": resp.text[:200] or resp.reason}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}


def never_sent(exc: BaseException) -> bool:
    """Whether a failed request surely never reached the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", inner)
    return isinstance(
        reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
    ) or isinstance(exc, ConnectionRefusedError)


def describe_error(exc: BaseException) -> str:
    """A short reason: requests' messages nest three exceptions deep."""
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None)
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        text = str(reason).split(": ", 1)[-1]
        return f"cannot connect ({text})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer in time"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error ({reason or inner})"
    return f"{type(exc).__name__}: {reason or inner or exc}"
