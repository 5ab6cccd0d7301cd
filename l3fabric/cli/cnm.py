"""`l3fabric cnm serve`: the Docker network and IPAM driver (docs/docker.md),
beside the node's agent, which it reaches only through the control socket."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from l3fabric.cli.output import EXIT_FAIL, EXIT_OK, EXIT_USAGE, CliError

AGENT_TIMEOUT = 60.0  # Docker's own plugin timeout is longer; a Join waits for the wiring


def cmd_serve(args: argparse.Namespace) -> int:
    from l3fabric import control, logs
    from l3fabric.cnm.driver import Driver, agent_call
    from l3fabric.cnm.server import serve

    if not args.socket.name.endswith(".sock"):
        raise CliError(
            f"--socket {args.socket}: Docker only finds plugin sockets named NAME.sock",
            EXIT_USAGE,
        )
    logs.setup(args.log_level, args.log_format)
    agent_socket = args.agent_socket or control.default_socket_path()
    driver = Driver(agent_call(agent_socket, AGENT_TIMEOUT))
    try:
        server = serve(args.socket, driver)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.socket}: {exc}", EXIT_FAIL) from None
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return: not in this thread.
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return EXIT_OK


def register(subparsers: Any) -> None:
    cnm = subparsers.add_parser("cnm", help="the Docker (libnetwork) network and IPAM driver")
    sub = cnm.add_subparsers(dest="cnm_command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="serve the driver on Docker's plugin socket")
    p.add_argument(
        "--socket",
        type=Path,
        default=Path("/run/docker/plugins/l3fabric.sock"),
        help="where Docker looks for the plugin (default /run/docker/plugins/l3fabric.sock)",
    )
    p.add_argument(
        "--agent-socket",
        type=Path,
        default=None,
        help="the agent's control socket (default $L3FABRIC_SOCKET or the agent's default)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="json", choices=("json", "text"))
    p.set_defaults(func=cmd_serve)
