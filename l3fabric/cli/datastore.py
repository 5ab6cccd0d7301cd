"""`l3fabric datastore export|import` and `l3fabric nodes`: the datastore
read and written directly, not through an agent (l3fabric.cli.store names it).

The export is one JSON document (docs/cli.md describes it): every key under
the fabric prefix with its value, UTF-8 text where the value is UTF-8 and
base64 otherwise. Keys under a lease (node records) are listed and marked,
but an import does not write them: a lease belongs to a live agent, which
writes its record again when it registers.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l3fabric.cli.output import EXIT_OK, EXIT_USAGE, CliError, emit, format_table
from l3fabric.cli.store import StoreSpec, add_store_options, store_spec
from l3fabric.datastore import Datastore, DatastoreError, KeyValue, VersionConflict
from l3fabric.datastore.base import InvalidKey, validate_key
from l3fabric.datastore.keys import KeyLayout

FORMAT = "l3fabric-datastore-export"
VERSION = 1
ENCODINGS = ("utf-8", "base64")
_TOP_FIELDS = {"format", "version", "prefix", "exported_at", "source", "keys"}
_ENTRY_FIELDS = {"key", "encoding", "value", "leased"}
# Values under these parts of the layout are JSON objects (the records).
_RECORD_PARTS = ("nodes/", "workloads/", "ipam/")
# How many conflicting keys an import names before "and N more".
_NAMED = 5


class ExportFileError(Exception):
    """Every problem found in an export file."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    leased: bool = False


@dataclass(frozen=True)
class Export:
    prefix: str
    entries: tuple[Entry, ...]

    def moved_to(self, prefix: str) -> Export:
        """The same keys under another fabric prefix."""
        if prefix == self.prefix:
            return self
        cut = len(self.prefix)
        moved = tuple(Entry(prefix + e.key[cut:], e.value, e.leased) for e in self.entries)
        return Export(prefix, moved)


# -- the document --------------------------------------------------------------


def encode_value(value: bytes) -> tuple[str, str]:
    """(encoding, text): UTF-8 when the bytes are UTF-8, else base64."""
    try:
        return "utf-8", value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64", base64.b64encode(value).decode("ascii")


def export_document(
    kvs: Sequence[KeyValue], *, prefix: str, source: str, revision: int, now: datetime.datetime
) -> dict[str, Any]:
    keys = []
    for kv in sorted(kvs, key=lambda kv: kv.key):
        encoding, text = encode_value(kv.value)
        entry: dict[str, Any] = {"key": kv.key, "encoding": encoding, "value": text}
        if kv.lease:
            entry["leased"] = True
        keys.append(entry)
    return {
        "format": FORMAT,
        "version": VERSION,
        "prefix": prefix,
        "exported_at": now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": {"type": source, "revision": revision},
        "keys": keys,
    }


