"""Kernel TCP counters of the current network namespace.

ExaBGP says nothing when a TCP-MD5 signature does not match: the kernel drops
the segments before any process sees them and only counts them. These
counters are how the agent can tell an operator why a session stays down.
"""

from __future__ import annotations

from pathlib import Path

NETSTAT = Path("/proc/net/netstat")
MD5_COUNTERS = ("TCPMD5NotFound", "TCPMD5Unexpected", "TCPMD5Failure")


def tcp_ext_counters(path: Path = NETSTAT) -> dict[str, int]:
    """The TcpExt counters (name -> value); empty when unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = header.split(), values.split()
        if names and names[0] == "TcpExt:" and numbers and numbers[0] == "TcpExt:":
            return {n: int(v) for n, v in zip(names[1:], numbers[1:], strict=False) if v.isdigit()}
    return {}


def md5_counters(path: Path = NETSTAT) -> dict[str, int]:
    counters = tcp_ext_counters(path)
    return {name: counters.get(name, 0) for name in MD5_COUNTERS}
