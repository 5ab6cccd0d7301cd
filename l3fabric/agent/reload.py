"""Config reloads: what a new config changes, whether every part accepts
it, and what `status` says of the last one. Pure, apart from the parts'
own checks passed in."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from l3fabric.config import Config, restart_required


def config_changes(old: Config, new: Config) -> list[str]:
    """The keys whose values differ, two levels deep ("bgp.import_policy")."""
    changed: list[str] = []
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before == after:
            continue
        if dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after):
            inner = [
                f"{f.name}.{g.name}"
                for g in dataclasses.fields(before)
                if getattr(before, g.name) != getattr(after, g.name)
            ]
            changed += inner or [f.name]
        else:
            changed.append(f.name)
    return changed


def reload_problems(
    old: Config, new: Config, checks: Sequence[tuple[str, Callable[[Config], None]]]
) -> list[str]:
    """Why `new` cannot replace `old` while running; empty when it can.
    Each (part, check) raises ValueError for what that part cannot run."""
    problems = [
        f"{new.source}: {key}: changed; takes effect only on restart"
        for key in restart_required(old, new)
    ]
    for part, check in checks:
        try:
            check(new)
        except ValueError as exc:
            problems.append(f"{new.source}: {part}: {exc}")
    return problems


@dataclass
class ReloadHistory:
    """Config generation 1 is the one the agent started with; each reload
    that took effect adds one."""

    generation: int = 1
    last_error: list[str] = field(default_factory=list)
    last_reload_at: float | None = None

    def taken(self, at: float) -> None:
        self.generation += 1
        self.last_error = []
        self.last_reload_at = at

    def rejected(self, errors: list[str], at: float) -> None:
        self.last_error = list(errors)
        self.last_reload_at = at

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "last_reload_at": self.last_reload_at,
            "last_reload_errors": self.last_error,
        }
