"""The driver's HTTP server on a unix socket, where Docker finds plugins
(/run/docker/plugins/NAME.sock). One thread per connection; HTTP/1.1 with
keep-alive, as Docker's plugin client uses it.

Every request is bounded (MAX_BODY, a read timeout) and every failure is an
answer: a handler error is logged and answered 500, never a crash.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import stat
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from l3fabric.cnm import protocol
from l3fabric.cnm.driver import Driver

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/run/docker/plugins/l3fabric.sock")
MAX_BODY = 1024 * 1024  # libnetwork's largest body is a few kB
READ_TIMEOUT = 30.0  # seconds a connection may take to send a request


class UnixHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, driver: Driver) -> None:
        self.driver = driver
        self.path = path
        self._bound = False  # the socket file is ours to remove only once bound
        super().__init__(str(path), CnmHandler)  # type: ignore[arg-type]  # AF_UNIX takes a path

    def server_bind(self) -> None:
        _remove_stale_socket(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        socketserver.TCPServer.server_bind(self)
        self._bound = True
        # Docker runs as root; nobody else has any business on this socket.
        os.chmod(self.path, 0o660)
        self.server_name = "l3fabric"
        self.server_port = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, _ = self.socket.accept()
        return sock, ("unix", 0)

    def server_close(self) -> None:
        super().server_close()
        if not self._bound:
            return
        try:
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        except FileNotFoundError:
            pass


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run goes; anything else at the path is an
    error, never removed."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: stale
        return
    finally:
        probe.close()
    raise OSError(f"{path} is in use by another server")


class CnmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT
    server: UnixHTTPServer
    server_version = "l3fabric-cnm"

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self._answer(411, protocol.error("send the body with a Content-Length"), close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._answer(400, protocol.error("Content-Length is not a number"), close=True)
            return
        if length < 0 or length > MAX_BODY:
            self._answer(
                413, protocol.error(f"a request body is at most {MAX_BODY} bytes"), close=True
            )
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return
        path = self.path.split("?", 1)[0]
        try:
            status, answer = self.server.driver.handle(path, body)
        except Exception as exc:  # answer, log, keep serving
            log.exception("cnm call failed", extra={"method": path})
            status, answer = 500, protocol.error(f"internal error in the l3fabric driver: {exc}")
        if status != 200 or "Err" in answer:
            log.warning(
                "cnm call refused",
                extra={"method": path, "status": status, "error": answer.get("Err")},
            )
        self._answer(status, answer)

    def _not_allowed(self) -> None:
        self._answer(405, protocol.error("the plugin protocol takes POST only"), close=True)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed

    def _answer(self, status: int, answer: dict[str, Any], *, close: bool = False) -> None:
        data = protocol.encode(answer)
        self.send_response(status)
        self.send_header("Content-Type", protocol.CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("cnm http", extra={"detail": format % args})

    def log_error(self, format: str, *args: Any) -> None:
        log.info("cnm http error", extra={"detail": format % args})


def serve(path: Path, driver: Driver) -> UnixHTTPServer:
    """A bound server; the caller runs serve_forever() and shutdown()."""
    server = UnixHTTPServer(path, driver)
    log.info("cnm driver listening", extra={"socket": str(path)})
    return server
