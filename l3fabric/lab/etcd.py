"""etcd members of a lab: a node whose image names etcd runs Debian's
`etcd` in its namespace, one member of the lab's one cluster.

A member's address is its underlay address: the first `ip addr add` of its
exec steps (IPv4 before IPv6), known before anything is made, so the
initial cluster can be written from the topology alone. Its data lives in
the node's private /var/lib/etcd, in the lab's state directory, and goes
with `lab destroy`.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from l3fabric.model import IPAddress

CLIENT_PORT = 2379
PEER_PORT = 2380
DATA_ROOT = PurePosixPath("/var/lib/etcd")
# Asked inside the node: every member also listens on its own loopback.
HEALTH_URL = f"http://127.0.0.1:{CLIENT_PORT}/health"

_ADDR_WORDS = ("addr", "address", "a")


@dataclass(frozen=True)
class Member:
    name: str
    address: IPAddress

    def _url(self, port: int) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"http://{host}:{port}"

    @property
    def client_url(self) -> str:
        return self._url(CLIENT_PORT)

    @property
    def peer_url(self) -> str:
        return self._url(PEER_PORT)


def exec_address(commands: Sequence[str]) -> IPAddress | None:
    """The first address an exec step adds (`ip [-4|-6] addr add A/LEN dev
    IF`), IPv4 before IPv6; None when no step adds one."""
    found: list[IPAddress] = []
    for command in commands:
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        words = [w for w in words if w not in ("-4", "-6")]
        if len(words) < 4 or words[0] != "ip" or words[1] not in _ADDR_WORDS:
            continue
        if words[2] != "add":
            continue
        try:
            found.append(ipaddress.ip_interface(words[3]).ip)
        except ValueError:
            continue
    found.sort(key=lambda a: a.version)
    return found[0] if found else None


def argv(member: Member, cluster: Sequence[Member], token: str) -> list[str]:
    """The member's command line: a new cluster of every member of the lab."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster)
    return [
        "etcd",
        f"--name={member.name}",
        f"--data-dir={DATA_ROOT / member.name}",
        f"--listen-client-urls={member.client_url},http://127.0.0.1:{CLIENT_PORT}",
        f"--advertise-client-urls={member.client_url}",
        f"--listen-peer-urls={member.peer_url}",
        f"--initial-advertise-peer-urls={member.peer_url}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={token}",
        "--log-level=warn",
    ]
