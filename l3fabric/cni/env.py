"""The CNI_* environment a runtime runs the plugin with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from l3fabric.cni import spec
from l3fabric.cni.errors import DECODING_FAILURE, INVALID_ENVIRONMENT, CniError

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
# What each command needs besides CNI_COMMAND (CNI 1.1.0, section 2).
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
IFNAME_MAX = 15  # IFNAMSIZ less the terminating NUL


@dataclass(frozen=True)
class CniEnv:
    command: str
    container_id: str | None
    netns: str | None
    ifname: str | None
    args: tuple[tuple[str, str], ...]  # CNI_ARGS, in order
    path: tuple[str, ...]  # CNI_PATH entries

    def arg(self, key: str) -> str | None:
        return next((value for name, value in self.args if name == key), None)

    @property
    def pod_name(self) -> str | None:
        return self.arg("K8S_POD_NAME") or None

    @property
    def pod_namespace(self) -> str | None:
        return self.arg("K8S_POD_NAMESPACE") or None


def invalid(variable: str, problem: str) -> CniError:
    return CniError(INVALID_ENVIRONMENT, f"{variable}: {problem}")


def parse_command(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND")
    if not command:
        raise invalid("CNI_COMMAND", "is not set")
    if command not in COMMANDS:
        raise invalid("CNI_COMMAND", f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    return command


def parse_env(environ: Mapping[str, str]) -> CniEnv:
    command = parse_command(environ)
    missing = [name for name in REQUIRED[command] if not environ.get(name)]
    if missing:
        raise invalid(", ".join(missing), f"required for {command} but not set")
    container_id = environ.get("CNI_CONTAINERID") or None
    if container_id is not None and not spec.IDENTIFIER.fullmatch(container_id):
        raise invalid(
            "CNI_CONTAINERID",
            f"{container_id!r} must start with a letter or digit, then [A-Za-z0-9_.-]",
        )
    netns = environ.get("CNI_NETNS") or None
    if netns is not None and not netns.startswith("/"):
        raise invalid("CNI_NETNS", f"{netns!r} is not an absolute path")
    ifname = environ.get("CNI_IFNAME") or None
    if ifname is not None:
        check_ifname(ifname)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    args = parse_args(environ.get("CNI_ARGS", ""))
    return CniEnv(command, container_id, netns, ifname, args, path)


def check_ifname(ifname: str) -> None:
    if len(ifname) > IFNAME_MAX:
        raise invalid("CNI_IFNAME", f"{ifname!r} is longer than {IFNAME_MAX} characters")
    if ifname in (".", "..") or any(c in "/:" or c.isspace() for c in ifname):
        raise invalid("CNI_IFNAME", f"{ifname!r} is not a valid interface name")


def parse_args(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS: KEY=VALUE pairs separated by semicolons."""
    pairs: list[tuple[str, str]] = []
    for item in text.split(";"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(DECODING_FAILURE, f"CNI_ARGS: {item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)
