"""The receive path's stages, each on its own: what the agent spends per 10k
learned routes from ExaBGP's JSON line to the netlink message, and what it
keeps in memory per route. In-process, on the agent's own code; no namespaces.

    python -m bench.receive                  # 100k prefixes, 3 rounds
    python -m bench.receive --quick          # 10k, 1 round

Stages, in the order a route meets them:
  parse   ExaBGP JSON lines (as ExaBGP 5 writes them, compact, for a BIRD feeder: one
          UPDATE per line, as many /32s as fit in 4096 octets) to events
  rib     those events into the RIB: import policy, storage
  best    the RIB's best paths and the changes to program
  table   the route table: changes in, plan against what it wrote, the
          batched netlink messages encoded (not sent: the kernel's part is
          bench/route_programming.py's)
then the same for withdrawing every prefix. bench/learned.py measures the
whole path against BIRD; this says where its time goes.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.runner import Figure, write_figures
from l3fabric.agent.metrics import Metrics
from l3fabric.agent.routetable import RouteTable
from l3fabric.bgp import api
from l3fabric.bgp.events import BgpEvent, PeerState, PeerStateEvent
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.bgp.rib import Rib
from l3fabric.dataplane import codec
from l3fabric.dataplane.route_batches import BatchEncoder
from l3fabric.dataplane.routes import DEFAULT_BATCH
from l3fabric.model import RTPROT_L3FABRIC, IPNetwork, Route

PEER = ipaddress.IPv4Address("198.18.0.1")
LOCAL = ipaddress.IPv4Address("198.18.0.2")
FEED_NET = ipaddress.IPv4Network("198.19.0.0/16")
POOL = ipaddress.IPv4Network("100.64.0.0/16")
PER_UPDATE = 800  # /32 NLRI are 5 octets: about this many fit in 4096
STAGES = ("parse", "rib", "best", "table")


def feed(n: int) -> list[str]:
    base = int(FEED_NET.network_address)
    out: list[str] = []
    for length in (32, 31, 30):
        step = 1 << (32 - length)
        for i in range(FEED_NET.num_addresses // step):
            if len(out) == n:
                return out
            out.append(f"{ipaddress.IPv4Address(base + i * step)}/{length}")
    raise ValueError(f"at most {len(out)} feed prefixes, asked for {n}")


def _line(counter: int, update: dict[str, Any]) -> str:
    message = {
        "exabgp": "5.0.0",
        "time": 1.0,
        "host": "b",
        "pid": 1,
        "ppid": 1,
        "counter": counter,
        "type": "update",
        "neighbor": {
            "address": {"local": str(LOCAL), "peer": str(PEER)},
            "asn": {"local": 64512, "peer": 64513},
            "direction": "receive",
            "message": {"update": update},
        },
    }
    return json.dumps(message)


def announce_lines(prefixes: Sequence[str]) -> list[str]:
    attribute = {
        "origin": "igp",
        "as-path": {"0": {"element": "as-sequence", "value": [64513]}},
        "confederation-path": [],
    }
    return [
        _line(
            i,
            {
                "attribute": attribute,
                "announce": {
                    "ipv4 unicast": {str(PEER): list(prefixes[start : start + PER_UPDATE])}
                },
            },
        )
        for i, start in enumerate(range(0, len(prefixes), PER_UPDATE))
    ]


def withdraw_lines(prefixes: Sequence[str]) -> list[str]:
    return [
        _line(i, {"withdraw": {"ipv4 unicast": list(prefixes[s : s + 900])}})
        for i, s in enumerate(range(0, len(prefixes), 900))
    ]


class EncodingWriter:
    """The route table's writer, up to the socket: encodes every batch as
    the netlink dataplane would and keeps only the byte count."""

    def __init__(self) -> None:
        self.encoded = 0
        self._encoder = BatchEncoder(codec.RouteEncoder(RTPROT_L3FABRIC))
        self._seq = 0

    def _next_seqs(self, n: int) -> int:
        first, self._seq = self._seq + 1, self._seq + n
        return first

    def program(self, replace: Sequence[Route], delete: Sequence[IPNetwork]) -> list[Any]:
        batches, failures = self._encoder.encode(
            replace, delete, {}, size=DEFAULT_BATCH, next_seqs=self._next_seqs
        )
        self.encoded += sum(len(b.payload) for b in batches)
        return failures

    def dump_routes(self, _links: object = None) -> list[Route]:
        return []


def _policy() -> ImportPolicy:
    return ImportPolicy(
        allowed_prefixes=(FEED_NET,),
        max_prefixes=1_000_000,
        pools=(POOL,),
        node_addresses=(LOCAL,),
        on_link=(ipaddress.IPv4Network("198.18.0.0/24"),),
    )


class ReceivePath:
    """One node's receive path: the RIB and the route table, as the agent
    wires them (agent/learned.py), without the work loop."""

    def __init__(self) -> None:
        self.rib = Rib(_policy())
        self.rib.set_peers([PeerInfo(PEER, "external", 64513, 64512, max_prefixes=1_000_000)])
        self.rib.apply(PeerStateEvent(PEER, PeerState.UP), 0.0)
        self.writer = EncodingWriter()
        metrics = Metrics(CollectorRegistry())
        self.table = RouteTable(self.writer, metrics=metrics, clock=time.monotonic)  # type: ignore[arg-type]

    def stages(self, lines: Iterable[str]) -> dict[str, float]:
        """Every line through every stage, one UPDATE at a time as the agent
        settles each batch; seconds per stage."""
        spent = dict.fromkeys(STAGES, 0.0)
        clock = time.perf_counter
        for line in lines:
            t0 = clock()
            events: list[BgpEvent] = api.parse_message(line)
            t1 = clock()
            for event in events:
                self.rib.apply(event, 0.0)
            t2 = clock()
            changes = self.rib.take_changes()
            t3 = clock()
            self.table.learned_changed(changes.replace, changes.delete)
            self.table.flush()
            t4 = clock()
            spent["parse"] += t1 - t0
            spent["rib"] += t2 - t1
            spent["best"] += t3 - t2
            spent["table"] += t4 - t3
        return spent


def one_round(n: int) -> dict[str, float]:
    prefixes = feed(n)
    learn, withdraw = announce_lines(prefixes), withdraw_lines(prefixes)
    path = ReceivePath()
    gc.collect()
    out = {f"learn_{k}": v for k, v in path.stages(learn).items()}
    if path.table.learned_count() != n:
        raise RuntimeError(f"{path.table.learned_count()} of {n} routes reached the table")
    out |= {f"withdraw_{k}": v for k, v in path.stages(withdraw).items()}
    if path.table.learned_count() != 0:
        raise RuntimeError(f"{path.table.learned_count()} routes left after the withdraw")
    return out


def retained_bytes(n: int) -> dict[str, float]:
    """Bytes per route the learned routes keep allocated (tracemalloc),
    with the RIB and the route table holding all n."""
    prefixes = feed(n)
    learn = announce_lines(prefixes)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        path = ReceivePath()
        path.stages(learn)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del path
    return {"bytes_per_route": held / n}


def figures(rounds: list[dict[str, float]], memory: dict[str, float], n: int) -> list[Figure]:
    """Milliseconds per 10k routes per stage and phase (median of the
    rounds), and the bytes held per route."""
    scale = 10_000 / n * 1000
    out = []
    for phase in ("learn", "withdraw"):
        for stage in (*STAGES, "total"):
            names = STAGES if stage == "total" else (stage,)
            samples = tuple(sum(r[f"{phase}_{s}"] for s in names) * scale for r in rounds)
            out.append(
                Figure(
                    f"{phase}, {stage}",
                    "ms per 10k routes",
                    statistics.median(samples),
                    samples=samples,
                    summary=f"median of {len(rounds)}",
                )
            )
    out.append(
        Figure(
            "memory held per learned route",
            "bytes",
            memory["bytes_per_route"],
            samples=(memory["bytes_per_route"],),
            summary="one measurement",
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k prefixes, 1 round (CI)")
    parser.add_argument("--size", type=int, default=None, help="prefixes (default 100000)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--json", help="write the figures and samples to this file")
    args = parser.parse_args(argv)
    n = args.size or (10_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    if n < 1 or repeats < 1:
        parser.error("--size and --repeats must be positive")
    rounds = [one_round(n) for _ in range(repeats)]
    memory = retained_bytes(n)
    found = figures(rounds, memory, n)
    print(f"receive path, {n} prefixes, median of {repeats}: ms per 10k routes")
    print("| stage | learn | withdraw |")
    print("|---|---|---|")
    by_name = {f.measure: f for f in found}
    for stage in (*STAGES, "total"):
        cells = [by_name[f"{phase}, {stage}"].value for phase in ("learn", "withdraw")]
        print(f"| {stage} | {cells[0]:.0f} | {cells[1]:.0f} |")
    print(f"memory held per learned route: {memory['bytes_per_route']:.0f} bytes")
    if args.json:
        detail = f"{n} prefixes, {repeats} rounds, in-process (no kernel writes)"
        write_figures(Path(args.json), found, {"size": n, "rounds": rounds, **memory}, detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
