"""The keeper of one supervised lab daemon: containerlab's `restart-policy`.

`python -m l3fabric.lab.keeper --policy on-failure --status FILE --state
STATE --holder PID:START -- ARGV...` runs ARGV (the daemon, entered into its
node), waits for it and, once the lab is deployed, starts it again as the
policy says, with backoff. It writes what it knows to FILE (JSON: the
daemon's pid, state, restarts, last exit) for `lab inspect`.

- The keeper is the process the lab records for the daemon: destroy stops it
  with the daemon (same process group), and SIGTERM to the keeper alone
  stops the daemon too. A stop is never answered with a restart.
- While the lab is still deploying, the keeper does not restart: it exits
  with the daemon's status, so deploy reports the failing daemon and its log
  as it does for an unsupervised one.
- It is a child subreaper: whatever a dead daemon left behind (the agent's
  ExaBGP, in its own session) becomes the keeper's child and is stopped
  before the restart, so the new daemon starts alone. The peers see the old
  session end without a NOTIFICATION and keep its routes for the graceful
  restart time, which covers the restart.
- When the node's holder is gone (the node was destroyed), it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l3fabric import logs
from l3fabric.lab.runtime import is_alive

log = logging.getLogger("l3fabric.lab.keeper")

POLICIES = ("no", "on-failure", "always")
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a daemon up this long starts the backoff again from the first step
ORPHAN_GRACE = 5.0
_PR_SET_CHILD_SUBREAPER = 36


def should_restart(policy: str, returncode: int) -> bool:
    """on-failure: a non-zero exit or a signal; always: any exit."""
    if policy == "always":
        return True
    return policy == "on-failure" and returncode != 0


def backoff(streak: int) -> float:
    """Seconds before restart number `streak` (0-based) of a run of quick
    failures: 1, 2, 4, ... up to 30."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(streak, 16)))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return f"code {returncode}"


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status_path(log_path: str | Path) -> Path:
    """Where the keeper of the daemon logging to `log_path` writes its status."""
    return Path(log_path).with_suffix(".keeper.json")


class Keeper:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_exit: str | None = None

    def write(self, state: str, pid: int | None = None, start: int | None = None) -> None:
        data = {
            "policy": self.args.policy,
            "state": state,
            "pid": pid,
            "start": start,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "since": time.time(),
        }
        tmp = self.args.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.args.status)

    def on_signal(self, signum: int, _frame: Any) -> None:
        # SIGHUP is passed on (the agent and BIRD reload on it); the others stop.
        self.stopping = self.stopping or signum != signal.SIGHUP
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def deployed(self) -> bool:
        try:
            return bool(json.loads(self.args.state.read_text()).get("deployed"))
        except (OSError, ValueError):
            return False

    def holder_alive(self) -> bool:
        pid, _, start = self.args.holder.partition(":")
        return is_alive(int(pid), int(start))

    def reap_orphans(self) -> None:
        """Stop what the dead daemon left: every remaining child, by PID."""
        deadline = time.monotonic() + ORPHAN_GRACE
        sig = signal.SIGTERM
        while True:
            children = _children()
            if not children:
                return
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            time.sleep(0.05)

    def run(self) -> int:
        streak = 0
        while True:
            self.child = subprocess.Popen(self.args.command, stdin=subprocess.DEVNULL)
            started = time.monotonic()
            self.write("running", self.child.pid, _start_time(self.child.pid))
            returncode = self.child.wait()
            self.last_exit = describe_exit(returncode)
            self.reap_orphans()
            if self.stopping:
                self.write("stopped")
                return 0
            if (
                not self.deployed()
                or not should_restart(self.args.policy, returncode)
                or not self.holder_alive()
            ):
                self.write("exited")
                return returncode if returncode >= 0 else 128 - returncode
            if time.monotonic() - started > STABLE_AFTER:
                streak = 0
            delay = backoff(streak)
            streak += 1
            self.write("restarting")
            log.warning(
                "daemon exited; restarting it",
                extra={"exit": self.last_exit, "delay": delay, "restarts": self.restarts + 1},
            )
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopping:
                time.sleep(0.05)
            if self.stopping:
                self.write("stopped")
                return 0
            self.restarts += 1


def _children() -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            text = Path(f"/proc/self/task/{task}/children").read_text()
            found += [int(p) for p in text.split()]
    return found


def _start_time(pid: int) -> int | None:
    from l3fabric.lab.runtime import process_start_time

    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        start = process_start_time(pid)
        if start is not None:
            return start
        time.sleep(0.01)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m l3fabric.lab.keeper")
    parser.add_argument("--policy", choices=POLICIES, required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="the lab's state file")
    parser.add_argument("--holder", required=True, metavar="PID:START")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the daemon's command after --")
    logs.setup("info", "text")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    keeper = Keeper(args)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, keeper.on_signal)
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
