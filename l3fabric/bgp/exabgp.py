"""ExaBGP as the node's BGP speaker: a supervised child.

`ExabgpSpeaker` runs ExaBGP (optionally inside a network namespace),
restarts it when it dies, and reloads it when the neighbours change. Its
parts: exabgp_process (starting and stopping one ExaBGP), exabgp_reload
(the configuration file and SIGUSR1), exabgp_channel (the unix socket the
API helper l3fabric.bgp.bridge connects to, commands out and typed events
on `queue`) and exabgp_stats (the counters). The configuration itself is
rendered by exabgp_config.

Replay contract: ExaBGP forgets every API announcement when it restarts and
does not send API announcements to a neighbour added by a reload. So the
owner keeps the desired advertisements itself and replays them after every
SpeakerRestarted (all of them) and every PeerStateEvent UP (to that peer).
`send` returning False means the lines did not reach ExaBGP; a
SpeakerRestarted always follows such a failure while the speaker runs.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from l3fabric.bgp.events import BgpEvent, SpeakerRestarted
from l3fabric.bgp.exabgp_channel import ApiChannel
from l3fabric.bgp.exabgp_config import NeighborSpec
from l3fabric.bgp.exabgp_process import Child, ExabgpProcess, RestartBackoff
from l3fabric.bgp.exabgp_reload import ConfigReloader
from l3fabric.bgp.exabgp_stats import SpeakerCounters, SpeakerStats

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 107
# How soon the watchdog notices an ExaBGP that exited by itself (it waits
# wait4 at this interval; 20 wake-ups a second cost an idle node 0.2 %).
WATCHDOG_INTERVAL = 0.25


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
        orphan_grace: float | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.router_id, self.local_as = router_id, local_as
        self.netns, self.port = netns, port
        self.socket_path = self.workdir / "bridge.sock"
        self.config_path = self.workdir / "exabgp.conf"
        self._clock = clock
        self._stop_timeout = stop_timeout
        # One lock for the speaker and all its parts: the child, the
        # configuration and the channel change together.
        self._lock = threading.RLock()
        self._counters = SpeakerCounters()
        self._process = ExabgpProcess(
            workdir=self.workdir,
            config_path=self.config_path,
            command=command,
            netns=netns,
            log_level=log_level,
            clock=clock,
            stop_timeout=stop_timeout,
        )
        self._config = ConfigReloader(
            config_path=self.config_path,
            socket_path=self.socket_path,
            router_id=router_id,
            local_as=local_as,
            port=port,
            python=python,
            counters=self._counters,
            orphan_grace=orphan_grace,
        )
        self._channel = ApiChannel(
            self.socket_path,
            lock=self._lock,
            counters=self._counters,
            on_ready=self._on_ready,
            on_gap=self._on_gap,
            on_broken=self._request_restart,
            send_timeout=send_timeout,
        )
        self.queue = self._channel.queue
        self.log_path = self._process.log_path
        self._backoff = RestartBackoff(*restart_backoff, stable_after=stable_after)
        self._stopping = threading.Event()
        self._wake_watchdog = threading.Event()
        self._watchdog_thread: threading.Thread | None = None
        self._child: Child | None = None
        self._restart_at: float | None = None
        self._restart_requested = False
        self._started = False

    @property
    def pid(self) -> int | None:
        with self._lock:
            child = self._child
            return child.proc.pid if child and child.proc.poll() is None else None

    @property
    def connected(self) -> bool:
        """True while the bridge of the running ExaBGP is connected."""
        return self._channel.connected

    def stats(self) -> SpeakerStats:
        with self._lock:
            return self._counters.snapshot

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
        self._process.stop_stale()
        self._channel.start()
        with self._lock:
            self._config.write_current()
            self._spawn()
        self._watchdog_thread = threading.Thread(target=self._watchdog, name="exabgp-watchdog")
        self._watchdog_thread.daemon = True
        self._watchdog_thread.start()

    def _preflight(self) -> None:
        """Checks that can fail before anything runs."""
        self._process.preflight()
        if len(str(self.socket_path)) > _UNIX_PATH_MAX:
            raise ValueError(f"workdir {self.workdir} is too long for a unix socket path")
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def set_neighbors(self, neighbors: Iterable[NeighborSpec]) -> bool:
        """Rewrite the configuration and reload ExaBGP if it changed.

        ExaBGP compares each neighbour with its previous definition: an
        unchanged one keeps its session and routes, a changed one is
        re-established, a removed one is shut down (Cease 6/3)."""
        specs = tuple(neighbors)
        text = self._config.render(specs)
        with self._lock:
            return self._config.set_neighbors(specs, text, self._child, running=self._started)

    def send(self, lines: Sequence[str]) -> bool:
        """Write commands (built by l3fabric.bgp.api) to ExaBGP.

        False when they did not reach ExaBGP (no bridge connected, or the
        write failed); a SpeakerRestarted follows while the speaker runs.
        ValueError for a line that is not a valid command."""
        return self._channel.send(lines)

    def events(self, timeout: float = 0.0) -> list[BgpEvent]:
        """Every queued event, waiting up to `timeout` for the first."""
        return self._channel.events(timeout)

    def log_tail(self, lines: int = 50) -> list[str]:
        """The end of ExaBGP's own log, for reports when something is wrong."""
        return self._process.log_tail(lines)

    def stop(self) -> None:
        self._stopping.set()
        self._wake_watchdog.set()
        if self._watchdog_thread is not None:
            self._watchdog_thread.join(timeout=2 * self._stop_timeout + 5)
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            self._process.terminate(child)
        self._channel.stop()
        self._process.forget()

    # -- supervision ------------------------------------------------------------

    def _spawn(self) -> None:
        child = self._process.spawn(self._counters.snapshot.generation + 1)
        self._counters.count(generation=1)
        self._child = child
        self._channel.expect(child.proc.pid, child.generation)
        self._restart_at = None
        self._restart_requested = False

    def _request_restart(self, why: str) -> None:
        if not self._restart_requested:
            log.warning("restarting ExaBGP", extra={"reason": why})
        self._restart_requested = True
        self._wake_watchdog.set()

    def _watchdog(self) -> None:
        # A requested restart or stop wakes it at once; only an ExaBGP that
        # exited by itself and a restart's backoff wait for the interval.
        while not self._stopping.is_set():
            self._wake_watchdog.wait(WATCHDOG_INTERVAL)
            self._wake_watchdog.clear()
            if self._stopping.is_set():
                break
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
                    "ExaBGP ended",
                    extra={
                        "pid": ended.proc.pid,
                        "how": "restart requested" if ended.proc.poll() is None else "exited",
                        "log_tail": " | ".join(self.log_tail(3)),
                    },
                )
                self._child = None
                self._channel.expect(None, 0)
                self._restart_at = now + self._backoff.delay(ran_for=now - ended.started_at)
        if ended is not None:
            self._process.terminate(ended)  # outside the lock: it may wait seconds
        with self._lock:
            due = self._restart_at is not None and self._clock() >= self._restart_at
            if self._child is None and due and not self._stopping.is_set():
                self._counters.count(restarts=1)
                try:
                    self._spawn()
                except OSError as exc:
                    log.error("cannot start ExaBGP", extra={"error": str(exc)})
                    self._restart_at = self._clock() + self._backoff.delay(ran_for=0.0)

    # -- bridge callbacks (per-connection threads) ----------------------------

    def _current(self, generation: int) -> Child | None:
        child = self._child
        return child if child is not None and child.generation == generation else None

    def _on_ready(self, generation: int) -> None:
        with self._lock:
            child = self._current(generation)
            if child is None:
                return
            child.ready = True
            self.queue.put(SpeakerRestarted(generation))
            log.info("ExaBGP is ready", extra={"generation": generation})
            self._config.child_ready(child)

    def _on_gap(self, generation: int, reason: str) -> None:
        # Events were lost; a restart is the recovery the owner already handles.
        with self._lock:
            if self._current(generation) is not None:
                self._counters.count(stream_gaps=1)
                self._request_restart(f"gap in the event stream: {reason}")
