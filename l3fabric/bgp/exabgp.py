"""ExaBGP as the node's BGP speaker: configuration and a supervised child.

`render_config` (in exabgp_config, re-exported here) turns NeighborSpecs into
an ExaBGP 5.0 configuration. `ExabgpSpeaker` runs ExaBGP (optionally
inside a network namespace), serves the unix socket its API helper
(l3fabric.bgp.bridge) connects to, parses everything ExaBGP says into typed
events on `queue`, restarts ExaBGP when it dies, and reloads it when the
neighbours change.

Replay contract: ExaBGP forgets every API announcement when it restarts and
does not send API announcements to a neighbour added by a reload. So the
owner keeps the desired advertisements itself and replays them after every
SpeakerRestarted (all of them) and every PeerStateEvent UP (to that peer).
`send` returning False means the lines did not reach ExaBGP; a
SpeakerRestarted always follows such a failure while the speaker runs.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import ipaddress
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from l3fabric.bgp import api, bridge
from l3fabric.bgp.events import BgpEvent, SpeakerRestarted
from l3fabric.bgp.exabgp_config import (
    FAMILIES,
    NEIGHBOR_TEMPLATE,
    PROCESS_NAME,
    TEMPLATE_DIR,
    TEMPLATE_NAME,
    NeighborSpec,
    render_config,
)

# Re-exported: callers import the configuration side from here too.
__all__ = [
    "FAMILIES",
    "MIN_EXABGP",
    "NEIGHBOR_TEMPLATE",
    "PROCESS_NAME",
    "TEMPLATE_DIR",
    "TEMPLATE_NAME",
    "ExabgpSpeaker",
    "NeighborSpec",
    "SpeakerStats",
    "default_command",
    "exabgp_version",
    "render_config",
]

log = logging.getLogger(__name__)

MIN_EXABGP = (5, 0, 13)  # earlier releases let a peer inject lines into the API stream

_UNIX_PATH_MAX = 107


def default_command() -> str:
    """The exabgp next to this interpreter (the venv's), else from PATH."""
    beside = Path(sys.executable).parent / "exabgp"
    if beside.exists():
        return str(beside)
    return shutil.which("exabgp") or "exabgp"


def exabgp_version(command: str) -> tuple[int, ...]:
    run = subprocess.run([command, "version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"ExaBGP\s*:\s*(\d+)\.(\d+)\.(\d+)", run.stdout)
    if run.returncode or not match:
        raise RuntimeError(f"cannot read the version of {command}: {run.stdout}{run.stderr}")
    return tuple(int(part) for part in match.groups())


def _exabgp_env(workdir: Path, log_level: str) -> dict[str, str]:
    """A clean environment: nothing from the caller's exabgp_* settings or a
    system exabgp.env leaks in."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        "LANG": "C.UTF-8",
        "EXABGP_ENVFILE": "/dev/null",
        # Root is needed to bind port 179 and to reach the 0600 bridge
        # socket; without these ExaBGP 5.0 switches to `nobody`.
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_log_level": log_level,
        # Per-command "done"/"error" answers: the only way to learn that
        # ExaBGP refused a command.
        "exabgp_api_ack": "true",
        # No named pipes for the CLI: several speakers share /run.
        "exabgp_api_cli": "false",
        "exabgp_api_encoder": "json",
        "exabgp_api_respawn": "true",
        "exabgp_api_terminate": "false",
        # Listening is per neighbour (`listen` in the template), so that the
        # socket carries each neighbour's MD5 key.
        "exabgp_tcp_bind": "",
        "exabgp_log_destination": str(workdir / "exabgp.log"),
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Supervision


@dataclass(frozen=True)
class SpeakerStats:
    generation: int = 0  # ExaBGP processes started so far
    restarts: int = 0
    parse_errors: int = 0  # lines that were neither events nor answers
    lines_received: int = 0
    lines_sent: int = 0
    acks_done: int = 0
    acks_error: int = 0  # commands ExaBGP refused
    send_failures: int = 0
    stream_gaps: int = 0  # bridge respawns or drops, each repaired by a restart
    reloads: int = 0


def _ack_window() -> collections.deque[str]:
    return collections.deque(maxlen=10000)


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    generation: int
    started_at: float
    output: IO[bytes]
    ready: bool = False  # its bridge said hello: signal handlers are installed
    # Commands awaiting ExaBGP's done/error, to name the one it refused.
    pending_acks: collections.deque[str] = field(default_factory=lambda: _ack_window())


class ExabgpSpeaker:
    """ExaBGP as a supervised child; thread-safe. See the module docstring
    for the replay contract. Nothing happens until start()."""

    def __init__(
        self,
        *,
        workdir: Path,
        router_id: ipaddress.IPv4Address,
        local_as: int,
        command: str | None = None,
        netns: str | None = None,
        port: int = 179,
        clock: Callable[[], float] = time.monotonic,
        python: str = sys.executable,
        log_level: str = "INFO",
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        stable_after: float = 60.0,
        stop_timeout: float = 5.0,
        send_timeout: float = 10.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.router_id, self.local_as = router_id, local_as
        self.netns, self.port = netns, port
        self.queue: queue.Queue[BgpEvent] = queue.Queue()
        self.socket_path = self.workdir / "bridge.sock"
        self.config_path = self.workdir / "exabgp.conf"
        self.log_path = self.workdir / "exabgp.log"
        self._pid_path = self.workdir / "exabgp.pid"
        self._command, self._python, self._log_level = command, python, log_level
        self._clock = clock
        self._backoff_min, self._backoff_max = restart_backoff
        self._backoff = self._backoff_min
        self._stable_after, self._stop_timeout = stable_after, stop_timeout
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog_thread: threading.Thread | None = None
        self._server = bridge.BridgeServer(
            self.socket_path,
            on_ready=self._on_ready,
            on_lines=self._on_lines,
            on_gap=self._on_gap,
            send_timeout=send_timeout,
        )
        self._child: _Child | None = None
        self._restart_at: float | None = None
        self._restart_requested = False
        self._reload_pending = False
        self._neighbors: tuple[NeighborSpec, ...] = ()
        self._config_text: str | None = None
        self._stats = SpeakerStats()
        self._started = False

    @property
    def pid(self) -> int | None:
        with self._lock:
            child = self._child
            return child.proc.pid if child and child.proc.poll() is None else None

    @property
    def connected(self) -> bool:
        """True while the bridge of the running ExaBGP is connected."""
        return self._server.connected

    def stats(self) -> SpeakerStats:
        with self._lock:
            return self._stats

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise RuntimeError("speaker already started")
            self._started = True
        try:
            self._preflight()
        except BaseException:
            with self._lock:
                self._started = False  # nothing started: a later start() may try again
            raise
        self._stop_stale_child()
        self._server.start()
        with self._lock:
            self._write_config(self._render(self._neighbors))
            self._spawn()
        self._watchdog_thread = threading.Thread(target=self._watchdog, name="exabgp-watchdog")
        self._watchdog_thread.daemon = True
        self._watchdog_thread.start()

    def _preflight(self) -> None:
        """Checks that can fail before anything runs."""
        self._command = self._command or default_command()
        version = exabgp_version(self._command)
        if version < MIN_EXABGP:
            raise RuntimeError(
                f"ExaBGP {version} is too old: l3fabric needs >= {MIN_EXABGP} (earlier "
                "releases let a peer inject content into the API stream)"
            )
        if len(str(self.socket_path)) > _UNIX_PATH_MAX:
            raise ValueError(f"workdir {self.workdir} is too long for a unix socket path")
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool:
        """Rewrite the configuration and reload ExaBGP if it changed.

        ExaBGP compares each neighbour with its previous definition: an
        unchanged one keeps its session and routes, a changed one is
        re-established, a removed one is shut down (Cease 6/3)."""
        specs = tuple(neighbors)
        text = self._render(specs)
        with self._lock:
            self._neighbors = specs
            if text == self._config_text:
                return False
            if self._started:
                self._write_config(text)
                self._request_reload()
            return True

    def send(self, lines: Sequence[str]) -> bool:
        """Write commands (built by l3fabric.bgp.api) to ExaBGP.

        False when they did not reach ExaBGP (no bridge connected, or the
        write failed); a SpeakerRestarted follows while the speaker runs.
        ValueError for a line that is not a valid command."""
        if isinstance(lines, str):
            raise ValueError("send takes a sequence of lines, not a str")
        checked = [api.check_line(line) for line in lines]
        if not checked:
            return True
        with self._send_lock:
            with self._lock:
                child = self._child
                if child is None or not self._server.connected:
                    return False
                child.pending_acks.extend(checked)
            try:
                sent = self._server.send(("\n".join(checked) + "\n").encode("ascii"))
            except OSError as exc:
                # Part of a line may be out, or ExaBGP stopped reading
                # commands: either way the command stream is broken.
                with self._lock:
                    self._count(send_failures=1)
                    self._request_restart(f"sending to ExaBGP failed ({exc})")
                return False
        with self._lock:
            self._count(lines_sent=len(checked) if sent else 0)
        return sent

    def events(self, timeout: float = 0.0) -> list[BgpEvent]:
        """Every queued event, waiting up to `timeout` for the first."""
        items: list[BgpEvent] = []
        try:
            items.append(
                self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
            )
            while True:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            return items

    def log_tail(self, lines: int = 50) -> list[str]:
        """The end of ExaBGP's own log, for reports when something is wrong."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
                return handle.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return []

    def stop(self) -> None:
        self._stopping.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(timeout=2 * self._stop_timeout + 5)
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            self._terminate(child)
        self._server.stop()
        with contextlib.suppress(FileNotFoundError):
            self._pid_path.unlink()

    # -- configuration and reload --------------------------------------------

    def _render(self, specs: Sequence[NeighborSpec]) -> str:
        return render_config(
            specs,
            router_id=self.router_id,
            local_as=self.local_as,
            bridge_command=bridge.command_line(self.socket_path, self._python),
            port=self.port,
        )

    def _write_config(self, text: str) -> None:
        _write_atomically(self.config_path, text)  # 0600: it holds MD5 passwords
        self._config_text = text

    def _request_reload(self) -> None:
        child = self._child
        if child is not None and child.ready and child.proc.poll() is None:
            # Only after the bridge's hello: ExaBGP has then installed its
            # signal handlers; SIGUSR1 earlier would kill it.
            os.kill(child.proc.pid, signal.SIGUSR1)
            self._count(reloads=1)
            log.info("reloading ExaBGP pid %d with a new configuration", child.proc.pid)
        else:
            # A starting ExaBGP may read the old file or the new one: reload
            # when it is ready; reloading an unchanged file changes nothing.
            self._reload_pending = True

    # -- the child process ---------------------------------------------------

    def _count(self, **increments: int) -> None:
        values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
        self._stats = dataclasses.replace(self._stats, **values)

    def _spawn(self) -> None:
        assert self._command is not None
        argv = [self._command, "server", str(self.config_path)]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        output = open(self.workdir / "exabgp.out", "ab")  # noqa: SIM115 - closed in _terminate
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_exabgp_env(self.workdir, self._log_level),
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError:
            output.close()
            raise
        self._count(generation=1)
        self._child = _Child(proc, self._stats.generation, self._clock(), output)
        self._server.expect(proc.pid, self._stats.generation)
        self._restart_at = None
        self._restart_requested = False
        _write_atomically(self._pid_path, f"{proc.pid}\n", 0o644)
        log.info("started ExaBGP pid %d, generation %d", proc.pid, self._stats.generation)

    def _terminate(self, child: _Child) -> None:
        proc = child.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("ExaBGP pid %d ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait(timeout=self._stop_timeout)
        child.output.close()

    def _stop_stale_child(self) -> None:
        """Stop an ExaBGP that a previous speaker on this workdir left behind
        (the agent crashed): it would hold port 179, unsupervised."""
        try:
            pid = int(self._pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config_path).encode() not in cmdline:
            return  # the pid now belongs to something that is not ours
        log.warning("stopping ExaBGP pid %d left over from a previous run", pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = self._clock() + self._stop_timeout
            while self._clock() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)

    def _request_restart(self, why: str) -> None:
        if not self._restart_requested:
            log.warning("restarting ExaBGP: %s", why)
        self._restart_requested = True

    def _watchdog(self) -> None:
        while not self._stopping.wait(0.05):
            try:
                self._supervise_once()
            except Exception:  # the watchdog must outlive any one failure
                log.exception("ExaBGP watchdog iteration failed")

    def _supervise_once(self) -> None:
        now = self._clock()
        with self._lock:
            ended = self._child
            if ended is None or not (self._restart_requested or ended.proc.poll() is not None):
                ended = None
            else:
                log.warning(
                    "ExaBGP pid %d %s; its log ends: %s",
                    ended.proc.pid,
                    "is being restarted" if ended.proc.poll() is None else "exited",
                    " | ".join(self.log_tail(3)),
                )
                self._child = None
                self._server.expect(None, 0)
                self._schedule_restart(now, ran_for=now - ended.started_at)
        if ended is not None:
            self._terminate(ended)  # outside the lock: it may wait seconds
        with self._lock:
            due = self._restart_at is not None and self._clock() >= self._restart_at
            if self._child is None and due and not self._stopping.is_set():
                self._count(restarts=1)
                try:
                    self._spawn()
                except OSError as exc:
                    log.error("cannot start ExaBGP (%s)", exc)
                    self._schedule_restart(self._clock(), ran_for=0.0)

    def _schedule_restart(self, now: float, ran_for: float) -> None:
        # Exponential backoff, forgiven once a child has run stable_after.
        if ran_for >= self._stable_after:
            self._backoff = self._backoff_min
        self._restart_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)

    # -- bridge callbacks (per-connection threads) ----------------------------

    def _current(self, generation: int) -> _Child | None:
        child = self._child
        return child if child is not None and child.generation == generation else None

    def _on_ready(self, generation: int) -> None:
        with self._lock:
            child = self._current(generation)
            if child is None:
                return
            child.ready = True
            self.queue.put(SpeakerRestarted(generation))
            log.info("ExaBGP generation %d is ready", generation)
            if self._reload_pending:
                self._reload_pending = False
                self._request_reload()

    def _on_gap(self, generation: int, reason: str) -> None:
        # Events were lost; a restart is the recovery the owner already handles.
        with self._lock:
            if self._current(generation) is not None:
                self._count(stream_gaps=1)
                self._request_restart(f"gap in the event stream: {reason}")

    def _on_lines(self, generation: int, lines: list[str]) -> None:
        with self._lock:
            child = self._current(generation)
            if child is None:
                return  # a stale ExaBGP: its events mean nothing now
            for line in lines:
                self._handle_line(line, child)

    def _handle_line(self, line: str, child: _Child) -> None:
        self._count(lines_received=1)
        answer = api.parse_answer(line)
        if answer in (api.ANSWER_DONE, api.ANSWER_ERROR):
            command = child.pending_acks.popleft() if child.pending_acks else "?"
            if answer == api.ANSWER_DONE:
                self._count(acks_done=1)
            else:
                self._count(acks_error=1)
                log.warning("ExaBGP refused a command: %.200s", command)
        elif answer is None:
            try:
                events = api.parse_message(line)
            except api.ParseError as exc:
                self._count(parse_errors=1)
                log.warning("unparseable line from ExaBGP (%s): %.200s", exc, line)
                return
            for event in events:
                self.queue.put(event)
