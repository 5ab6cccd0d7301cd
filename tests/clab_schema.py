"""containerlab's own topology schema (a copy in tests/data/clab, with its
licence), and a check of a topology file against it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parent / "data" / "clab" / "clab.schema.json"


@cache
def load_schema() -> dict[str, Any]:
    # Some of the schema's patterns use Go's [\p{N}\p{L}] (a letter or digit),
    # which Python's re does not know; [^\W_] is the same class in Python.
    text = SCHEMA.read_text().replace(r"[\\p{N}\\p{L}]", r"[^\\W_]")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_errors(path: Path) -> list[str]:
    """Every place where the topology file breaks the schema (empty: valid)."""
    import jsonschema

    # Not jsonschema.validate: that first checks the schema itself, whose
    # Go-only patterns it would refuse.
    validator = jsonschema.Draft7Validator(load_schema())
    return [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
