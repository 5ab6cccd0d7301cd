"""What this node announces over BGP, and the lines that tell ExaBGP so.

Owns the advertised set (prefix -> next hop), sends only differences, and
replays the whole set to a peer that ExaBGP does not hold it for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from l3fabric.bgp import api
from l3fabric.config import Config
from l3fabric.model import IPAddress, IPNetwork, Workload, host_prefix


class Advertisements:
    def __init__(
        self,
        config: Config,
        *,
        send: Callable[[list[str]], None],
        peers_of: Callable[[int], list[IPAddress]],
    ) -> None:
        self._config = config
        self._send = send
        self._peers_of = peers_of
        self._advertised: dict[IPNetwork, IPAddress] = {}
        self._count = {4: 0, 6: 0}

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def count(self, version: int) -> int:
        return self._count[version]

    def listing(self) -> list[dict[str, str]]:
        ordered = sorted(
            self._advertised.items(), key=lambda i: (i[0].version, int(i[0].network_address))
        )
        return [{"prefix": str(p), "next_hop": str(nh)} for p, nh in ordered]

    def set_all(self, workloads: Sequence[Workload], blocks: Sequence[IPNetwork]) -> None:
        """The full set: announce what is new or changed, withdraw what is gone."""
        wanted = self.wanted(workloads, blocks)
        removed = [p for p in self._advertised if p not in wanted]
        changed = {p: nh for p, nh in wanted.items() if self._advertised.get(p) != nh}
        self._apply(removed, changed)

    def workload_changed(self, added: Workload | None, removed: Workload | None) -> None:
        """Per-workload mode: only this workload's prefixes change, so this is
        O(1) in the number of workloads."""
        changed = self.wanted([added], ()) if added else {}
        gone = removed.addresses if removed else ()
        self._apply([host_prefix(a) for a in gone if host_prefix(a) not in changed], changed)

    def wanted(
        self, workloads: Sequence[Workload], blocks: Sequence[IPNetwork]
    ) -> dict[IPNetwork, IPAddress]:
        node = self._config.node
        next_hops: dict[int, IPAddress | None] = {4: node.ipv4, 6: node.ipv6}
        blocks_mode = self._config.bgp.advertise == "blocks"
        wanted: dict[IPNetwork, IPAddress] = {}
        if blocks_mode:
            for block in blocks:
                nh = next_hops[block.version]
                if nh is not None:
                    wanted[block] = nh
        for workload in workloads:
            for address in workload.addresses:
                nh = next_hops[address.version]
                if nh is None:
                    continue
                if blocks_mode and any(address in b for b in blocks):
                    continue  # covered by our own block announcement
                wanted[host_prefix(address)] = nh
        return wanted

    def replay(self, peers: Sequence[IPAddress]) -> None:
        """Everything we advertise, to these peers, then End-of-RIB."""
        lines: list[str] = []
        for version in (4, 6):
            targets = [p for p in peers if p.version == version]
            if not targets:
                continue
            routes = {p: nh for p, nh in self._advertised.items() if p.version == version}
            lines += _announce_lines(targets, routes)
            lines.append(api.eor(targets, version))
        if lines:
            self._send(lines)

    def _apply(self, removed: Sequence[IPNetwork], changed: dict[IPNetwork, IPAddress]) -> None:
        """Send only the difference; keep the set and its counts."""
        for prefix in removed:
            if self._advertised.pop(prefix, None) is not None:
                self._count[prefix.version] -= 1
        for prefix, nh in changed.items():
            if prefix not in self._advertised:
                self._count[prefix.version] += 1
            self._advertised[prefix] = nh
        lines: list[str] = []
        for version in (4, 6):
            peers = self._peers_of(version)
            if not peers:
                continue
            gone = [p for p in removed if p.version == version]
            if gone:
                lines += api.withdraw(peers, gone)
            lines += _announce_lines(
                peers, {p: nh for p, nh in changed.items() if p.version == version}
            )
        if lines:
            self._send(lines)


def _announce_lines(peers: Sequence[IPAddress], routes: dict[IPNetwork, IPAddress]) -> list[str]:
    by_next_hop: dict[IPAddress, list[IPNetwork]] = {}
    for prefix, nh in routes.items():
        by_next_hop.setdefault(nh, []).append(prefix)
    lines: list[str] = []
    for nh, prefixes in by_next_hop.items():
        lines += api.announce(peers, nh, prefixes)
    return lines
