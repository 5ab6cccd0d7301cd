"""The API channel to the running ExaBGP: the unix socket its bridge
(l3fabric.bgp.bridge) connects to, commands out (checked, with their
done/error answers matched back), and everything ExaBGP says parsed into
typed events on `queue`.

Only the ExaBGP of the current generation is listened to: lines from an
older one (still shutting down) mean nothing now.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from l3fabric.bgp import api, bridge
from l3fabric.bgp.events import BgpEvent
from l3fabric.bgp.exabgp_stats import SpeakerCounters

log = logging.getLogger(__name__)

_ACK_WINDOW = 10000  # commands remembered while awaiting ExaBGP's answer


class ApiChannel:
    def __init__(
        self,
        socket_path: Path,
        *,
        lock: threading.RLock,
        counters: SpeakerCounters,
        on_ready: Callable[[int], None],
        on_gap: Callable[[int, str], None],
        on_broken: Callable[[str], None],
        send_timeout: float,
    ) -> None:
        """`lock` is the speaker's, held around every state change; `on_broken`
        is called (with the lock held) when the command stream breaks."""
        self.queue: queue.Queue[BgpEvent] = queue.Queue()
        self._lock = lock
        self._send_lock = threading.Lock()
        self._counters = counters
        self._on_broken = on_broken
        self._server = bridge.BridgeServer(
            socket_path,
            on_ready=on_ready,
            on_lines=self._on_lines,
            on_gap=on_gap,
            send_timeout=send_timeout,
        )
        self._generation: int | None = None
        # Commands awaiting ExaBGP's done/error, to name the one it refused.
        self._pending_acks: collections.deque[str] = collections.deque(maxlen=_ACK_WINDOW)

    @property
    def connected(self) -> bool:
        """True while the bridge of the running ExaBGP is connected."""
        return self._server.connected

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def expect(self, pid: int | None, generation: int) -> None:
        """Listen to the bridge of ExaBGP `pid` (None: of no ExaBGP). Call
        with the lock held."""
        self._server.expect(pid, generation)
        self._generation = generation if pid is not None else None
        self._pending_acks = collections.deque(maxlen=_ACK_WINDOW)

    def send(self, lines: Sequence[str]) -> bool:
        """Write commands (built by l3fabric.bgp.api) to ExaBGP; see
        ExabgpSpeaker.send."""
        if isinstance(lines, str):
            raise ValueError("send takes a sequence of lines, not a str")
        checked = [api.check_line(line) for line in lines]
        if not checked:
            return True
        with self._send_lock:
            with self._lock:
                if self._generation is None or not self._server.connected:
                    return False
                self._pending_acks.extend(checked)
            try:
                sent = self._server.send(("\n".join(checked) + "\n").encode("ascii"))
            except OSError as exc:
                # Part of a line may be out, or ExaBGP stopped reading
                # commands: either way the command stream is broken.
                with self._lock:
                    self._counters.count(send_failures=1)
                    self._on_broken(f"sending to ExaBGP failed ({exc})")
                return False
        with self._lock:
            self._counters.count(lines_sent=len(checked) if sent else 0)
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

    # -- from the bridge (per-connection threads) ---------------------------------

    def _on_lines(self, generation: int, lines: list[str]) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a stale ExaBGP: its events mean nothing now
            for line in lines:
                self._handle_line(line)

    def _handle_line(self, line: str) -> None:
        self._counters.count(lines_received=1)
        answer = api.parse_answer(line)
        if answer in (api.ANSWER_DONE, api.ANSWER_ERROR):
            command = self._pending_acks.popleft() if self._pending_acks else "?"
            if answer == api.ANSWER_DONE:
                self._counters.count(acks_done=1)
            else:
                self._counters.count(acks_error=1)
                log.warning("ExaBGP refused a command", extra={"command": command[:200]})
        elif answer is None:
            try:
                events = api.parse_message(line)
            except api.ParseError as exc:
                self._counters.count(parse_errors=1)
                log.warning(
                    "unparseable line from ExaBGP", extra={"error": str(exc), "line": line[:200]}
                )
                return
            for event in events:
                self.queue.put(event)
