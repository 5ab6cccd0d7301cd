"""The control socket checks who calls (SO_PEERCRED), not only file modes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.agent.loop import WorkLoop
from l3fabric.agent.server import ControlServer

NOBODY = 65534


@pytest.fixture
def server() -> Iterator[tuple[ControlServer, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to call as another user")
    # Not under pytest's tmp_path: its parent is root's alone, and the
    # other user must reach the socket file for the kernel to be asked.
    directory = Path(tempfile.mkdtemp(prefix="l3f-ctl-"))
    directory.chmod(0o755)
    path = directory / "agent.sock"
    loop = WorkLoop()
    stop = threading.Event()
    control = ControlServer(path, loop, {"ping": lambda params: "pong"})
    control.start()
    thread = threading.Thread(target=loop.run, args=(lambda: not stop.is_set(), lambda: None))
    thread.start()
    try:
        yield control, path
    finally:
        stop.set()
        thread.join(timeout=5)
        control.close()
        shutil.rmtree(directory, ignore_errors=True)


def call_as(uid: int, path: Path) -> dict[str, object]:
    """One request from a forked child running as `uid` (the interpreter is
    already loaded, so it need not be readable by that user)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(path))
                sock.sendall(b'{"method": "ping", "params": {}}\n')
                os.write(write_end, sock.recv(65536))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reply:
        data = reply.read()
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not call"
    answer: dict[str, object] = json.loads(data)
    return answer


def test_the_socket_is_for_root_only(server: tuple[ControlServer, Path]) -> None:
    _control, path = server
    assert path.stat().st_mode & 0o777 == 0o600
    assert call_as(0, path) == {"result": "pong"}


def test_another_user_is_refused_even_through_a_mistaken_chmod(
    server: tuple[ControlServer, Path],
) -> None:
    _control, path = server
    path.chmod(0o666)
    answer = call_as(NOBODY, path)
    error = answer["error"]
    assert isinstance(error, dict) and error["code"] == "forbidden"
    assert f"uid {NOBODY}" in error["message"]
