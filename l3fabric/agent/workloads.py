"""Adding and removing workloads: IPAM, the datastore record, the wiring.

The datastore record is the desired state; the kernel follows it. An add is
all-or-nothing: if wiring fails, the addresses and the record are given back,
so a failed add leaves nothing behind and changes nothing that existed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Sequence

from l3fabric.agent.server import RequestError
from l3fabric.dataplane import Dataplane, DataplaneError, NetnsNotFound, resolve_netns
from l3fabric.dataplane.netns import netns_identity, same_netns
from l3fabric.datastore.base import Datastore, VersionConflict
from l3fabric.ipam import Ipam, IpamError
from l3fabric.model import IPAddress, Workload, valid_name

log = logging.getLogger(__name__)


class WorkloadManager:
    def __init__(
        self,
        *,
        node: str,
        store: Datastore,
        ipam: Ipam,
        dataplane: Dataplane,
        key_prefix: str = "/l3fabric",
        on_change: Callable[[Workload | None, Workload | None], None] = lambda added, gone: None,
    ) -> None:
        self._node = node
        self._store = store
        self._ipam = ipam
        self._dataplane = dataplane
        self._prefix = f"{key_prefix}/workloads/{node}/"
        self._on_change = on_change
        self._cache: dict[str, Workload] | None = None

    def key(self, name: str) -> str:
        return self._prefix + name

    def list(self) -> list[Workload]:
        """This node's workloads. Read from the datastore once, then kept in
        memory: this agent is the only writer of its node's records, and a
        reconcile pass must not re-read 10k records every time."""
        return sorted(self._records().values())

    def get(self, name: str) -> Workload | None:
        return self._records().get(name)

    def _records(self) -> dict[str, Workload]:
        if self._cache is None:
            self._cache = {
                w.name: w
                for w in (
                    Workload.from_dict(json.loads(kv.value))
                    for kv in self._store.list(self._prefix)
                )
            }
        return self._cache

    def add(self, name: str, netns: str, requested: Sequence[str] = ()) -> Workload:
        if not valid_name(name) or len(name) > 253:
            raise RequestError("invalid", f"invalid workload name {name!r}")
        try:
            netns_path = resolve_netns(netns)
        except NetnsNotFound as exc:
            raise RequestError("invalid", str(exc)) from None
        if same_netns(netns_path, "/proc/self/ns/net"):
            raise RequestError(
                "invalid", f"--netns {netns} is the node's own network namespace, not a workload's"
            )
        wanted = _parse_addresses(requested)

        existing = self.get(name)
        if existing is not None:
            if existing.netns != netns_path:
                raise RequestError(
                    "conflict", f"workload {name} already exists in netns {existing.netns}"
                )
            if wanted and set(wanted) != set(existing.addresses):
                raise RequestError(
                    "conflict",
                    f"workload {name} already exists with addresses "
                    + ", ".join(map(str, existing.addresses)),
                )
            # A retry of an add that succeeded: make sure the wiring is there.
            self._wire(existing)
            return existing

        # Workload names are the IPAM handles, so they are unique in the fabric.
        holder = self._ipam.holder(name)
        if holder is not None and holder != self._node:
            raise RequestError(
                "conflict",
                f"workload name {name} is in use on node {holder}: names are fabric-wide",
            )
        try:
            addresses = self._ipam.assign(name, wanted)
        except IpamError as exc:
            raise RequestError("ipam", str(exc)) from None
        workload = Workload(
            name, self._node, netns_path, tuple(addresses), netns_id=netns_identity(netns_path)
        )
        try:
            self._store.put(self.key(name), _encode(workload), expect_version=0)
            self._records()[name] = workload
        except VersionConflict:
            self._undo(workload, record=False)
            raise RequestError("conflict", f"workload {name} was added concurrently") from None
        except Exception:
            self._undo(workload, record=False)
            raise
        try:
            self._wire(workload)
        except BaseException:
            # No record existed before this add (a retry of a successful add
            # takes the branch above), so all of it is ours to undo.
            self._undo(workload, record=True)
            raise
        log.info(
            "workload added", extra={"workload": name, "addresses": workload.to_dict()["addresses"]}
        )
        self._on_change(workload, None)
        return workload

    def delete(self, name: str) -> Workload:
        workload = self.get(name)
        if workload is None:
            raise RequestError("not-found", f"no workload named {name} on node {self._node}")
        try:
            self._dataplane.detach(workload.host_iface)
        except DataplaneError as exc:
            # The record stays, so the reconciler or a retry finishes the job.
            raise RequestError("dataplane", f"detaching {name}: {exc}") from None
        # Addresses first: a retry after a failure here still finds the record
        # and releases again (release is idempotent); the other order leaks.
        self._ipam.release(name)
        self._store.delete(self.key(name))
        self._records().pop(name, None)
        log.info("workload deleted", extra={"workload": name})
        self._on_change(None, workload)
        return workload

    def _wire(self, workload: Workload) -> None:
        try:
            self._dataplane.attach(workload)
        except (DataplaneError, OSError, ValueError) as exc:
            raise RequestError("dataplane", f"wiring {workload.name}: {exc}") from None

    def _undo(self, workload: Workload, *, record: bool) -> None:
        """Give back what a failed add took; each step on its own, so one
        failing does not skip the others."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("detach", lambda: self._dataplane.detach(workload.host_iface)),
            ("release addresses", lambda: self._ipam.release(workload.name)),
        ]
        if record:
            steps.append(("delete record", lambda: self._store.delete(self.key(workload.name))))
            steps.append(("forget record", lambda: self._records().pop(workload.name, None)))
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception("undoing a failed add of %s: %s failed", workload.name, what)


def _encode(workload: Workload) -> bytes:
    return json.dumps(workload.to_dict(), sort_keys=True).encode()


def _parse_addresses(values: Sequence[str]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for value in values:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise RequestError("invalid", f"--ip {value!r} is not an IP address") from None
        if address in addresses:
            raise RequestError("invalid", f"--ip {value} given twice")
        addresses.append(address)
    return addresses
