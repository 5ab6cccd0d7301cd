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
from dataclasses import dataclass, field

from l3fabric import limits
from l3fabric.dataplane import Dataplane, DataplaneError, NetnsNotFound, resolve_netns
from l3fabric.dataplane.base import Observed
from l3fabric.dataplane.netns import netns_identity, same_netns
from l3fabric.datastore.base import Datastore, VersionConflict
from l3fabric.datastore.keys import KeyLayout
from l3fabric.ipam.allocator import Ipam
from l3fabric.ipam.errors import IpamError, UnknownPool
from l3fabric.model import WORKLOAD_IFACE, IPAddress, IPNetwork, Workload, valid_ifname

log = logging.getLogger(__name__)


class WorkloadError(Exception):
    """A workload request that cannot be done; the control edge maps the kind
    to an error code (agent/handlers.py)."""


class InvalidWorkload(WorkloadError):
    pass


class WorkloadConflict(WorkloadError):
    pass


class WorkloadNotFound(WorkloadError):
    pass


class AddressesUnavailable(WorkloadError):
    pass


class UnknownPoolRequested(WorkloadError):
    """A pool asked for is not one of the node's pools; nothing was taken."""


class WiringFailed(WorkloadError):
    pass


@dataclass(frozen=True)
class Attachment:
    """Who asks for a workload and what it is to them (CNI, CNM, the CLI).
    A retried add must bring the same; another one is a conflict."""

    ifname: str = WORKLOAD_IFACE
    container_id: str = ""
    owner: str = "cli"
    namespace: str = "default"
    pod: str = ""
    labels: tuple[tuple[str, str], ...] = field(default=())

    def of(self, workload: Workload) -> Attachment:
        return Attachment(
            workload.ifname,
            workload.container_id,
            workload.owner,
            workload.namespace,
            workload.pod,
            workload.labels,
        )

    def differences(self, workload: Workload) -> list[str]:
        theirs = self.of(workload)
        return [
            f"{key} {getattr(theirs, key)!r}, not {getattr(self, key)!r}"
            for key in ("ifname", "container_id", "owner", "namespace", "pod", "labels")
            if getattr(theirs, key) != getattr(self, key)
        ]


