"""Starting and stopping ExaBGP processes: the executable and its version,
the clean environment it runs in, one child at a time on a workdir (with a
pid file, so a crashed agent's leftover ExaBGP is found and stopped), the
end of its log, and the restart backoff.

No threads and no locks: ExabgpSpeaker decides when to spawn and stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

MIN_EXABGP = (5, 0, 13)  # earlier releases let a peer inject lines into the API stream


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


def check_version(command: str) -> None:
    version = exabgp_version(command)
    if version < MIN_EXABGP:
        raise RuntimeError(
            f"ExaBGP {version} is too old: l3fabric needs >= {MIN_EXABGP} (earlier "
            "releases let a peer inject content into the API stream)"
        )


REACTOR_SPEED = 5.0


def exabgp_env(workdir: Path, log_level: str) -> dict[str, str]:
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
        # IPv4/IPv6 unicast prefixes as bare strings, not {"nlri": P}
        # objects: a third less JSON for ExaBGP to write and the agent to read
        # on a bulk (add-path prefixes keep the object form).
        "exabgp_api_compact": "true",
        "exabgp_api_respawn": "true",
        "exabgp_api_terminate": "false",
        # Listening is per neighbour (`listen` in the template), so that the
        # socket carries each neighbour's MD5 key.
        "exabgp_tcp_bind": "",
        "exabgp_log_destination": str(workdir / "exabgp.log"),
        # The reactor's idle tick is speed/100 seconds: 10 ms by default, a
        # hundred wake-ups a second (an accept, a wait4 and three polls each)
        # and 2.5% of a core on an idle node. Peer sockets and the API pipe
        # wake it at once whatever the tick; only new connections and timers
        # (keepalives, hold, connect retries) wait for one: 50 ms here. Not
        # longer: at 200 ms an announcement waited for ticks before its
        # UPDATE left (one add to a route on the peer, p50: 1.6 -> 376 ms).
        "exabgp_reactor_speed": str(REACTOR_SPEED),
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class Child:
    """One running ExaBGP."""

    proc: subprocess.Popen[bytes]
    generation: int
    started_at: float
    output: IO[bytes]
    ready: bool = False  # its bridge said hello: signal handlers are installed


class ExabgpProcess:
    """Runs `exabgp server CONFIG` in `workdir` (inside `netns` when given)."""

    def __init__(
        self,
        *,
        workdir: Path,
        config_path: Path,
        command: str | None,
        netns: str | None,
        log_level: str,
        clock: Callable[[], float],
        stop_timeout: float,
    ) -> None:
        self.workdir = workdir
        self.config_path = config_path
        self.log_path = workdir / "exabgp.log"
        self._pid_path = workdir / "exabgp.pid"
        self._command, self._netns, self._log_level = command, netns, log_level
        self._clock = clock
        self._stop_timeout = stop_timeout

    def preflight(self) -> None:
        """Find the executable and check its version (before anything runs)."""
        self._command = self._command or default_command()
        check_version(self._command)

    def spawn(self, generation: int) -> Child:
        assert self._command is not None, "preflight() first"
        argv = [self._command, "server", str(self.config_path)]
        if self._netns is not None:
            argv = ["ip", "netns", "exec", self._netns, *argv]
        output = open(self.workdir / "exabgp.out", "ab")  # noqa: SIM115 - closed in terminate
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=exabgp_env(self.workdir, self._log_level),
                cwd=self.workdir,
                start_new_session=True,
            )
        except OSError:
            output.close()
            raise
        write_atomically(self._pid_path, f"{proc.pid}\n", 0o644)
        log.info("started ExaBGP", extra={"pid": proc.pid, "generation": generation})
        return Child(proc, generation, self._clock(), output)

    def terminate(self, child: Child) -> None:
        """Stop `child` (SIGTERM, then SIGKILL); may wait up to twice stop_timeout."""
        proc = child.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("ExaBGP ignored SIGTERM, killing it", extra={"pid": proc.pid})
                proc.kill()
                proc.wait(timeout=self._stop_timeout)
        child.output.close()

    def forget(self) -> None:
        """Remove the pid file (the speaker stopped for good)."""
        with contextlib.suppress(FileNotFoundError):
            self._pid_path.unlink()

    def stop_stale(self) -> None:
        """Stop an ExaBGP that a previous speaker on this workdir left behind
        (the agent crashed): it would hold port 179, unsupervised."""
        try:
            pid = int(self._pid_path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config_path).encode() not in cmdline:
            return  # the pid now belongs to something that is not ours
        log.warning("stopping ExaBGP left over from a previous run", extra={"pid": pid})
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = self._clock() + self._stop_timeout
            while self._clock() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)

    def log_tail(self, lines: int = 50) -> list[str]:
        """The end of ExaBGP's own log, for reports when something is wrong."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64 * 1024))
                return handle.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return []


class RestartBackoff:
    """Exponential backoff between restarts, forgiven once a child has run
    `stable_after` seconds."""

    def __init__(self, minimum: float, maximum: float, stable_after: float) -> None:
        self._min, self._max, self._stable_after = minimum, maximum, stable_after
        self._next = minimum

    def delay(self, ran_for: float) -> float:
        """How long to wait before the next start, after a child that ran `ran_for`."""
        if ran_for >= self._stable_after:
            self._next = self._min
        delay = self._next
        self._next = min(self._next * 2, self._max)
        return delay
