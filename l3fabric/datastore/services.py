"""Service definitions as stored in the datastore (keys.py: `services/NS/NAME`).

A service is a name in a namespace, a label selector and named ports. Its
endpoints are not stored here: every agent writes the DNS records of its own
workloads that the selector matches (agent/discovery.py). Everything here is
pure; `l3fabric service` writes these values and the agents read them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from l3fabric.datastore.skydns import (
    DEFAULT_NAMESPACE,
    RecordError,
    ServicePort,
    check_label,
    service_name,
)

# Kubernetes' label syntax: an optional DNS-subdomain prefix and a slash,
# then a name; values are names or empty.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY_RE = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE_RE = re.compile(rf"^({_LABEL_NAME})?$")

Labels = tuple[tuple[str, str], ...]


class ServiceError(ValueError):
    """A service definition, selector or label that is not well formed."""


def check_labels(pairs: Iterable[tuple[object, object]], what: str = "label") -> Labels:
    """Label pairs, each key once, sorted; keys and values in Kubernetes' syntax."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not _LABEL_KEY_RE.match(key) or len(key) > 316:
            raise ServiceError(
                f"{what} key {key!r} is not a label key: [PREFIX/]NAME, NAME 1 to 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise ServiceError(
                f"{what} {key}: value {value!r} is not a label value: up to 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        if key in seen and seen[key] != value:
            raise ServiceError(f"{what} {key} is given twice ({seen[key]!r} and {value!r})")
        seen[key] = value
    return tuple(sorted(seen.items()))


def parse_label(text: str, what: str = "label") -> tuple[str, str]:
    """KEY=VALUE, as `--label app=web` and `--selector app=web` take it."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ServiceError(f"{what} {text!r}: expected KEY=VALUE")
    [pair] = check_labels([(key, value)], what)
    return pair


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    selector: Labels = ()
    ports: tuple[ServicePort, ...] = ()

    def check(self) -> ServiceSpec:
        """Raises ServiceError naming what is wrong; returns self."""
        try:
            check_label(self.name, "service name")
            service_name(self.name, self.namespace)  # the namespace's rules
            seen = set()
            for port in self.ports:
                port.check()
                if (port.name, port.protocol) in seen:
                    raise ServiceError(
                        f"service {self.name}: port {port.name}/{port.protocol} is given twice"
                    )
                seen.add((port.name, port.protocol))
        except RecordError as exc:
            raise ServiceError(str(exc)) from None
        if not self.selector:
            # An empty selector would make every workload of the namespace
            # an endpoint: almost never what was meant, so it must be said.
            raise ServiceError(f"service {self.name}: at least one --selector KEY=VALUE is needed")
        check_labels(self.selector, f"service {self.name}: selector")
        return self

    def selects(self, namespace: str, labels: Labels) -> bool:
        """A workload in `namespace` with `labels` is one of the endpoints:
        same namespace, and every selector pair among its labels."""
        if namespace != self.namespace or not self.selector:
            return False
        have = dict(labels)
        return all(have.get(key) == value for key, value in self.selector)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "selector": dict(self.selector),
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in self.ports],
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: object, where: str = "service") -> ServiceSpec:
        if not isinstance(data, Mapping):
            raise ServiceError(f"{where}: expected a JSON object")
        name, namespace = data.get("name"), data.get("namespace", DEFAULT_NAMESPACE)
        selector, ports = data.get("selector") or {}, data.get("ports") or []
        if not isinstance(name, str) or not isinstance(namespace, str):
            raise ServiceError(f"{where}: name and namespace must be strings")
        if not isinstance(selector, Mapping):
            raise ServiceError(f"{where}: selector must be an object of strings")
        if not isinstance(ports, list) or not all(isinstance(p, Mapping) for p in ports):
            raise ServiceError(f"{where}: ports must be a list of objects")
        parsed = []
        for port in ports:
            number, proto = port.get("port"), port.get("protocol", "tcp")
            if not isinstance(number, int) or isinstance(number, bool):
                raise ServiceError(f"{where}: port {port.get('name')!r} needs a number")
            parsed.append(ServicePort(str(port.get("name")), number, str(proto)))
        try:
            labels = check_labels(selector.items(), f"{where}: selector")
            return cls(name, namespace, labels, tuple(parsed)).check()
        except ServiceError as exc:
            raise ServiceError(f"{where}: {exc}") from None

    @classmethod
    def decode(cls, value: bytes, where: str = "service") -> ServiceSpec:
        try:
            data = json.loads(value)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ServiceError(f"{where}: not JSON ({exc})") from None
        return cls.from_dict(data, where)
