"""ExaBGP's API helper process: relays lines between ExaBGP and a unix socket.

ExaBGP runs this as its `process` (`run PYTHON -m l3fabric.bgp.bridge
--socket PATH`). ExaBGP writes events to our stdin and reads commands from
our stdout; the supervisor (l3fabric.bgp.exabgp.ExabgpSpeaker) serves PATH.

The one property that matters: stdin is always read promptly. ExaBGP writes
to its helpers with a blocking write, so a helper that stops reading stalls
ExaBGP's whole reactor and every BGP session drops on its hold timer. So
stdin is read by a thread that only appends to a bounded buffer; a second
thread drains the buffer to the socket and reconnects with backoff when the
socket is gone. When the buffer is full the oldest line is dropped and
counted; the count travels in the hello line of the next connection so the
supervisor knows its event stream has a gap.

Every connection starts with one hello line (see `hello_line`), then
carries ExaBGP's lines unchanged. The other direction carries commands, one
per line; only complete lines of printable ASCII are passed on to ExaBGP.
Exits when stdin closes (ExaBGP went away or stopped us).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

HELLO_PREFIX = "#l3fabric-bridge hello"
_HELLO_RE = re.compile(r"^#l3fabric-bridge hello pid=(\d+) ppid=(\d+) dropped=(\d+)$")

DEFAULT_MAX_BUFFERED = 200_000  # lines; a full table of updates is far below this
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0
_SEND_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Hello:
    pid: int  # the bridge
    ppid: int  # the ExaBGP that started it
    dropped: int  # lines dropped since the bridge started


def command_line(
    socket_path: Path, python: str = sys.executable, orphan_grace: float | None = None
) -> list[str]:
    """How ExaBGP runs the bridge: with the absolute interpreter of the agent."""
    command = [python, "-m", "l3fabric.bgp.bridge", "--socket", str(socket_path)]
    if orphan_grace is not None:
        command += ["--orphan-grace", f"{orphan_grace:g}"]
    return command


def hello_line(pid: int, ppid: int, dropped: int) -> str:
    return f"{HELLO_PREFIX} pid={pid} ppid={ppid} dropped={dropped}"


def parse_hello(line: str) -> Hello | None:
    match = _HELLO_RE.match(line.strip())
    if not match:
        return None
    return Hello(int(match[1]), int(match[2]), int(match[3]))


def _log(message: str) -> None:
    # stderr goes wherever ExaBGP's own output goes (its stdout log file).
    try:
        sys.stderr.write(f"l3fabric-bridge[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def is_command_safe(line: bytes) -> bool:
    """Commands are printable ASCII; anything else never reaches ExaBGP."""
    return bool(line) and all(0x20 <= b <= 0x7E for b in line)


class LineBuffer:
    """Bounded FIFO of lines; full means the oldest line is dropped."""

    def __init__(self, max_lines: int) -> None:
        self._lines: collections.deque[bytes] = collections.deque()
        self._max = max_lines
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, line: bytes) -> bool:
        """Append; False if the oldest line had to be dropped to make room."""
        with self._cond:
            kept = True
            if len(self._lines) >= self._max:
                self._lines.popleft()
                self.dropped += 1
                kept = False
            self._lines.append(line)
            self._cond.notify()
            return kept

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, max_bytes: int, timeout: float) -> list[bytes]:
        """Up to max_bytes worth of lines (at least one if any), waiting up to
        timeout for the first."""
        with self._cond:
            if not self._lines and not self.closed:
                self._cond.wait(timeout)
            taken: list[bytes] = []
            size = 0
            while self._lines and (not taken or size + len(self._lines[0]) <= max_bytes):
                line = self._lines.popleft()
                taken.append(line)
                size += len(line)
            return taken

    def requeue(self, lines: list[bytes]) -> None:
        """Put lines that could not be sent back at the front."""
        with self._cond:
            self._lines.extendleft(reversed(lines))
            while len(self._lines) > self._max:
                self._lines.pop()
                self.dropped += 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._lines)


class Bridge:
    def __init__(
        self,
        *,
        socket_path: str,
        stdin: BinaryIO,
        stdout: BinaryIO,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        clock: Callable[[], float] = time.monotonic,
        orphan_grace: float | None = None,
        on_orphaned: Callable[[], None] = lambda: None,
    ) -> None:
        self._socket_path = socket_path
        self._orphan_grace = orphan_grace
        self._on_orphaned = on_orphaned
        self._stdin = stdin
        self._stdout = stdout
        self._buffer = LineBuffer(max_buffered)
        self._clock = clock
        self._done = threading.Event()
        self._stdout_lock = threading.Lock()
        self._rejected_commands = 0

    def run(self) -> int:
        sender = threading.Thread(target=self._send_loop, name="bridge-send", daemon=True)
        sender.start()
        self._read_stdin()
        # stdin closed: give what is buffered a moment to reach the socket.
        deadline = self._clock() + 1.0
        while len(self._buffer) and self._clock() < deadline:
            time.sleep(0.01)
        self._buffer.close()
        self._done.set()
        return 0

    def _read_stdin(self) -> None:
        warned_at = 0
        while True:
            line = self._stdin.readline()
            if not line:
                return
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if not self._buffer.put(line):
                dropped = self._buffer.dropped
                # First drop, then every 10000th, so a long outage does not
                # turn into a log flood.
                if dropped == 1 or dropped - warned_at >= 10000:
                    warned_at = dropped
                    _log(f"socket not keeping up, dropped {dropped} lines so far")

    def _send_loop(self) -> None:
        backoff = _BACKOFF_MIN
        unreachable_since: float | None = None
        while not self._done.is_set():
            conn = self._connect()
            if conn is None:
                now = self._clock()
                unreachable_since = unreachable_since if unreachable_since is not None else now
                grace = self._orphan_grace
                if grace is not None and now - unreachable_since >= grace:
                    _log(f"the agent has been gone for {grace:g}s: stopping ExaBGP")
                    self._on_orphaned()
                    return
                self._done.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_MIN
            unreachable_since = None
            closed = threading.Event()
            reader = threading.Thread(
                target=self._socket_to_stdout, args=(conn, closed), name="bridge-recv", daemon=True
            )
            reader.start()
            self._drain_to(conn, closed)
            with contextlib.suppress(OSError):
                conn.close()

    def _connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._socket_path)
            hello = hello_line(os.getpid(), os.getppid(), self._buffer.dropped) + "\n"
            sock.sendall(hello.encode())
        except OSError:
            sock.close()
            return None
        return sock

    def _drain_to(self, conn: socket.socket, closed: threading.Event) -> None:
        while not self._done.is_set() or len(self._buffer):
            lines = self._buffer.take(_SEND_CHUNK, timeout=0.2)
            if not lines:
                if self._buffer.closed or closed.is_set():
                    return  # reconnect at once rather than at the next line
                continue
            try:
                conn.sendall(b"\n".join(lines) + b"\n")
            except OSError as exc:
                # At least once: the supervisor may already hold some of
                # these, but losing them silently would be worse.
                self._buffer.requeue(lines)
                _log(f"socket send failed ({exc}), reconnecting")
                return

    def _socket_to_stdout(self, conn: socket.socket, closed: threading.Event) -> None:
        try:
            self._relay_commands(conn)
        finally:
            closed.set()

    def _relay_commands(self, conn: socket.socket) -> None:
        pending = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                # A partial line at EOF is dropped: half a command must not
                # be glued to the first command of the next connection.
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if not line:
                    continue
                if not is_command_safe(line):
                    self._rejected_commands += 1
                    _log(f"refusing a command with non-printable bytes ({len(line)} bytes)")
                    continue
                self._write_stdout(line)

    def _write_stdout(self, line: bytes) -> None:
        with self._stdout_lock:
            try:
                self._stdout.write(line + b"\n")
                self._stdout.flush()
            except (OSError, ValueError):
                # ExaBGP is gone; stdin will close and end us.
                pass


# --------------------------------------------------------------------------
# The supervisor's end


class BridgeServer:
    """The supervisor's end of the socket.

    Accepts a bridge only if its hello names the connecting process
    (SO_PEERCRED) and, as parent, the ExaBGP named by `expect`. The first
    such bridge makes `on_ready(token)`; lines then go to
    `on_lines(token, lines)` in order. A second bridge for the same ExaBGP
    (ExaBGP respawned it) or one that reports dropped lines means events were
    lost: `on_gap(token, reason)`. Callbacks run on per-connection threads
    without any lock of ours held; `token` tells them which ExaBGP it is."""

    def __init__(
        self,
        path: Path,
        *,
        on_ready: Callable[[int], None],
        on_lines: Callable[[int, list[str]], None],
        on_gap: Callable[[int, str], None],
        send_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self._on_ready, self._on_lines, self._on_gap = on_ready, on_lines, on_gap
        self._send_timeout = send_timeout
        self._lock = threading.Lock()
        self._expected: tuple[int, int] | None = None  # (ExaBGP pid, token)
        self._bridge: tuple[int, int] | None = None  # (pid, dropped) of its first bridge
        self._current: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # born 0600: only root may connect
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(8)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="bridge-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.expect(None, 0)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def expect(self, exabgp_pid: int | None, token: int) -> None:
        """Serve only the bridges of this ExaBGP from now on (None: nobody)."""
        with self._lock:
            self._expected = None if exabgp_pid is None else (exabgp_pid, token)
            self._bridge = None
            current, self._current = self._current, None
        if current is not None:
            _close(current)

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._current is not None

    def send(self, payload: bytes) -> bool:
        """False if no bridge is connected; OSError if the write fails or
        does not finish within send_timeout (ExaBGP stopped reading)."""
        with self._lock:
            current = self._current
        if current is None:
            return False
        current.sendall(payload)
        return True

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("accepting a bridge connection failed", extra={"error": str(exc)})
                self._stopping.wait(0.1)
                continue
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            accepted = self._handshake(sock)
            if accepted is not None:
                self._relay(sock, *accepted)
        except OSError:
            pass
        finally:
            with self._lock:
                if self._current is sock:
                    self._current = None
            _close(sock)

    def _handshake(self, sock: socket.socket) -> tuple[int, bytes] | None:
        sock.settimeout(5.0)
        raw = b""
        while b"\n" not in raw and len(raw) < 256:
            chunk = sock.recv(256 - len(raw))
            if not chunk:
                return None
            raw += chunk
        first, _, pending = raw.partition(b"\n")
        hello = parse_hello(first.decode("ascii", "replace"))
        peer_pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if hello is None or hello.pid != peer_pid[0]:
            log.warning(
                "refused a bridge connection without a valid hello",
                extra={"first_line": repr(first[:100]), "peer_pid": peer_pid[0]},
            )
            return None
        gap = ""
        previous: socket.socket | None = None
        with self._lock:
            if self._expected is None or self._expected[0] != hello.ppid:
                return None  # the bridge of an ExaBGP we no longer run
            token = self._expected[1]
            first_bridge = self._bridge is None
            if (first_bridge and hello.dropped) or (
                not first_bridge and self._bridge != (hello.pid, hello.dropped)
            ):
                gap = f"bridge {self._bridge} -> (pid {hello.pid}, dropped {hello.dropped})"
            else:
                self._bridge = (hello.pid, hello.dropped)
                previous, self._current = self._current, sock
        if gap:
            self._on_gap(token, gap)
            return None
        if previous is not None:
            _close(previous)
        if first_bridge:
            self._on_ready(token)
        # The timeout bounds sendall (a stuck ExaBGP); reads just retry.
        sock.settimeout(self._send_timeout)
        return token, pending

    def _relay(self, sock: socket.socket, token: int, pending: bytes) -> None:
        while not self._stopping.is_set():
            *lines, pending = pending.split(b"\n")
            text = [line.decode("utf-8", "replace") for line in lines if line.strip()]
            if text:
                self._on_lines(token, text)
            try:
                data = sock.recv(256 * 1024)
            except TimeoutError:
                continue
            if not data:
                return
            pending += data


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def stop_parent_exabgp() -> None:
    """The agent died and did not come back: stop the ExaBGP that runs us,
    so a node without its agent does not announce for ever. Only if our
    parent still is an ExaBGP (not a reused pid)."""
    parent = os.getppid()
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return
    if b"exabgp" in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="unix socket served by the supervisor")
    parser.add_argument("--max-buffered", type=int, default=DEFAULT_MAX_BUFFERED)
    parser.add_argument(
        "--orphan-grace",
        type=float,
        default=None,
        help="seconds without the agent after which ExaBGP is stopped (default: never)",
    )
    args = parser.parse_args(argv)
    if args.max_buffered < 1:
        parser.error("--max-buffered must be at least 1")
    # ExaBGP stops helpers with SIGTERM; leave at once, without a traceback.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    bridge = Bridge(
        socket_path=args.socket,
        stdin=sys.stdin.buffer,
        stdout=sys.stdout.buffer,
        max_buffered=args.max_buffered,
        orphan_grace=args.orphan_grace,
        on_orphaned=stop_parent_exabgp,
    )
    code = bridge.run()
    # Daemon threads may be blocked in recv/connect; do not wait for them.
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
