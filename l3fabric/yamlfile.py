"""The one YAML reader for every file l3fabric reads: node configs, BIRD
render input, lab topologies.

Stricter than yaml.safe_load: a duplicate key is an error (safe_load keeps
the last value and silently drops half of what the operator wrote), the
file's size and nesting depth are bounded, and every problem is one
YamlFileError whose message names the file (and the line and column when
there is one). Returns plain data: dicts, lists, strings, numbers, booleans
and None (and the dates and times YAML 1.1 resolves).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024
# Deep enough for any real file; far below Python's recursion limit, which
# PyYAML's recursive composer would otherwise hit first.
MAX_DEPTH = 64


class YamlFileError(ValueError):
    """A file could not be read as YAML; the message names the file."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a duplicate key and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key; SafeLoader reports it below
                    continue
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


def load_file(path: str | os.PathLike[str]) -> Any:
    """Read and parse one YAML file; YamlFileError names the file."""
    source = os.fspath(path)
    try:
        with Path(source).open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise YamlFileError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise YamlFileError(f"{source}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{source}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return load_text(text, source)


def load_text(text: str, source: str) -> Any:
    """Parse YAML text that came from `source` (named in every error)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlFileError(f"{source}: larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        context = f" ({exc.context})" if exc.context else ""
        raise YamlFileError(f"{where}: invalid YAML: {exc.problem}{context}") from None
    except yaml.reader.ReaderError as exc:
        # A control character or a NUL: most likely a binary file.
        char = exc.character
        code = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        raise YamlFileError(
            f"{source}: not a text file: character {code} at position {exc.position}"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{source}: invalid YAML: {exc}") from None
