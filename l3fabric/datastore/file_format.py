"""The on-disk formats of the file datastore: rev, journal records, key files.

See file.py for how they are used. A leased put (kind 3) carries the lease id
between the key and the value; key files of leased keys have their own magic
with the lease id after the version, so files written before leases existed
read as they always did.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from l3fabric.datastore.base import DatastoreError, WatchEvent

HEAD = struct.Struct("<QQQQI4x")  # revision, journal end, generation, base, crc32
JOURNAL_HEADER = struct.Struct("<4sIQQ")  # magic, format, generation, base revision
JOURNAL_MAGIC = b"L3FJ"
JOURNAL_FORMAT = 1
RECORD = struct.Struct("<IIQBH")  # payload length, crc32, revision, kind, key length
RECORD_CHECKED = struct.Struct("<QBH")  # the header fields the crc covers
KEY_FILE = struct.Struct("<4sQ")  # magic, version
KEY_MAGIC = b"L3FK"
LEASED_KEY_FILE = struct.Struct("<4sQQ")  # magic, version, lease
LEASED_KEY_MAGIC = b"L3FE"
LEASE = struct.Struct("<Q")
PUT, DELETE, PUT_LEASED = 1, 2, 3  # a leased put's payload: key, lease, value


@dataclass(frozen=True)
class Head:
    revision: int  # every record up to this one is applied to keys/
    journal_end: int  # byte offset just past that record
    generation: int  # bumps when compaction replaces the journal
    base: int  # the journal holds revisions base+1 .. revision

    def pack(self) -> bytes:
        fields = (self.revision, self.journal_end, self.generation, self.base)
        crc = zlib.crc32(struct.pack("<QQQQ", *fields))
        return HEAD.pack(*fields, crc)

    @classmethod
    def unpack(cls, data: bytes) -> Head | None:
        if len(data) != HEAD.size:
            return None
        revision, end, generation, base, crc = HEAD.unpack(data)
        if zlib.crc32(struct.pack("<QQQQ", revision, end, generation, base)) != crc:
            return None
        return cls(revision, end, generation, base)


@dataclass(frozen=True)
class Record:
    revision: int
    kind: int
    key: str
    value: bytes
    end: int  # journal offset just past this record
    lease: int = 0

    def event(self) -> WatchEvent:
        kind: Literal["put", "delete"] = "delete" if self.kind == DELETE else "put"
        value = None if self.kind == DELETE else self.value
        return WatchEvent(kind, self.key, value, self.revision)


def encode_key(key: str) -> str:
    """A file name for a key. The code is prefix-free per character, so a key
    starts with a prefix exactly when its name starts with the prefix's name,
    which lets list() filter names without decoding them."""
    return quote(key, safe="/").replace("~", "%7E").replace("/", "~")


def decode_name(name: str) -> str | None:
    if not name.startswith("~"):
        return None
    return unquote(name.replace("~", "/"))


def encode_record(revision: int, kind: int, key: str, value: bytes, lease: int = 0) -> bytes:
    key_bytes = key.encode()
    if kind == PUT_LEASED:
        value = LEASE.pack(lease) + value
    checked = RECORD_CHECKED.pack(revision, kind, len(key_bytes))
    crc = zlib.crc32(value, zlib.crc32(key_bytes, zlib.crc32(checked)))
    header = RECORD.pack(len(key_bytes) + len(value), crc, revision, kind, len(key_bytes))
    return header + key_bytes + value


def decode_records(data: bytes, offset: int) -> Iterator[Record]:
    """Complete, intact records from data (which starts at journal offset
    `offset`); stops at the first torn or damaged one."""
    pos = 0
    while pos + RECORD.size <= len(data):
        length, crc, revision, kind, key_len = RECORD.unpack_from(data, pos)
        start = pos + RECORD.size
        stop = start + length
        if stop > len(data) or key_len > length or kind not in (PUT, DELETE, PUT_LEASED):
            return
        payload = data[start:stop]
        checked = RECORD_CHECKED.pack(revision, kind, key_len)
        if zlib.crc32(payload, zlib.crc32(checked)) != crc:
            return
        key = payload[:key_len].decode(errors="replace")
        value, lease = payload[key_len:], 0
        if kind == PUT_LEASED:
            if len(value) < LEASE.size:
                return
            (lease,), value = LEASE.unpack_from(value), value[LEASE.size :]
        yield Record(revision, kind, key, value, offset + stop, lease)
        pos = stop


def key_file_header(data: bytes, path: str) -> tuple[int, int, int]:
    """(version, lease, where the value starts) of a key file's contents."""
    if data[:4] == KEY_MAGIC and len(data) >= KEY_FILE.size:
        return KEY_FILE.unpack_from(data)[1], 0, KEY_FILE.size
    if data[:4] == LEASED_KEY_MAGIC and len(data) >= LEASED_KEY_FILE.size:
        _, version, lease = LEASED_KEY_FILE.unpack_from(data)
        return version, lease, LEASED_KEY_FILE.size
    raise DatastoreError(f"{path} is not an l3fabric key file")