class WorkloadManager:
    def __init__(
        self,
        *,
        node: str,
        store: Datastore,
        ipam: Ipam,
        dataplane: Dataplane,
        keys: KeyLayout,
        on_change: Callable[[Workload | None, Workload | None], None] = lambda added, gone: None,
    ) -> None:
        self._node = node
        self._store = store
        self._ipam = ipam
        self._dataplane = dataplane
        self._keys = keys
        self._on_change = on_change
        self._cache: dict[str, Workload] | None = None

    def key(self, name: str) -> str:
        return self._keys.workload(self._node, name)

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
                    for kv in self._store.list(self._keys.workloads(self._node))
                )
            }
        return self._cache

    def add(
        self,
        name: str,
        netns: str,
        requested: Sequence[str] = (),
        *,
        attachment: Attachment = Attachment(),
        pools: Sequence[IPNetwork] | None = None,
        runtime_ifname: str | None = None,
    ) -> Workload:
        """Add (or, for a retry, find and re-wire) a workload. `pools`, when
        given, are the only pools its addresses may come from. With
        `runtime_ifname` the container end is made in the node's namespace
        under that name, for the runtime to move (Docker's Join)."""
        problem = limits.name_error(name, limits.WORKLOAD_NAME_MAX_LEN)
        if problem is not None:
            raise InvalidWorkload(f"workload name: {problem}")
        if not valid_ifname(attachment.ifname):
            raise InvalidWorkload(f"interface name {attachment.ifname!r} is not a valid name")
        if runtime_ifname is not None:
            # The runtime's sandbox: Docker makes it only after the Join that
            # wires it, so it is named by its path and need not exist yet.
            if not netns.startswith("/"):
                raise InvalidWorkload(f"sandbox {netns!r} must be an absolute path")
            netns_path = netns
        else:
            try:
                netns_path = resolve_netns(netns)
            except NetnsNotFound as exc:
                raise InvalidWorkload(str(exc)) from None
        if same_netns(netns_path, "/proc/self/ns/net"):
            raise InvalidWorkload(
                f"--netns {netns} is the node's own network namespace, not a workload's"
            )
        wanted = _parse_addresses(requested)

        existing = self.get(name)
        if existing is not None:
            if existing.netns != netns_path:
                raise WorkloadConflict(f"workload {name} already exists in netns {existing.netns}")
            if wanted and set(wanted) != set(existing.addresses):
                raise WorkloadConflict(
                    f"workload {name} already exists with addresses "
                    + ", ".join(map(str, existing.addresses)),
                )
            differences = attachment.differences(existing)
            if differences:
                raise WorkloadConflict(
                    f"workload {name} already exists with " + "; ".join(differences)
                )
            outside = [a for a in existing.addresses if pools and not any(a in p for p in pools)]
            if outside:
                raise WorkloadConflict(
                    f"workload {name} already exists with "
                    + ", ".join(map(str, outside))
                    + " outside pools "
                    + ", ".join(map(str, pools or ()))
                )
            # A retry of an add that succeeded: make sure the wiring is there.
            self._wire(existing, runtime_ifname)
            return existing

        if runtime_ifname is None:
            self._check_netns_free(netns, netns_path, attachment.ifname)
        # Workload names are the IPAM handles, so they are unique in the fabric.
        holder = self._ipam.holder(name)
        if holder is not None and holder != self._node:
            raise WorkloadConflict(
                f"workload name {name} is in use on node {holder}: names are fabric-wide",
            )
        try:
            addresses = self._ipam.assign(name, wanted, pools=pools)
        except UnknownPool as exc:
            raise UnknownPoolRequested(str(exc)) from None
        except IpamError as exc:
            raise AddressesUnavailable(str(exc)) from None
        workload = Workload(
            name,
            self._node,
            netns_path,
            tuple(addresses),
            netns_id=netns_identity(netns_path),
            ifname=attachment.ifname,
            container_id=attachment.container_id,
            owner=attachment.owner,
            namespace=attachment.namespace,
            pod=attachment.pod,
            labels=attachment.labels,
        )
        try:
            self._store.put(self.key(name), _encode(workload), expect_version=0)
            self._records()[name] = workload
        except VersionConflict:
            self._undo(workload, record=False)
            raise WorkloadConflict(f"workload {name} was added concurrently") from None
        except Exception:
            self._undo(workload, record=False)
            raise
        try:
            self._wire(workload, runtime_ifname)
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

    def _check_netns_free(self, given: str, path: str, ifname: str) -> None:
        """A new workload's namespace must be nobody else's (docs/security.md)."""
        identity = netns_identity(path)
        for other in self._records().values():
            if identity and other.netns_id == identity:
                raise InvalidWorkload(f"--netns {given} already holds workload {other.name}")
        problem = self._dataplane.netns_refusal(path, ifname)
        if problem is not None:
            raise InvalidWorkload(f"--netns {given}: {problem}")

    def delete(self, name: str) -> Workload:
        workload = self.get(name)
        if workload is None:
            raise WorkloadNotFound(f"no workload named {name} on node {self._node}")
        try:
            self._dataplane.detach(workload.host_iface)
        except DataplaneError as exc:
            # The record stays, so the reconciler or a retry finishes the job.
            raise WiringFailed(f"detaching {name}: {exc}") from None
        # The record first, the addresses after it. The other order let a
        # kill between the two leave a record (and, once reconciled, a wired
        # workload) whose addresses IPAM had already handed back, for the
        # next add to take: one address on two workloads. This order can
        # only leak, and a leak is what `ipam check --repair` frees.
        self._store.delete(self.key(name))
        self._records().pop(name, None)
        self._ipam.release(name)
        log.info("workload deleted", extra={"workload": name})
        self._on_change(None, workload)
        return workload

    def inspect(self, workload: Workload) -> Observed:
        """What the kernel has of the workload's wiring (read only)."""
        try:
            return self._dataplane.inspect(workload)
        except (DataplaneError, OSError) as exc:
            raise WiringFailed(f"inspecting {workload.name}: {exc}") from None

    def _wire(self, workload: Workload, runtime_ifname: str | None = None) -> None:
        try:
            if runtime_ifname is None:
                self._dataplane.attach(workload)
            else:
                self._dataplane.attach_for_runtime(workload, runtime_ifname)
        except (DataplaneError, OSError, ValueError) as exc:
            raise WiringFailed(f"wiring {workload.name}: {exc}") from None

    def _undo(self, workload: Workload, *, record: bool) -> None:
        """Give back what a failed add took; each step on its own, so one
        failing does not skip the others."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("detach", lambda: self._dataplane.detach(workload.host_iface)),
        ]
        if record:
            # Before the addresses go, as in delete(): never a record whose
            # addresses are free for another workload.
            steps.append(("delete record", lambda: self._store.delete(self.key(workload.name))))
            steps.append(("forget record", lambda: self._records().pop(workload.name, None)))
        steps.append(("release addresses", lambda: self._ipam.release(workload.name)))
        for what, step in steps:
            try:
                step()
            except Exception:
                log.exception(
                    "undoing a failed add: a step failed",
                    extra={"workload": workload.name, "step": what},
                )


def _encode(workload: Workload) -> bytes:
    return json.dumps(workload.to_dict(), sort_keys=True).encode()


def _parse_addresses(values: Sequence[str]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for value in values:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise InvalidWorkload(f"--ip {value!r} is not an IP address") from None
        if address in addresses:
            raise InvalidWorkload(f"--ip {value} given twice")
        addresses.append(address)
    return addresses
