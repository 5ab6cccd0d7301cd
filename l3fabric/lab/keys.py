"""Strict keys for the lab's files: every key is one the runner reads; a
containerlab key it cannot honour is named as unsupported, anything else is
unknown, with the nearest known key."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any


def check_keys(
    data: Mapping[Any, Any],
    key: str,
    known: tuple[str, ...],
    unsupported: tuple[str, ...],
    error: Any,
) -> None:
    """Every key of `data` is one the runner reads; a containerlab key it
    cannot honour is named as such, any other gets the nearest known key."""
    for raw_key in data:
        name = str(raw_key)
        if name in known:
            continue
        at = f"{key}.{name}" if key else name
        if name in unsupported:
            error(at, f"containerlab's {name!r} is not supported by the namespace runner")
            continue
        match = difflib.get_close_matches(name, [*known, *unsupported], n=1)
        hint = f"did you mean {match[0]!r}?" if match else f"known keys: {', '.join(known)}"
        error(at, f"unknown key ({hint})")
