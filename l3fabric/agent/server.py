"""The control socket server: accepts connections, runs requests on the loop."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from l3fabric.agent.loop import WorkLoop
from l3fabric.control import encode, read_message

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
# Shorter than the client's wait (control.DEFAULT_TIMEOUT), so a slow request
# is answered with an error rather than abandoned by the client.
REQUEST_TIMEOUT = 100.0


# struct ucred: pid, uid, gid.
_UCRED = struct.Struct("iII")


class RequestError(Exception):
    """An error the caller made, answered as {"error": {code, message}}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentAlreadyRunning(Exception):
    pass


class ControlServer:
    def __init__(
        self,
        path: Path,
        loop: WorkLoop,
        handlers: dict[str, Handler],
        *,
        group: int | None = None,
    ) -> None:
        self._path = path
        self._group = group
        self._loop = loop
        self._handlers = handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._bound: tuple[int, int] | None = None  # (dev, inode) of the socket we made

    def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.exists():
            if _socket_answers(self._path):
                raise AgentAlreadyRunning(f"another agent is serving {self._path}")
            self._path.unlink()  # left behind by a killed agent
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a restrictive umask so the socket is never briefly open.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self._path))
        finally:
            os.umask(old_umask)
        if self._group is None:
            os.chmod(self._path, 0o600)
        else:
            os.chown(self._path, -1, self._group)
            os.chmod(self._path, 0o660)
        st = os.stat(self._path)
        self._bound = (st.st_dev, st.st_ino)
        sock.listen(64)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        # Only the socket file we bound: never another agent's.
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self._path)
            if self._bound == (st.st_dev, st.st_ino):
                self._path.unlink()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(REQUEST_TIMEOUT)
            refusal = self._refusal(conn)
            if refusal is not None:
                self._reply(conn, {"error": {"code": "forbidden", "message": refusal}})
                return
            try:
                request = read_message(conn)
            except (OSError, ValueError) as exc:
                self._reply(conn, {"error": {"code": "bad-request", "message": str(exc)}})
                return
            self._reply(conn, self.dispatch(request))

    def _refusal(self, conn: socket.socket) -> str | None:
        """Who is calling, from the kernel (SO_PEERCRED), not from the
        request: root, the agent's own user, or a member of the configured
        group. File permissions alone do not survive a mistaken chmod."""
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        except OSError as exc:
            return f"cannot identify the caller: {exc.strerror or exc}"
        pid, uid, gid = _UCRED.unpack(creds)
        if uid in (0, os.geteuid()) or (self._group is not None and self._in_group(uid, gid)):
            return None
        log.warning("control request refused", extra={"pid": pid, "uid": uid, "gid": gid})
        return f"uid {uid} may not use this agent's control socket (root or its group only)"

    def _in_group(self, uid: int, gid: int) -> bool:
        if gid == self._group:
            return True
        try:
            name = pwd.getpwuid(uid).pw_name
            return name in grp.getgrgid(self._group).gr_mem  # type: ignore[arg-type]
        except KeyError:
            return False

    def dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        params = request.get("params") or {}
        handler = self._handlers.get(method) if isinstance(method, str) else None
        if handler is None:
            return {"error": {"code": "bad-request", "message": f"unknown method {method!r}"}}
        if not isinstance(params, dict):
            return {"error": {"code": "bad-request", "message": "params must be an object"}}
        try:
            result = self._loop.call(lambda: handler(params), timeout=REQUEST_TIMEOUT)
        except TimeoutError:
            return {
                "error": {
                    "code": "timeout",
                    "message": f"the agent was busy for {REQUEST_TIMEOUT:.0f}s; {method} may "
                    "still happen: check before retrying",
                }
            }
        except RequestError as exc:
            return {"error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:
            log.exception("control request failed", extra={"method": method})
            return {"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        return {"result": result}

    @staticmethod
    def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(encode(message))


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True
