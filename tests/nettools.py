"""Test helpers for real network namespaces and processes.

Tests never touch the host's root namespace: a "node" and a "workload" are
both namespaces made here with unique names, and every namespace and process
made here is removed by the fixture that made it, even when the test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_counter = itertools.count()


def unique_name(tag: str) -> str:
    """Short unique names: other labs and test runs may share this machine."""
    return f"t{os.getpid() % 100000}{tag}{next(_counter)}"


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def ns_run(ns: str, cmd: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    return run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout)


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until predicate returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # the state may not exist yet
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or predicate}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


class Namespaces:
    """Creates namespaces and removes exactly those at cleanup."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def add(self, tag: str = "n") -> str:
        name = unique_name(tag)
        run(["ip", "netns", "add", name])
        self.created.append(name)
        ns_run(name, ["ip", "link", "set", "lo", "up"])
        return name

    def link(
        self,
        ns_a: str,
        ns_b: str,
        addrs_a: Sequence[str] = (),
        addrs_b: Sequence[str] = (),
        names: tuple[str, str] = ("eth1", "eth1"),
    ) -> None:
        """A veth between two namespaces, with addresses, both ends up."""
        tmp_a, tmp_b = unique_name("va"), unique_name("vb")
        run(
            [
                "ip",
                "link",
                "add",
                tmp_a,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                tmp_b,
                "netns",
                ns_b,
            ]
        )
        for ns, tmp, name, addrs in (
            (ns_a, tmp_a, names[0], addrs_a),
            (ns_b, tmp_b, names[1], addrs_b),
        ):
            ns_run(ns, ["ip", "link", "set", tmp, "name", name])
            for addr in addrs:
                flags = ["nodad"] if ":" in addr else []
                ns_run(ns, ["ip", "addr", "add", addr, "dev", name, *flags])
            ns_run(ns, ["ip", "link", "set", name, "up"])

    def cleanup(self) -> None:
        for name in reversed(self.created):
            # Processes we started in it are gone by now (Processes cleans up
            # first); deleting the namespace removes its veths too.
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.created.clear()


class Processes:
    """Starts processes and stops exactly those, by PID, at cleanup."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        cmd: Sequence[str],
        *,
        netns: str | None = None,
        log_path: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so we can stop its children
            env={**os.environ, **(env or {})},
        )
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)
            # A SIGKILLed process group may leave children (ExaBGP); reap the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.started.clear()


def assert_never(predicate: Callable[[], object], *, duration: float, what: str) -> None:
    """Poll for `duration` seconds and fail as soon as predicate holds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if predicate():
            raise AssertionError(f"{what} happened")
        time.sleep(0.2)
