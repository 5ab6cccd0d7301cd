"""DNS records in the SkyDNS layout that CoreDNS's etcd plugin reads.

A record is a JSON value at a key made of the owner name's labels in reverse
order under a prefix: `w0.default.l3fabric.internal` lives at
`/skydns/internal/l3fabric/default/w0/...`. A name answers with every record
at or below its key (several addresses of one name are sub-keys of it), so
the same datastore can be served by l3fabric's server or by an unmodified
CoreDNS. The value is the SkyDNS service message: `host` (an address, or a
domain name for SRV targets, PTR and CNAME), `ttl`, and optionally `port`,
`priority`, `weight`, `text`, `mail`, `targetstrip`, `group`; zero fields
are left out, as Go's `omitempty` does, in Go's field order.

Names l3fabric writes:

- a workload:  NAME.NAMESPACE.ZONE, one sub-key per address (A/AAAA);
- a service:   SVC.NAMESPACE.svc.ZONE, one sub-key per endpoint address,
  grouped so that the SRV entries below are not mixed into A answers;
- its ports:   _PORT._PROTO.SVC.NAMESPACE.svc.ZONE, one SRV entry per
  endpoint whose target is the endpoint workload's name;
- reverse:     the address's in-addr.arpa / ip6.arpa name, host = the
  workload's name (PTR).

Everything here is pure: callers write the (key, value) pairs. It sits in
the datastore package because both sides use it: the agent writes the
records (agent/discovery.py) and the DNS server reads them (l3fabric.dns).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from l3fabric.datastore.base import InvalidKey, KeyValue, validate_key, validate_prefix
from l3fabric.model import IPAddress

DEFAULT_PREFIX = "/skydns"
DEFAULT_ZONE = "l3fabric.internal"
DEFAULT_TTL = 5  # seconds: workloads come and go, caches must follow quickly
DEFAULT_NAMESPACE = "default"
SERVICE_LABEL = "svc"
# CoreDNS reads a zone's own A/AAAA from apex.dns.ZONE and its NS from
# ns.dns.ZONE; a namespace called "dns" would collide with those, and one
# called "svc" with the services.
RESERVED_NAMESPACES = frozenset({SERVICE_LABEL, "dns"})
ADDRESS_GROUP = "addresses"  # a service's address records
SRV_GROUP = "srv"  # its SRV entries, which point at workload names
CORE_DNS_DEFAULT_TTL = 300  # what CoreDNS uses for a record without a ttl
CORE_DNS_DEFAULT_PRIORITY = 10
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
PROTOCOLS = ("tcp", "udp", "sctp")
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Service labels (_http, _tcp) may start with an underscore.
_STORED_LABEL = re.compile(r"^_?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_UINT32_MAX = 2**32 - 1
_GO_FIELD_ORDER = (
    "host",
    "port",
    "priority",
    "weight",
    "text",
    "mail",
    "ttl",
    "targetstrip",
    "group",
)
_INT_FIELDS = ("port", "priority", "weight", "targetstrip")
_STR_FIELDS = ("host", "text", "group")


class RecordError(ValueError):
    """A name, address or stored record that is not well formed."""


HostType = Literal["A", "AAAA", "CNAME", "TXT"]


@dataclass(frozen=True)
class Record:
    """One SkyDNS service message and where it is stored.

    name is the owner name the key spells (lowercase, no trailing dot)."""

    key: str
    name: str
    host: str = ""
    port: int = 0
    priority: int = 0
    weight: int = 0
    text: str = ""
    mail: bool = False
    ttl: int = 0
    targetstrip: int = 0
    group: str = ""

    def value(self) -> bytes:
        """The JSON value: Go's field order, zero fields left out."""
        fields: dict[str, Any] = {}
        for field in _GO_FIELD_ORDER:
            value = getattr(self, field)
            if value:
                fields[field] = value
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()

    def host_type(self) -> HostType:
        """What the host field is, as CoreDNS decides it."""
        address = self.address()
        if address is None:
            return "TXT" if not self.host and self.text else "CNAME"
        return "A" if address.version == 4 else "AAAA"

    def address(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def effective_ttl(self) -> int:
        return self.ttl or CORE_DNS_DEFAULT_TTL


@dataclass(frozen=True)
class ServicePort:
    """A named service port: `http:80/tcp` is SRV `_http._tcp.SVC.NS.svc.ZONE`."""

    name: str
    port: int
    protocol: str = "tcp"

    @classmethod
    def parse(cls, text: str) -> ServicePort:
        """NAME:PORT[/PROTO], e.g. `http:80/tcp`."""
        name, sep, rest = text.partition(":")
        if not sep:
            raise RecordError(f"service port {text!r}: expected NAME:PORT[/PROTO]")
        number, _, protocol = rest.partition("/")
        if not number.isdigit():
            raise RecordError(f"service port {text!r}: {number!r} is not a port number")
        port = cls(name, int(number), protocol or "tcp")
        port.check()
        return port

    def check(self) -> None:
        check_label(self.name, "service port name")
        if not 1 <= self.port <= 65535:
            raise RecordError(f"service port {self.name}: port {self.port} is not in 1..65535")
        if self.protocol not in PROTOCOLS:
            raise RecordError(
                f"service port {self.name}: protocol {self.protocol!r} is not one of "
                + ", ".join(PROTOCOLS)
            )


@dataclass(frozen=True)
class Endpoint:
    """A ready workload behind a service, in the service's namespace."""

    name: str
    addresses: tuple[IPAddress, ...]


# --- names and keys ---------------------------------------------------------


def check_label(label: object, what: str) -> str:
    """A DNS label l3fabric writes: lowercase letters, digits and inner
    hyphens, 1 to 63 characters."""
    if not isinstance(label, str):
        raise RecordError(f"{what} must be a string, not {type(label).__name__}")
    if not _LABEL.match(label):
        raise RecordError(
            f"{what} {label!r} is not a DNS label: 1 to {MAX_LABEL_LENGTH} lowercase letters, "
            "digits and hyphens, starting and ending with a letter or digit"
        )
    return label


def check_name(name: object, what: str, *, stored: bool = False) -> str:
    """A domain name without the trailing dot. stored=True also allows the
    `_service._proto` labels that SRV names use."""
    if not isinstance(name, str):
        raise RecordError(f"{what} must be a string, not {type(name).__name__}")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise RecordError(f"{what} {name!r} must be 1 to {MAX_NAME_LENGTH} characters")
    for label in name.split("."):
        if stored:
            if not _STORED_LABEL.match(label) or len(label) > MAX_LABEL_LENGTH:
                raise RecordError(f"{what} {name!r}: {label!r} is not a DNS label")
        else:
            check_label(label, f"{what} {name!r}: label")
    return name


def check_zone(zone: object) -> str:
    if isinstance(zone, str):
        zone = zone.rstrip(".")
    return check_name(zone, "zone")


def name_to_key(name: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The key of a name: its labels reversed under prefix."""
    check_name(name, "name", stored=True)
    key = _prefix(prefix) + "/" + "/".join(reversed(name.split(".")))
    try:
        return validate_key(key)
    except InvalidKey as exc:
        raise RecordError(f"name {name!r}: {exc}") from None


def key_to_name(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The owner name a key spells; the inverse of name_to_key."""
    base = _prefix(prefix) + "/"
    if not key.startswith(base) or key == base:
        raise RecordError(f"key {key!r} is not under the prefix {base!r}")
    labels = key[len(base) :].split("/")
    return check_name(".".join(reversed(labels)), f"key {key!r}: name", stored=True)


def _prefix(prefix: str) -> str:
    try:
        validate_prefix(prefix)
    except InvalidKey as exc:
        raise RecordError(str(exc)) from None
    if prefix == "/" or prefix.endswith("/"):
        raise RecordError(f"prefix {prefix!r} must not end with '/'")
    return prefix


def address_label(address: IPAddress) -> str:
    """The sub-key label of one address: 10-0-0-5, fd00-0000-...-0005 (the
    exploded form, so no label starts with or doubles a hyphen)."""
    if address.version == 4:
        return str(address).replace(".", "-")
    return address.exploded.replace(":", "-")


def workload_name(name: str, namespace: str = DEFAULT_NAMESPACE, zone: str = DEFAULT_ZONE) -> str:
    check_label(name, "workload name")
    _check_namespace(namespace)
    return check_name(f"{name}.{namespace}.{check_zone(zone)}", "workload DNS name")


def service_name(service: str, namespace: str = DEFAULT_NAMESPACE, zone: str = DEFAULT_ZONE) -> str:
    check_label(service, "service name")
    _check_namespace(namespace)
    return check_name(
        f"{service}.{namespace}.{SERVICE_LABEL}.{check_zone(zone)}", "service DNS name"
    )


def srv_name(port: ServicePort, service: str, namespace: str, zone: str = DEFAULT_ZONE) -> str:
    port.check()
    return f"_{port.name}._{port.protocol}.{service_name(service, namespace, zone)}"


def reverse_name(address: IPAddress) -> str:
    """5.0.0.10.in-addr.arpa, or the 32 nibbles under ip6.arpa."""
    return address.reverse_pointer


def _check_namespace(namespace: str) -> None:
    check_label(namespace, "namespace")
    if namespace in RESERVED_NAMESPACES:
        raise RecordError(
            f"namespace {namespace!r} is reserved in DNS names (it would collide with "
            + ("services" if namespace == SERVICE_LABEL else "CoreDNS's apex and NS records")
            + ")"
        )


def _addresses(addresses: Iterable[IPAddress | str], what: str) -> list[IPAddress]:
    out: list[IPAddress] = []
    for raw in addresses:
        try:
            address = ipaddress.ip_address(raw)
        except ValueError:
            raise RecordError(f"{what}: {raw!r} is not an IP address") from None
        if address not in out:
            out.append(address)
    return sorted(out, key=lambda a: (a.version, int(a)))


def _ttl(ttl: int) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 2**31 - 1:
        raise RecordError(f"ttl {ttl!r} must be a whole number of seconds, 1 or more")
    return ttl


# --- what l3fabric writes ---------------------------------------------------


def workload_prefix(
    name: str,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    zone: str = DEFAULT_ZONE,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The key prefix (ending in '/') of a workload's address records: list
    it to find what is registered, delete what it holds to unregister."""
    return name_to_key(workload_name(name, namespace, zone), prefix) + "/"


def workload_records(
    name: str,
    namespace: str,
    addresses: Iterable[IPAddress | str],
    *,
    ttl: int = DEFAULT_TTL,
    zone: str = DEFAULT_ZONE,
    prefix: str = DEFAULT_PREFIX,
) -> list[tuple[str, bytes]]:
    """A/AAAA of NAME.NAMESPACE.ZONE: one sub-key per address."""
    base = name_to_key(workload_name(name, namespace, zone), prefix)
    records = []
    for address in _addresses(addresses, f"workload {name}"):
        key = f"{base}/{address_label(address)}"
        records.append(Record(key, key_to_name(key, prefix), host=str(address), ttl=_ttl(ttl)))
    return [(r.key, r.value()) for r in records]


def ptr_key(address: IPAddress | str, prefix: str = DEFAULT_PREFIX) -> str:
    return name_to_key(reverse_name(_addresses([address], "PTR")[0]), prefix)


def ptr_records(
    name: str,
    namespace: str,
    addresses: Iterable[IPAddress | str],
    *,
    ttl: int = DEFAULT_TTL,
    zone: str = DEFAULT_ZONE,
    prefix: str = DEFAULT_PREFIX,
) -> list[tuple[str, bytes]]:
    """The reverse records of a workload's addresses: host is its name with
    the trailing dot, as in CoreDNS's documented reverse example."""
    target = workload_name(name, namespace, zone) + "."
    out = []
    for address in _addresses(addresses, f"workload {name}"):
        key = ptr_key(address, prefix)
        out.append((key, Record(key, reverse_name(address), host=target, ttl=_ttl(ttl)).value()))
    return out


def service_prefix(
    service: str,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    zone: str = DEFAULT_ZONE,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    """The key prefix (ending in '/') of everything a service registers."""
    return name_to_key(service_name(service, namespace, zone), prefix) + "/"


def service_records(
    service: str,
    namespace: str,
    endpoints: Sequence[Endpoint],
    ports: Sequence[ServicePort] = (),
    *,
    ttl: int = DEFAULT_TTL,
    zone: str = DEFAULT_ZONE,
    prefix: str = DEFAULT_PREFIX,
) -> list[tuple[str, bytes]]:
    """SVC.NS.svc.ZONE: A/AAAA of every endpoint address; per port
    _PORT._PROTO.SVC.NS.svc.ZONE: SRV to each endpoint's workload name.

    The two kinds carry different groups: CoreDNS answers a name with only
    the shortest keys' group, so A queries never see the SRV entries."""
    base = name_to_key(service_name(service, namespace, zone), prefix)
    _ttl(ttl)
    records: list[Record] = []
    seen: dict[IPAddress, str] = {}
    names = set()
    for endpoint in endpoints:
        workload_name(endpoint.name, namespace, zone)  # checks the label
        if endpoint.name in names:
            raise RecordError(f"service {service}: endpoint {endpoint.name} is listed twice")
        names.add(endpoint.name)
        for address in _addresses(endpoint.addresses, f"endpoint {endpoint.name}"):
            if address in seen:
                raise RecordError(
                    f"service {service}: address {address} belongs to both "
                    f"{seen[address]} and {endpoint.name}"
                )
            seen[address] = endpoint.name
            key = f"{base}/{address_label(address)}"
            records.append(
                Record(
                    key, key_to_name(key, prefix), host=str(address), ttl=ttl, group=ADDRESS_GROUP
                )
            )
    port_names = set()
    for port in ports:
        port.check()
        if (port.name, port.protocol) in port_names:
            raise RecordError(f"service {service}: port {port.name}/{port.protocol} twice")
        port_names.add((port.name, port.protocol))
        srv_base = name_to_key(srv_name(port, service, namespace, zone), prefix)
        for endpoint in endpoints:
            key = f"{srv_base}/{endpoint.name}"
            records.append(
                Record(
                    key,
                    key_to_name(key, prefix),
                    host=workload_name(endpoint.name, namespace, zone),
                    port=port.port,
                    ttl=ttl,
                    group=SRV_GROUP,
                )
            )
    return [(r.key, r.value()) for r in records]


def plan_update(
    existing: Iterable[KeyValue], desired: Iterable[tuple[str, bytes]]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """What to put and what to delete so that the keys listed under a
    workload's or service's prefix become exactly `desired`. Unchanged
    values are not rewritten, so watchers see only real changes."""
    current = {kv.key: kv.value for kv in existing}
    wanted = dict(desired)
    puts = [(k, v) for k, v in wanted.items() if current.get(k) != v]
    deletes = sorted(k for k in current if k not in wanted)
    return puts, deletes


# --- reading what is stored -------------------------------------------------


def parse_record(key: str, value: bytes, prefix: str = DEFAULT_PREFIX) -> Record:
    """A stored key and value back into a Record, checked as CoreDNS's Go
    decoder would (unknown fields are ignored, wrong types are errors)."""
    name = key_to_name(key, prefix)
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"key {key}: value is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordError(f"key {key}: value must be a JSON object")
    fields: dict[str, Any] = {}
    for field in _STR_FIELDS:
        if field in data:
            if not isinstance(data[field], str):
                raise RecordError(f"key {key}: {field} must be a string")
            fields[field] = data[field]
    for field in _INT_FIELDS:
        if field in data:
            fields[field] = _int_field(key, field, data[field], -(2**31), 2**31 - 1)
    if "ttl" in data:
        fields["ttl"] = _int_field(key, "ttl", data["ttl"], 0, _UINT32_MAX)
    if "mail" in data:
        if not isinstance(data["mail"], bool):
            raise RecordError(f"key {key}: mail must be true or false")
        fields["mail"] = data["mail"]
    record = Record(key, name, **fields)
    if record.host and record.address() is None:
        check_name(record.host.rstrip("."), f"key {key}: host", stored=True)
    if not record.host and not record.text:
        raise RecordError(f"key {key}: a record needs a host or a text")
    return record


def _int_field(key: str, field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"key {key}: {field} must be a number, not {value!r}")
    if not low <= value <= high:
        raise RecordError(f"key {key}: {field} {value} is out of range {low}..{high}")
    return value


def parse_records(
    items: Mapping[str, bytes] | Iterable[KeyValue], prefix: str = DEFAULT_PREFIX
) -> tuple[list[Record], list[str]]:
    """Every record that parses, and an error line for each that does not."""
    pairs = items.items() if isinstance(items, Mapping) else ((kv.key, kv.value) for kv in items)
    records, errors = [], []
    for key, value in pairs:
        try:
            records.append(parse_record(key, value, prefix))
        except RecordError as exc:
            errors.append(str(exc))
    return records, errors
