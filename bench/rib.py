"""RIB throughput: 10k announcements, a second path for each (ECMP), and one
withdraw in a 10k table. Pure Python, no namespaces needed.

    python bench/rib.py
"""

from __future__ import annotations

import ipaddress
import statistics
import time

from l3fabric.bgp.events import PathAttributes, PeerState, PeerStateEvent, UpdateEvent
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib import Rib

B, C = ipaddress.ip_address("198.18.0.2"), ipaddress.ip_address("198.18.0.3")
POOL = ipaddress.ip_network("100.64.0.0/16")


def run_once(n: int) -> tuple[float, float, float]:
    rib = Rib(ImportPolicy(pools=(POOL,)))
    rib.set_peers([PeerInfo(p, "mesh", 64512, 64512) for p in (B, C)])
    for peer in (B, C):
        rib.apply(PeerStateEvent(peer, PeerState.UP), 0.0)
    prefixes = [ipaddress.IPv4Network((int(POOL.network_address) + i, 32)) for i in range(n)]
    started = time.perf_counter()
    for prefix in prefixes:
        rib.apply(UpdateEvent(B, ((prefix, PathAttributes(next_hop=B)),)), 0.0)
    rib.take_changes()
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    rib.apply(UpdateEvent(C, tuple((p, PathAttributes(next_hop=C)) for p in prefixes)), 0.0)
    rib.take_changes()
    ecmp = time.perf_counter() - started
    started = time.perf_counter()
    rib.apply(UpdateEvent(B, withdrawn=(prefixes[0],)), 0.0)
    rib.take_changes()
    return one_by_one, ecmp, time.perf_counter() - started


def main() -> None:
    runs = [run_once(10_000) for _ in range(5)]
    names = ("10k announcements, one per update", "10k second paths in one update", "1 withdraw")
    for i, name in enumerate(names):
        values = [r[i] for r in runs]
        print(f"{name:40s} median {statistics.median(values) * 1000:9.2f} ms")


if __name__ == "__main__":
    main()
