"""Route the CLI's control calls to an in-process agent's handlers, so a
command's output and exit code can be checked against the agent's fakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from l3fabric import control
from l3fabric.agent.server import Handler, RequestError


def through(monkeypatch: pytest.MonkeyPatch, table: dict[str, Handler]) -> None:
    def call(
        method: str,
        params: dict[str, Any] | None = None,
        *,
        socket_path: Path | None = None,
        timeout: float = 0.0,
    ) -> Any:
        try:
            return table[method](params or {})
        except RequestError as exc:
            raise control.ControlError(exc.code, exc.message) from None

    monkeypatch.setattr(control, "call", call)
