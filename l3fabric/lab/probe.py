"""UDP echo for `lab verify`, run inside namespaces (standard library only,
so it starts fast).

    python -m l3fabric.lab.probe serve PORT
        Answers every datagram with "NONCE SOURCE": the source address the
        receiver saw. Prints "ready" once listening on IPv4 and IPv6.
    python -m l3fabric.lab.probe send PORT TIMEOUT ADDRESS...
        Sends to every address at once, resends every 0.25 s until answered
        or TIMEOUT, prints one JSON object: address -> seen source or null.
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import socket
import sys
import time

RESEND_INTERVAL = 0.25


def serve(port: int) -> int:
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v4.bind(("0.0.0.0", port))
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    v6.bind(("::", port))
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([v4, v6], [], [])
        for sock in readable:
            data, peer = sock.recvfrom(512)
            sock.sendto(data.split(b" ", 1)[0] + b" " + peer[0].encode(), peer)


def send(port: int, timeout: float, targets: list[str]) -> int:
    nonce = os.urandom(6).hex()
    sockets: dict[socket.socket, str] = {}
    seen: dict[str, str | None] = {t: None for t in targets}
    errors: dict[str, str] = {}
    for target in targets:
        family = socket.AF_INET6 if ipaddress.ip_address(target).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sockets[sock] = target
    deadline = time.monotonic() + timeout
    next_send = 0.0
    while time.monotonic() < deadline and any(v is None for v in seen.values()):
        now = time.monotonic()
        if now >= next_send:
            for sock, target in sockets.items():
                if seen[target] is None:
                    try:
                        sock.sendto(nonce.encode(), (target, port))
                    except OSError as exc:  # no route, unreachable: keep trying
                        errors[target] = exc.strerror or str(exc)
            next_send = now + RESEND_INTERVAL
        wait = max(0.0, min(next_send, deadline) - time.monotonic())
        readable, _, _ = select.select(list(sockets), [], [], wait)
        for sock in readable:
            try:
                data = sock.recv(512)
            except OSError as exc:  # an ICMP error for an earlier send
                errors[sockets[sock]] = exc.strerror or str(exc)
                continue
            answer_nonce, _, source = data.decode(errors="replace").partition(" ")
            if answer_nonce == nonce:
                seen[sockets[sock]] = source
    print(json.dumps({"seen": seen, "errors": errors}))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        return serve(int(argv[1]))
    if len(argv) >= 3 and argv[0] == "send":
        return send(int(argv[1]), float(argv[2]), argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
