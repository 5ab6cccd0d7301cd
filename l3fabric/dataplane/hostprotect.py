"""Workload-to-host protection: an nftables table of our own in the node.

Calico's default endpoint-to-host action drops what a workload sends to its
own host. l3fabric keeps it narrower: a workload may still ping its node and
ask DNS there, and anything it started is answered, but the node's own
services that are not meant for workloads (the agent's metrics and health
listener, BGP) are refused on every workload interface (`l3f…`).

The table is `inet l3fabric`, ours alone: it is replaced in one `nft -f`
transaction, so applying it is idempotent and never touches anyone else's
rules. It filters only, never translates: no NAT anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from l3fabric.dataplane.base import DataplaneError
from l3fabric.model import HOST_IFACE_PREFIX, IPNetwork

TABLE = "l3fabric"


@dataclass(frozen=True)
class HostProtection:
    """The node's TCP ports no workload may reach: neither from this node's
    workload interfaces nor, routed, from any workload address (a workload
    on another node reaches this one through the underlay)."""

    refused_tcp_ports: tuple[int, ...]
    workload_sources: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, ports: Iterable[int], sources: Iterable[IPNetwork] = ()) -> HostProtection:
        return cls(tuple(sorted(set(ports))), tuple(sorted(set(sources), key=str)))


def ruleset(protection: HostProtection) -> str:
    """The nft script that makes our table exactly this (pure)."""
    workloads = f'iifname "{HOST_IFACE_PREFIX}*"'
    lines = [
        # Create-then-delete makes the delete succeed on a first run; the
        # whole script is one transaction.
        f"add table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "  chain workload-to-host {",
        "    type filter hook input priority filter; policy accept;",
        f"    {workloads} ct state established,related accept",
        f"    {workloads} meta l4proto {{ icmp, ipv6-icmp }} accept",
        f"    {workloads} meta l4proto {{ tcp, udp }} th dport 53 accept",
    ]
    if protection.refused_tcp_ports:
        ports = ", ".join(str(p) for p in protection.refused_tcp_ports)
        lines.append(f"    {workloads} tcp dport {{ {ports} }} counter reject with tcp reset")
        for family, version in (("ip", 4), ("ip6", 6)):
            nets = [str(n) for n in protection.workload_sources if n.version == version]
            if nets:
                lines.append(
                    f"    {family} saddr {{ {', '.join(nets)} }} tcp dport {{ {ports} }} "
                    "counter reject with tcp reset"
                )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def apply(protection: HostProtection, nft: str | None = None) -> None:
    """Install the table in the current network namespace."""
    binary = nft or shutil.which("nft")
    if binary is None:
        raise DataplaneError("nft is not installed: workload-to-host protection needs nftables")
    done = subprocess.run(
        [binary, "-f", "-"], input=ruleset(protection), capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise DataplaneError(f"nft refused the l3fabric table: {done.stderr.strip()}")


def remove(nft: str | None = None) -> None:
    """Remove our table (and nothing else); no error if it is not there."""
    binary = nft or shutil.which("nft")
    if binary is None:
        return
    subprocess.run(
        [binary, "-f", "-"],
        input=f"add table inet {TABLE}\ndelete table inet {TABLE}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
