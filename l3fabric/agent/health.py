"""Liveness and readiness, as calico-node judges them for BIRD.

Pure functions of what the agent knows, so the rule is unit-tested without
an agent and reads the same in /readyz, `l3fabric health` and `status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from l3fabric.agent.loop import WorkLoop

# A work loop quiet for longer than this is stuck: not live.
LIVENESS_STALL = 30.0
# How long after start readiness waits for every peer (then: at least one).
READINESS_GRACE = 60.0
# How long an HTTP readiness probe waits for the work loop.
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class BgpHealth:
    neighbors: int
    speaker_running: bool
    all_established: bool
    any_established: bool


def liveness(stalled_seconds: float) -> tuple[bool, str]:
    if stalled_seconds > LIVENESS_STALL:
        return False, f"work loop stalled for {stalled_seconds:.0f}s"
    return True, "ok"


def readiness(
    *,
    reconciled: bool,
    bgp: BgpHealth | None,
    uptime_seconds: float,
    datastore_error: str | None = None,
) -> tuple[bool, str]:
    """Within a grace period after start all configured peers must be
    Established; after it, at least one. While the datastore does not answer
    the node forwards, but cannot take workloads: not ready."""
    if not reconciled:
        return False, "no reconcile pass yet"
    if datastore_error is not None:
        return False, f"datastore unavailable: {datastore_error}"
    if bgp is None or bgp.neighbors == 0:
        return True, "ok"
    if not bgp.speaker_running:
        return False, "ExaBGP is not running"
    if uptime_seconds < READINESS_GRACE and not bgp.all_established:
        return False, "not all BGP peers are Established yet"
    if not bgp.any_established:
        return False, "no BGP peer is Established"
    return True, "ok"


class BgpState(Protocol):
    @property
    def neighbor_count(self) -> int: ...
    @property
    def speaker_pid(self) -> int | None: ...
    def all_established(self) -> bool: ...
    def any_established(self) -> bool: ...


class Probes:
    """The agent's probes, over its work loop and BGP state."""

    def __init__(
        self,
        loop: WorkLoop,
        *,
        clock: Callable[[], float],
        reconciled: Callable[[], bool],
        bgp: Callable[[], BgpState | None],
        datastore_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._clock = clock
        self._started_at = clock()
        self._reconciled = reconciled
        self._bgp = bgp
        self._datastore_error = datastore_error

    def liveness(self) -> tuple[bool, str]:
        return liveness(self._clock() - self._loop.last_iteration)

    def readiness(self) -> tuple[bool, str]:
        bgp = self._bgp()
        view = None
        if bgp is not None:
            view = BgpHealth(
                neighbors=bgp.neighbor_count,
                speaker_running=bgp.speaker_pid is not None,
                all_established=bgp.all_established(),
                any_established=bgp.any_established(),
            )
        return readiness(
            reconciled=self._reconciled(),
            bgp=view,
            uptime_seconds=self._clock() - self._started_at,
            datastore_error=self._datastore_error(),
        )

    def readiness_from_http(self) -> tuple[bool, str]:
        """Readiness reads the loop's state, so it is computed on the loop."""
        try:
            return self._loop.call(self.readiness, timeout=PROBE_TIMEOUT)
        except TimeoutError:
            return False, f"work loop did not answer within {PROBE_TIMEOUT:.0f}s"
        except RuntimeError as exc:
            return False, str(exc)

    def health(self) -> dict[str, Any]:
        live, live_reason = self.liveness()
        ready, ready_reason = self.readiness()
        return {
            "live": live,
            "live_reason": live_reason,
            "ready": ready,
            "ready_reason": ready_reason,
        }
