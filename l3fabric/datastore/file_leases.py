"""Leases of the file datastore: one small file per lease in leases/.

A lease file holds the lease's ttl and its deadline on the store's clock
(CLOCK_MONOTONIC by default, which every process of one boot shares; after a
reboot every deadline restarts from its full ttl, as etcd does when its
leader changes). Lease files are written with the store's lock held, and
replaced by rename, so readers never see a torn one. Granting and revoking
are not revisions of the store (nor are they in etcd); only the deletes of
the keys a lease held are.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from l3fabric.datastore.base import DatastoreError

_LEASE_FILE = struct.Struct("<4sdd")  # magic, ttl, deadline
_LEASE_MAGIC = b"L3FL"
# How stale an instance's view of other processes' leases may get: a lease
# granted elsewhere with a shorter ttl than this is expired up to this late.
RESCAN_INTERVAL = 1.0


@dataclass(frozen=True)
class Lease:
    lease_id: int
    ttl: float
    deadline: float


def lease_name(lease_id: int) -> str:
    return f"{lease_id:016x}"


class LeaseTable:
    """The leases/ directory. Writers must hold the store's lock."""

    def __init__(
        self, directory: Path, clock: Callable[[], float], write: Callable[..., None]
    ) -> None:
        self.directory = directory
        self._prefix = f"{directory}/"
        self._clock = clock
        self._write = write  # the store's atomic file writer
        self._next_check = float("-inf")

    def read(self, lease_id: int) -> Lease | None:
        path = self._prefix + lease_name(lease_id)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if len(data) != _LEASE_FILE.size or data[:4] != _LEASE_MAGIC:
            raise DatastoreError(f"{path} is not an l3fabric lease file")
        _, ttl, deadline = _LEASE_FILE.unpack(data)
        return Lease(lease_id, ttl, deadline)

    def alive(self, lease_id: int) -> Lease | None:
        lease = self.read(lease_id)
        if lease is None or lease.deadline <= self._clock():
            return None
        return lease

    def all(self) -> list[Lease]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        leases = []
        for name in names:
            try:
                lease_id = int(name, 16)
            except ValueError:
                continue
            lease = self.read(lease_id)
            if lease is not None:
                leases.append(lease)
        return leases

    def grant(self, ttl: float) -> Lease:
        while True:
            lease_id = secrets.randbits(63) or 1
            if self.read(lease_id) is None:
                break
        lease = Lease(lease_id, ttl, self._clock() + ttl)
        self._store(lease, durable=True)
        self._next_check = min(self._next_check, lease.deadline)
        return lease

    def renew(self, lease: Lease) -> Lease:
        renewed = Lease(lease.lease_id, lease.ttl, self._clock() + lease.ttl)
        self._store(renewed, durable=False)
        return renewed

    def remove(self, lease_id: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._prefix + lease_name(lease_id))

    def restart_all(self) -> None:
        """After a reboot the old clock's deadlines mean nothing: every lease
        gets its full ttl again."""
        for lease in self.all():
            self.renew(lease)

    def due(self) -> list[int]:
        """Leases whose deadline has passed. Cheap when none can be: the
        directory is scanned only at the next known deadline, or after
        RESCAN_INTERVAL for leases granted by other processes."""
        now = self._clock()
        if now < self._next_check:
            return []
        leases = self.all()
        due = [lease.lease_id for lease in leases if lease.deadline <= now]
        pending = [lease.deadline for lease in leases if lease.deadline > now]
        self._next_check = min([now + RESCAN_INTERVAL, *pending])
        return due

    def _store(self, lease: Lease, *, durable: bool) -> None:
        data = _LEASE_FILE.pack(_LEASE_MAGIC, lease.ttl, lease.deadline)
        self._write(self._prefix + lease_name(lease.lease_id), data, durable=durable)
