"""HTTP endpoint for Prometheus metrics and health probes.

/metrics  Prometheus text exposition of the agent's registry
/livez    200 while the agent's work loop keeps turning
/readyz   200 when the agent is ready to serve (see Agent.readiness)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Probe = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, liveness: Probe, readiness: Probe
    ) -> None:
        self._address = (host, port)
        self._registry = registry
        self._probes = {"/livez": liveness, "/readyz": readiness}
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._address
        if self._server is not None:
            host, port = str(self._server.server_address[0]), int(self._server.server_address[1])
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer._registry), CONTENT_TYPE_LATEST)
                elif path in outer._probes:
                    ok, reason = outer._probes[path]()
                    body = json.dumps({"ok": ok, "reason": reason}).encode() + b"\n"
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug(
                    "http request",
                    extra={"client": self.address_string(), "detail": format % args},
                )

        family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._server = Server(self._address, Handler)
        threading.Thread(target=self._server.serve_forever, name="http", daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
