"""The ExaBGP configuration file of a speaker and when ExaBGP rereads it.

The file is rendered from the neighbours (exabgp_config.render_config) and
replaced atomically (0600: it holds MD5 passwords). A running ExaBGP is
told to reread it with SIGUSR1, but only once its bridge has said hello:
ExaBGP has then installed its signal handlers, and SIGUSR1 earlier would
kill it. Not thread-safe: ExabgpSpeaker calls it with its lock held.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from l3fabric.bgp import bridge
from l3fabric.bgp.exabgp_config import NeighborSpec, render_config
from l3fabric.bgp.exabgp_process import Child, write_atomically
from l3fabric.bgp.exabgp_stats import SpeakerCounters

log = logging.getLogger(__name__)


class ConfigReloader:
    def __init__(
        self,
        *,
        config_path: Path,
        socket_path: Path,
        router_id: ipaddress.IPv4Address,
        local_as: int,
        port: int,
        python: str,
        counters: SpeakerCounters,
        orphan_grace: float | None = None,
    ) -> None:
        self._config_path = config_path
        self._bridge_command = bridge.command_line(socket_path, python, orphan_grace)
        self._router_id, self._local_as, self._port = router_id, local_as, port
        self._counters = counters
        self._neighbors: tuple[NeighborSpec, ...] = ()
        self._text: str | None = None  # what the file holds now
        self._pending = False  # reload once the starting ExaBGP is ready

    def render(self, specs: Sequence[NeighborSpec]) -> str:
        """The configuration for `specs`; pure, so callable without the lock."""
        return render_config(
            specs,
            router_id=self._router_id,
            local_as=self._local_as,
            bridge_command=self._bridge_command,
            port=self._port,
        )

    def set_neighbors(
        self, specs: tuple[NeighborSpec, ...], text: str, child: Child | None, running: bool
    ) -> bool:
        """Adopt `specs` (rendered as `text`); when `running`, rewrite the file
        and reload `child`. False when the configuration did not change."""
        self._neighbors = specs
        if text == self._text:
            return False
        if running:
            self._write(text)
            self.reload(child)
        return True

    def write_current(self) -> None:
        """Write the file for the current neighbours (before the first start)."""
        self._write(self.render(self._neighbors))

    def reload(self, child: Child | None) -> None:
        if child is not None and child.ready and child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGUSR1)
            self._counters.count(reloads=1)
            log.info("reloading ExaBGP with a new configuration", extra={"pid": child.proc.pid})
        else:
            # A starting ExaBGP may read the old file or the new one: reload
            # when it is ready; reloading an unchanged file changes nothing.
            self._pending = True

    def child_ready(self, child: Child) -> None:
        """`child`'s bridge said hello: do the reload that had to wait for it."""
        if self._pending:
            self._pending = False
            self.reload(child)

    def _write(self, text: str) -> None:
        write_atomically(self._config_path, text)
        self._text = text
