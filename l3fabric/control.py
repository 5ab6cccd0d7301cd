"""The agent's local control API: JSON over a unix socket.

One request per connection: the client writes one JSON object and a newline,
the agent answers with one JSON object and a newline, then closes. The CLI,
the CNI plugin and the lab runner reach the agent only through this.

Request:  {"method": "workload.add", "params": {...}}
Response: {"result": ...} or {"error": {"code": "not-found", "message": "..."}}
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

SOCKET_ENV = "L3FABRIC_SOCKET"
DEFAULT_SOCKET = Path("/var/lib/l3fabric/agent.sock")
MAX_MESSAGE = 64 * 1024 * 1024  # a workload list of a big node still fits
DEFAULT_TIMEOUT = 120.0
# The advice AgentUnreachable's message ends with, for someone at a shell.
UNREACHABLE_HINT = f"(is it running? --socket or ${SOCKET_ENV} picks another)"


class ControlError(Exception):
    """An error answered by the agent (code names the kind of error)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AgentUnreachable(ControlError):
    """No agent answers at `path`. `message` ends with `hint`, the advice
    for someone who typed an l3fabric command on this host; str() and `brief`
    leave it out, for callers where it does not apply (the lab runner probing
    its nodes' agents says which node instead)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        self.brief = f"cannot reach the l3fabric agent at {path}: {reason}"
        self.hint = UNREACHABLE_HINT
        super().__init__("unreachable", f"{self.brief} {self.hint}")
        self.args = (self.brief,)


def default_socket_path() -> Path:
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def read_message(sock: socket.socket) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if size > MAX_MESSAGE:
            raise ValueError("message too large")
    data = b"".join(chunks)
    if not data.strip():
        raise ValueError("empty message")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message


def call(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    socket_path: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Send one request to the agent and return its result."""
    path = socket_path or default_socket_path()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise AgentUnreachable(path, "no such socket") from None
        except (ConnectionRefusedError, PermissionError) as exc:
            raise AgentUnreachable(path, exc.strerror or str(exc)) from None
        sock.sendall(encode({"method": method, "params": params or {}}))
        try:
            reply = read_message(sock)
        except TimeoutError:
            raise ControlError(
                "timeout", f"no answer from the agent at {path} within {timeout:.0f}s"
            ) from None
        except (OSError, ValueError) as exc:
            raise AgentUnreachable(path, f"bad reply: {exc}") from None
    finally:
        sock.close()
    if "error" in reply:
        error = reply["error"]
        raise ControlError(str(error.get("code", "error")), str(error.get("message", error)))
    return reply.get("result")
