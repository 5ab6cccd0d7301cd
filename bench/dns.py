#!/usr/bin/env python3
"""Service-discovery DNS: `l3fabric dns` against dnsmasq serving the same names.

Run as root (see bench/README.md). One namespace, `l3fdns<pid>`, holds:

- `l3fabric dns` on 127.0.0.1:5300, reading a file datastore that holds
  --workloads registered workloads (each an A and a PTR record, exactly what
  an agent writes for an IPv4 workload, written with the same functions);
- dnsmasq on 127.0.0.1:5301 serving the same names and addresses from a
  hosts file (`--addn-hosts`, nothing else: no upstream, no /etc/hosts);
- for the add-to-name time, an l3fabric agent (BGP off) on the same
  datastore and workload namespaces to add.

Both servers get the same queries: random names among the registered ones,
sent by one client over UDP with --window queries in flight (closed loop:
a new query goes out when an answer comes back). Reported per server:
queries/s, and p50/p99 of the time from send to answer; the same again with
one query in flight (latency without queueing). The client is one Python
process: a server faster than it (dnsmasq) is measured at the client's
limit, so its queries/s is a lower bound. Then, --adds times, a workload
is added through the agent's control socket and the name is asked every
millisecond until it answers with the workload's address: the time from the
add's return (and from the add's start) to that answer.

Everything made is removed at the end, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.message
import dns.rcode
import yaml

from bench.fabric import L3FABRIC, Lab, wait_until
from l3fabric import control
from l3fabric.datastore.file import FileDatastore
from l3fabric.datastore.skydns import ptr_records, workload_records

T = TypeVar("T")
ZONE = "l3fabric.internal"
L3F_PORT, DNSMASQ_PORT = 5300, 5301
_CLONE_NEWNET = 0x40000000
BASE = int(ipaddress.IPv4Address("100.64.0.0"))
AGENT_POOL = "100.127.0.0/24"  # the agent's workloads: outside the registered ones


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """make() on a thread inside the namespace: its sockets stay there."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            result.append(make())
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def name_of(index: int) -> str:
    return f"w{index}"


def address_of(index: int) -> str:
    return str(ipaddress.IPv4Address(BASE + 1 + index))


def register(store: FileDatastore, count: int) -> float:
    """Write `count` workloads' records as an agent does; seconds taken."""
    started = time.monotonic()
    for i in range(count):
        pairs = workload_records(name_of(i), "default", [address_of(i)])
        pairs += ptr_records(name_of(i), "default", [address_of(i)])
        for key, value in pairs:
            store.put(key, value)
    return time.monotonic() - started


def write_hosts(path: Path, count: int) -> None:
    lines = (f"{address_of(i)} {name_of(i)}.default.{ZONE}\n" for i in range(count))
    path.write_text("".join(lines))
    path.chmod(0o644)


@dataclass
class LoadResult:
    server: str
    queries: int
    seconds: float
    qps: float
    p50_ms: float
    p99_ms: float
    errors: int