def parse_export(text: str, where: str) -> Export:
    """The export in `text`, checked whole; ExportFileError names every problem."""
    errors: list[str] = []

    def fail(field: str, message: str) -> None:
        errors.append(f"{where}: {field}: {message}" if field else f"{where}: {message}")

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportFileError([f"{where}: not JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise ExportFileError([f"{where}: must be a JSON object (an l3fabric datastore export)"])
    if data.get("format") != FORMAT:
        raise ExportFileError([f"{where}: format: must be {FORMAT!r}, not {data.get('format')!r}"])
    version = data.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        why = f"is newer than this l3fabric reads ({VERSION})" if newer else f"must be {VERSION}"
        raise ExportFileError([f"{where}: version: {version!r} {why}"])
    for unknown in sorted(set(data) - _TOP_FIELDS):
        fail(unknown, "unknown field")
    prefix = data.get("prefix")
    try:
        KeyLayout(prefix if isinstance(prefix, str) else "")
        validate_key(prefix)
    except (ValueError, InvalidKey):
        fail("prefix", f"{prefix!r} must be a key prefix like /l3fabric")
        prefix = None
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        fail("keys", "missing, or not a list")
        raw_keys = []
    entries: list[Entry] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_keys):
        entry = _parse_entry(raw, f"keys[{i}]", prefix, fail)
        if entry is None:
            continue
        if entry.key in seen:
            fail(f"keys[{i}].key", f"{entry.key} appears more than once")
            continue
        seen.add(entry.key)
        entries.append(entry)
    if errors or prefix is None:
        raise ExportFileError(errors)
    return Export(prefix, tuple(entries))


def _parse_entry(
    raw: Any, at: str, prefix: str | None, fail: Callable[[str, str], None]
) -> Entry | None:
    if not isinstance(raw, dict):
        fail(at, "must be an object with key, encoding and value")
        return None
    for unknown in sorted(set(raw) - _ENTRY_FIELDS):
        fail(f"{at}.{unknown}", "unknown field")
    key = raw.get("key")
    try:
        validate_key(key)
    except InvalidKey as exc:
        fail(f"{at}.key", str(exc))
        return None
    assert isinstance(key, str)
    if prefix is not None and not key.startswith(prefix + "/"):
        fail(f"{at}.key", f"{key} is not under the file's prefix {prefix}")
        return None
    encoding, text, leased = raw.get("encoding"), raw.get("value"), raw.get("leased", False)
    if not isinstance(leased, bool):
        fail(f"{at}.leased", "must be true or false")
    if encoding not in ENCODINGS:
        fail(f"{at}.encoding", f"must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        return None
    if not isinstance(text, str):
        fail(f"{at}.value", "missing, or not a string")
        return None
    if encoding == "utf-8":
        try:
            value = text.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"{at}.value", "is not valid UTF-8 text (a lone surrogate)")
            return None
    else:
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            fail(f"{at}.value", "is not valid base64")
            return None
    if prefix is not None and key[len(prefix) + 1 :].startswith(_RECORD_PARTS):
        try:
            record = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not isinstance(record, dict):
            fail(f"{at}.value", f"{key} holds a record, which must be a JSON object")
            return None
    return Entry(key, value, leased is True)


# -- import plan -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportPlan:
    write: tuple[Entry, ...]
    present: tuple[str, ...]  # already there with the same value (--merge)
    leased: tuple[str, ...]  # not written: their agents write them
    conflicts: tuple[str, ...]  # there with another value


def plan_import(export: Export, existing: Sequence[KeyValue]) -> ImportPlan:
    current = {kv.key: kv.value for kv in existing}
    write, present, leased, conflicts = [], [], [], []
    for entry in export.entries:
        if entry.leased:
            leased.append(entry.key)
        elif entry.key not in current:
            write.append(entry)
        elif current[entry.key] == entry.value:
            present.append(entry.key)
        else:
            conflicts.append(entry.key)
    return ImportPlan(tuple(write), tuple(present), tuple(leased), tuple(conflicts))


def _named(keys: Sequence[str]) -> str:
    more = f" and {len(keys) - _NAMED} more" if len(keys) > _NAMED else ""
    return ", ".join(keys[:_NAMED]) + more


# -- commands ----------------------------------------------------------------------


def _store_failed(spec: StoreSpec, exc: DatastoreError) -> CliError:
    return CliError(f"{spec.describe()}: {exc}")


def cmd_export(args: argparse.Namespace) -> int:
    spec = store_spec(args, args.prefix)
    store = spec.open()
    try:
        revision = store.revision()
        kvs = store.list(spec.prefix + "/")
    except DatastoreError as exc:
        raise _store_failed(spec, exc) from None
    finally:
        store.close()
    now = datetime.datetime.now(datetime.UTC)
    document = export_document(
        kvs, prefix=spec.prefix, source=spec.type, revision=revision, now=now
    )
    json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    where = str(args.file)
    try:
        text = sys.stdin.read() if where == "-" else Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {where}: {exc}", EXIT_USAGE) from None
    try:
        export = parse_export(text, where)
    except ExportFileError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    spec = store_spec(args, args.prefix)
    export = export.moved_to(spec.prefix)
    store = spec.open()
    try:
        return _import(store, spec, export, merge=args.merge, dry_run=args.dry_run)
    except DatastoreError as exc:
        raise _store_failed(spec, exc) from None
    finally:
        store.close()


def _import(
    store: Datastore, spec: StoreSpec, export: Export, *, merge: bool, dry_run: bool
) -> int:
    existing = store.list(spec.prefix + "/")
    if existing and not merge:
        raise CliError(
            f"{spec.describe()} already has {len(existing)} keys under {spec.prefix}/: "
            "import into an empty store, or --merge to add only what is missing"
        )
    plan = plan_import(export, existing)
    if plan.conflicts:
        raise CliError(
            f"{spec.describe()}: {len(plan.conflicts)} keys already exist with other values "
            f"({_named(plan.conflicts)}); nothing was written"
        )
    verb = "would write" if dry_run else "wrote"
    if not dry_run:
        for done, entry in enumerate(plan.write):
            try:
                store.put(entry.key, entry.value, expect_version=0)
            except VersionConflict:
                raise CliError(
                    f"{entry.key} was written by someone else during the import; "
                    f"{done} of {len(plan.write)} keys were written"
                ) from None
    print(f"{verb} {len(plan.write)} keys under {spec.prefix}/ into {spec.describe()}")
    if plan.present:
        print(f"{len(plan.present)} keys were already there with the same value")
    if plan.leased:
        print(
            f"skipped {len(plan.leased)} leased keys (node records): "
            "each agent writes its own when it registers"
        )
    return EXIT_OK


def node_rows(store: Datastore, keys: KeyLayout) -> list[dict[str, Any]]:
    rows = []
    for kv in store.list(keys.nodes):
        row: dict[str, Any] = {"name": keys.node_name(kv.key), "asn": None, "ipv4": None}
        row.update({"ipv6": None, "leased": bool(kv.lease), "lease_ttl": None})
        try:
            record = json.loads(kv.value)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            row.update({f: record.get(f) for f in ("asn", "ipv4", "ipv6")})
        except (UnicodeDecodeError, ValueError) as exc:
            row["error"] = f"unreadable node record: {exc}"
        if kv.lease:
            ttl = store.lease_ttl(kv.lease)
            row["lease_ttl"] = None if ttl is None else round(ttl, 1)
        rows.append(row)
    return rows


def _lease_cell(row: dict[str, Any]) -> str:
    if not row["leased"]:
        return "no lease"
    ttl = row["lease_ttl"]
    return "expiring" if ttl is None else f"{ttl:.0f}s"


def cmd_nodes(args: argparse.Namespace) -> int:
    spec = store_spec(args, args.prefix)
    store = spec.open()
    try:
        rows = node_rows(store, KeyLayout(spec.prefix))
    except DatastoreError as exc:
        raise _store_failed(spec, exc) from None
    finally:
        store.close()

    def table(data: list[dict[str, Any]]) -> str:
        if not data:
            return f"no nodes registered under {spec.prefix}/nodes/"
        return format_table(
            ("NAME", "AS", "IPV4", "IPV6", "LEASE"),
            [
                (r["name"], r["asn"] or "-", r["ipv4"] or "-", r["ipv6"] or "-", _lease_cell(r))
                for r in data
            ],
        )

    emit(rows, args.output, table)
    return EXIT_OK


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_store_options(common)
    common.add_argument(
        "--prefix",
        help="the fabric's key prefix (default: the config's datastore.prefix, else /l3fabric)",
    )
    group = subparsers.add_parser(
        "datastore", help="export and import the fabric's datastore"
    ).add_subparsers(dest="datastore_command", required=True, metavar="ACTION")
    p = group.add_parser("export", parents=[common], help="every key as JSON on stdout")
    p.set_defaults(func=cmd_export)
    p = group.add_parser("import", parents=[common], help="write an export into a datastore")
    p.add_argument("file", help="the export (JSON); - reads stdin")
    p.add_argument(
        "--merge",
        action="store_true",
        help="into a store that has keys: add the missing ones, refuse different values",
    )
    p.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    p.set_defaults(func=cmd_import)
    p = subparsers.add_parser("nodes", parents=[common], help="registered nodes and their leases")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.set_defaults(func=cmd_nodes)
