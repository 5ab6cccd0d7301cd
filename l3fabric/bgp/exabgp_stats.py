"""Counters of an ExaBGP speaker, shared by its parts (supervision, reload,
the API channel) and handed out as a frozen snapshot."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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


class SpeakerCounters:
    """Not thread-safe: callers hold the speaker's lock."""

    def __init__(self) -> None:
        self.snapshot = SpeakerStats()

    def count(self, **increments: int) -> None:
        values = {k: getattr(self.snapshot, k) + v for k, v in increments.items()}
        self.snapshot = dataclasses.replace(self.snapshot, **values)