def load(
    sock: socket.socket, port: int, server: str, count: int, names: int, window: int
) -> LoadResult:
    """`count` A queries for random registered names, `window` in flight."""
    rng = random.Random(7)
    wires = []
    for _ in range(min(count, 4096)):
        query = dns.message.make_query(f"{name_of(rng.randrange(names))}.default.{ZONE}", "A")
        wires.append(query.to_wire()[2:])  # the id goes in front at send time
    sock.settimeout(2.0)
    target = ("127.0.0.1", port)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors = 0
    next_id = 0
    started = time.perf_counter()

    def send() -> None:
        nonlocal next_id
        qid = next_id % 65536
        next_id += 1
        sent_at[qid] = time.perf_counter()
        sock.sendto(qid.to_bytes(2, "big") + wires[next_id % len(wires)], target)

    for _ in range(min(window, count)):
        send()
    while len(latencies) + errors < count:
        try:
            reply, _ = sock.recvfrom(4096)
        except TimeoutError:
            errors += len(sent_at)  # lost: count them, refill the window
            sent_at.clear()
            for _ in range(min(window, count - len(latencies) - errors)):
                send()
            continue
        qid = int.from_bytes(reply[:2], "big")
        sent = sent_at.pop(qid, None)
        if sent is None:
            continue  # an answer to a query counted as lost
        latencies.append(time.perf_counter() - sent)
        if reply[3] & 0x0F != dns.rcode.NOERROR:
            errors += 1
        if next_id < count:
            send()
    seconds = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        server,
        len(latencies),
        round(seconds, 3),
        round(len(latencies) / seconds),
        round(latencies[len(latencies) // 2] * 1000, 3),
        round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
        errors,
    )


def _answers(sock: socket.socket, port: int, name: str, want: list[str]) -> bool:
    return ask(sock, port, name) == want


def ask(sock: socket.socket, port: int, name: str) -> list[str]:
    query = dns.message.make_query(name, "A")
    sock.sendto(query.to_wire(), ("127.0.0.1", port))
    sock.settimeout(0.5)
    while True:
        reply = dns.message.from_wire(sock.recvfrom(4096)[0])
        if reply.id == query.id:
            return [rd.to_text() for rrset in reply.answer for rd in rrset]


@dataclass
class AddResult:
    adds: int
    after_return_p50_ms: float
    after_return_max_ms: float
    after_start_p50_ms: float
    add_call_p50_ms: float


def add_to_name(lab: Lab, ns: str, workdir: Path, store_path: Path, adds: int) -> AddResult:
    config = {
        "node": {"name": "bench1", "asn": 64512, "addresses": {"ipv4": "198.18.0.1"}},
        "pools": [{"cidr": AGENT_POOL, "block_size": 26}],
        "state_dir": str(workdir / "agent"),
        "datastore": {"type": "file", "path": str(store_path)},
        "metrics": {"enabled": False},
        "bgp": {"enabled": False},
        "log": {"level": "warning", "format": "json"},
    }
    path = workdir / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    socket_path = workdir / "agent" / "agent.sock"
    lab.start([*L3FABRIC, "agent", "--config", str(path)], ns, workdir / "agent.log")
    wait_until(lambda: control.call("status", socket_path=socket_path), 60, "the agent")
    workloads = [f"a{i}" for i in range(adds)]
    lab.netns_many(workloads)
    sock = in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    after_return, after_start, calls = [], [], []
    with sock:
        for name in workloads:
            fqdn = f"{name}.default.{ZONE}"
            start = time.perf_counter()
            result = control.call(
                "workload.add",
                {"name": name, "netns": f"/run/netns/{lab.tag}{name}"},
                socket_path=socket_path,
                timeout=60,
            )
            returned = time.perf_counter()
            want = [str(a) for a in result["addresses"]]
            deadline = returned + 10
            while True:
                try:
                    if ask(sock, L3F_PORT, fqdn) == want:
                        break
                except (TimeoutError, dns.exception.DNSException):
                    pass
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{fqdn} did not resolve within 10 s of its add")
                time.sleep(0.001)
            answered = time.perf_counter()
            after_return.append(answered - returned)
            after_start.append(answered - start)
            calls.append(returned - start)
    return AddResult(
        adds,
        round(statistics.median(after_return) * 1000, 1),
        round(max(after_return) * 1000, 1),
        round(statistics.median(after_start) * 1000, 1),
        round(statistics.median(calls) * 1000, 1),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=50000)
    parser.add_argument("--window", type=int, default=32, help="queries in flight")
    parser.add_argument("--adds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1000 workloads, 5000 queries, 5 adds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.workloads, args.queries, args.adds = 1000, 5000, 5
    if os.geteuid() != 0 or shutil.which("dnsmasq") is None:
        print("bench/dns.py: needs root and dnsmasq (scripts/install)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="l3fdns-"))
    workdir.chmod(0o755)  # dnsmasq drops to nobody and reads the hosts file
    lab = Lab(f"l3fdns{os.getpid()}", workdir)
    try:
        ns = lab.netns("")
        store_path = workdir / "store"
        store = FileDatastore(store_path)
        print(f"registering {args.workloads} workloads ...", file=sys.stderr)
        seconds = register(store, args.workloads)
        store.close()
        hosts = workdir / "hosts"
        write_hosts(hosts, args.workloads)
        lab.start(
            [
                *L3FABRIC,
                "dns",
                "--listen",
                f"127.0.0.1:{L3F_PORT}",
                "--datastore-path",
                str(store_path),
                "--log-level",
                "warning",
            ],
            ns,
            workdir / "dns.log",
        )
        lab.start(
            [
                "dnsmasq",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={hosts}",
                f"--port={DNSMASQ_PORT}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--local-ttl=5",
            ],
            ns,
            workdir / "dnsmasq.log",
        )
        sock = in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        probe = f"{name_of(args.workloads - 1)}.default.{ZONE}"
        want = [address_of(args.workloads - 1)]
        for port in (L3F_PORT, DNSMASQ_PORT):
            wait_until(partial(_answers, sock, port, probe, want), 60, f"the server on {port}")
        results = []
        with sock:
            for server, port in (("l3fabric dns", L3F_PORT), ("dnsmasq", DNSMASQ_PORT)):
                load(sock, port, server, min(2000, args.queries), args.workloads, args.window)
                results.append(load(sock, port, server, args.queries, args.workloads, args.window))
                one = load(
                    sock, port, server + " (1 in flight)", args.queries // 10, args.workloads, 1
                )
                results.append(one)
        adds = add_to_name(lab, ns, workdir, store_path, args.adds)
    finally:
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "workloads": args.workloads,
        "register_seconds": round(seconds, 1),
        "window": args.window,
        "load": [asdict(r) for r in results],
        "add_to_name": asdict(adds),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.workloads} workloads registered in {seconds:.1f} s (A + PTR each)")
    print(f"{'server':28} {'queries':>8} {'q/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in results:
        print(f"{r.server:28} {r.queries:>8} {r.qps:>8} {r.p50_ms:>8} {r.p99_ms:>8} {r.errors:>6}")
    print(
        f"add to resolvable name ({adds.adds} adds): p50 {adds.after_return_p50_ms} ms after the "
        f"add returned (max {adds.after_return_max_ms} ms), p50 {adds.after_start_p50_ms} ms "
        f"after it was sent; the add itself p50 {adds.add_call_p50_ms} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
