"""The driver's HTTP server on a unix socket: keep-alive, Docker's content
type, bounded bodies, POST only, and it keeps serving whatever it is sent."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from l3fabric.cnm import protocol
from l3fabric.cnm.driver import Driver
from l3fabric.cnm.server import MAX_BODY, UnixHTTPServer, serve


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=5)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(str(self._path))
        self.sock = sock


def _broken(method: str, params: dict[str, Any]) -> Any:
    raise RuntimeError("agent exploded")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UnixHTTPServer]:
    def call(method: str, params: dict[str, Any]) -> Any:
        if method == "cnm.capabilities":
            return {"scope": "local"}
        if method == "cnm.leave":
            raise RuntimeError("agent exploded")
        return {}

    srv = serve(tmp_path / "plugins" / "l3fabric.sock", Driver(call))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def post(conn: UnixConnection, path: str, body: bytes) -> tuple[int, str, dict[str, Any]]:
    conn.request("POST", path, body=body, headers={"Content-Type": protocol.CONTENT_TYPE})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type") or "", json.loads(resp.read())


def test_keep_alive_connection_serves_many_calls(server: UnixHTTPServer) -> None:
    conn = UnixConnection(server.path)
    for _ in range(3):
        status, ctype, answer = post(conn, "/Plugin.Activate", b"")
        assert status == 200 and ctype == protocol.CONTENT_TYPE
        assert answer == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert post(conn, "/NetworkDriver.GetCapabilities", b"")[2]["Scope"] == "local"
    conn.close()


def test_bad_input_is_answered_and_the_server_keeps_serving(server: UnixHTTPServer) -> None:
    conn = UnixConnection(server.path)
    assert post(conn, "/NetworkDriver.Join", b"{oops")[0] == 400
    assert post(conn, "/Nope.Nothing", b"{}")[0] == 404
    status, _, answer = post(
        conn, "/NetworkDriver.Leave", json.dumps({"NetworkID": "n", "EndpointID": "e"}).encode()
    )
    assert status == 500 and "agent exploded" in answer["Err"]
    conn.close()
    conn = UnixConnection(server.path)
    conn.request("GET", "/Plugin.Activate")
    assert conn.getresponse().status == 405
    conn.close()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.connect(str(server.path))
    raw.sendall(
        f"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()
    )
    assert raw.recv(4096).startswith(b"HTTP/1.1 413")
    raw.close()
    # A client that sends half a request and goes away.
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(server.path))
    raw.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    raw.close()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(str(server.path))
    raw.sendall(b"\x00\xffgarbage\r\n\r\n")
    raw.recv(4096)
    raw.close()
    conn = UnixConnection(server.path)
    assert post(conn, "/Plugin.Activate", b"")[0] == 200
    conn.close()


def test_chunked_bodies_are_refused(server: UnixHTTPServer) -> None:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(5)
    raw.connect(str(server.path))
    raw.sendall(
        b"POST /Plugin.Activate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    assert raw.recv(4096).startswith(b"HTTP/1.1 411")
    raw.close()


def test_a_stale_socket_is_replaced_and_a_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound, nobody listening
    srv = serve(path, Driver(_broken))
    srv.server_close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        serve(path, Driver(_broken))
    assert path.read_text() == "not a socket"


def test_a_socket_in_use_is_not_taken(server: UnixHTTPServer) -> None:
    with pytest.raises(OSError, match="in use"):
        serve(server.path, Driver(_broken))
    conn = UnixConnection(server.path)
    assert post(conn, "/Plugin.Activate", b"")[0] == 200
    conn.close()
