"""Have the peers resent their routes since the agent started?

Until every peer has sent End-of-RIB, or the graceful-restart time has
passed, the kernel's learned routes from before a restart are kept rather
than deleted: otherwise an agent restart blackholes the node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from l3fabric.model import IPAddress

log = logging.getLogger(__name__)


class StartupSync:
    def __init__(self, on_synced: Callable[[], None]) -> None:
        self._on_synced = on_synced
        self._eor_seen: set[IPAddress] = set()
        self.synced = False

    def end_of_rib(self, peer: IPAddress) -> None:
        self._eor_seen.add(peer)

    def check(self, peers: Iterable[IPAddress]) -> None:
        if not self.synced and set(peers) <= self._eor_seen:
            self._mark("every peer sent End-of-RIB")

    def deadline_passed(self) -> None:
        if not self.synced:
            self._mark("graceful-restart time passed")

    def _mark(self, why: str) -> None:
        self.synced = True
        log.info("bgp routes synced after start", extra={"why": why})
        self._on_synced()
