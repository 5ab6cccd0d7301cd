"""The CLI's exit codes for what the agent answers: input errors are 2,
refusals of other kinds 1 (docs/cli.md, Exit codes)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from l3fabric.cli.main import main


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, object]]]]:
    """A socket that answers every request with the next queued reply."""
    path = tmp_path / "agent.sock"
    replies: list[dict[str, object]] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(json.dumps(replies.pop(0)).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path, replies
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("argv", "code", "exit_code"),
    [
        (["workload", "del", "nosuch"], "not-found", 2),
        (["workload", "add", "Bad Name", "--netns", "/run/netns/x"], "invalid", 2),
        (["routes", "--received", "--peer", "nonsense"], "invalid", 2),
        (["workload", "add", "web", "--netns", "/run/netns/x"], "ipam", 1),
        (["workload", "add", "web", "--netns", "/run/netns/x"], "datastore-unavailable", 1),
    ],
)
def test_agent_errors_map_to_exit_codes(
    agent: tuple[Path, list[dict[str, object]]],
    argv: list[str],
    code: str,
    exit_code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, replies = agent
    replies.append({"error": {"code": code, "message": f"the agent says {code}"}})
    assert main([*argv, "--socket", str(path)]) == exit_code
    err = capsys.readouterr().err
    assert err == f"l3fabric: the agent says {code}\n"
