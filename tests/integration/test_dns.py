"""`l3fabric dns` in a network namespace, asked with dig and with dnspython.

Two servers run in one namespace on loopback: the fabric's (zone
l3fabric.internal, forwarding to the other) and an "upstream" one (zone
upstream.test, no upstream of its own, so it refuses anything else). Both
read one file datastore that the test fills through datastore/skydns.py.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from l3fabric.datastore import skydns as R
from l3fabric.datastore.file import FileDatastore
from tests.nettools import Namespaces, Processes, ns_run, wait_for

pytestmark = pytest.mark.integration

L3FABRIC = [sys.executable, "-m", "l3fabric.cli"]
FABRIC_PORT, UPSTREAM_PORT, METRICS_PORT = 5300, 5301, 9653
ZONE = "l3fabric.internal"
T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """Run make() in a thread that has joined the namespace: sockets it
    creates stay in that namespace whichever thread uses them later."""
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


@dataclass
class Lab:
    ns: str
    store: FileDatastore
    store_path: Path

    def put(self, pairs: list[tuple[str, bytes]]) -> None:
        for key, value in pairs:
            self.store.put(key, value)

    def dig(self, *args: str, port: int = FABRIC_PORT) -> str:
        cmd = ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args]
        return ns_run(self.ns, cmd, check=False)

    def short(
        self, name: str, rdtype: str = "A", *extra: str, port: int = FABRIC_PORT
    ) -> list[str]:
        return sorted(self.dig("+short", *extra, name, rdtype, port=port).split())

    def udp(self, query: dns.message.Message, port: int = FABRIC_PORT) -> dns.message.Message:
        sock = in_netns(self.ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with sock:
            return dns.query.udp(query, "127.0.0.1", port=port, timeout=3, sock=sock)

    def tcp(self, query: dns.message.Message, port: int = FABRIC_PORT) -> dns.message.Message:
        def connect() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), timeout=3)
            return sock

        sock = in_netns(self.ns, connect)
        with sock:
            return dns.query.tcp(query, "127.0.0.1", port=port, timeout=3, sock=sock)

    def send_raw(self, packets: list[bytes], port: int = FABRIC_PORT) -> None:
        """Send packets in small batches, each followed by a real query: the
        server reads its socket in order, so its answer means it has read
        the batch (a burst of 1000 would overflow the socket buffer)."""
        sock = in_netns(self.ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        probe = dns.message.make_query("w0.default.l3fabric.internal", "A")
        with sock:
            for start in range(0, len(packets), 20):
                for packet in packets[start : start + 20]:
                    sock.sendto(packet, ("127.0.0.1", port))
                reply = self.udp(probe, port)
                assert [rd.to_text() for rd in reply.answer[0]] == ["10.0.0.5"]

    def metrics(self) -> str:
        code = (
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
        )
        url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
        return ns_run(self.ns, [sys.executable, "-c", code, url])


def _fabric_records() -> list[tuple[str, bytes]]:
    pairs = R.workload_records("w0", "default", ["10.0.0.5", "fd00::5"])
    pairs += R.workload_records("w1", "team-a", ["10.0.1.7"])
    pairs += R.ptr_records("w0", "default", ["10.0.0.5", "fd00::5"])
    endpoints = [
        R.Endpoint("w0", (ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5"))),
        R.Endpoint("w2", (ipaddress.ip_address("10.0.2.9"),)),
    ]
    pairs += R.workload_records("w2", "default", ["10.0.2.9"])
    pairs += R.service_records("web", "default", endpoints, [R.ServicePort.parse("http:80/tcp")])
    many = [R.Endpoint(f"m{i}", (ipaddress.ip_address(f"10.1.{i}.1"),)) for i in range(60)]
    pairs += R.service_records("big", "default", many)
    # The upstream's own zone, in the same store.
    pairs.append(
        ("/skydns/test/upstream/www/x1", R.Record("", "", host="192.0.2.10", ttl=60).value())
    )
    return pairs


@pytest.fixture
def lab(netns: Namespaces, procs: Processes, tmp_path: Path) -> Iterator[Lab]:
    ns = netns.add("dns")
    store_path = tmp_path / "datastore"
    store = FileDatastore(store_path)
    lab = Lab(ns, store, store_path)
    lab.put(_fabric_records())
    common = ["--datastore-type", "file", "--datastore-path", str(store_path)]
    procs.start(
        [
            *L3FABRIC,
            "dns",
            "--listen",
            f"127.0.0.1:{UPSTREAM_PORT}",
            "--zone",
            "upstream.test",
            *common,
        ],
        netns=ns,
        log_path=str(tmp_path / "upstream.log"),
    )
    procs.start(
        [
            *L3FABRIC,
            "dns",
            "--listen",
            f"127.0.0.1:{FABRIC_PORT}",
            "--upstream",
            f"127.0.0.1:{UPSTREAM_PORT}",
            "--metrics-listen",
            f"127.0.0.1:{METRICS_PORT}",
            *common,
        ],
        netns=ns,
        log_path=str(tmp_path / "fabric.log"),
    )
    wait_for(
        lambda: lab.short("w0.default.l3fabric.internal") == ["10.0.0.5"],
        timeout=30,
        what="fabric DNS up",
    )
    wait_for(
        lambda: lab.short("www.upstream.test", port=UPSTREAM_PORT) == ["192.0.2.10"],
        timeout=30,
        what="upstream DNS up",
    )
    try:
        yield lab
    finally:
        store.close()


def test_records_answer_with_dig(lab: Lab) -> None:
    assert lab.short("w0.default.l3fabric.internal", "A") == ["10.0.0.5"]
    assert lab.short("w0.default.l3fabric.internal", "AAAA") == ["fd00::5"]
    assert lab.short("w1.team-a.l3fabric.internal", "A") == ["10.0.1.7"]
    assert lab.short("web.default.svc.l3fabric.internal", "A") == ["10.0.0.5", "10.0.2.9"]
    assert lab.short("_http._tcp.web.default.svc.l3fabric.internal", "SRV") == sorted(
        [
            "10",
            "50",
            "80",
            "w0.default.l3fabric.internal.",
            "10",
            "50",
            "80",
            "w2.default.l3fabric.internal.",
        ]
    )
    assert lab.short("-x", "10.0.0.5") == ["w0.default.l3fabric.internal."]
    assert lab.short("-x", "fd00::5") == ["w0.default.l3fabric.internal."]
    out = lab.dig("w0.default.l3fabric.internal", "A", "+noall", "+answer")
    assert "\t5\tIN\tA\t10.0.0.5" in out.replace(" ", "\t")  # the record's ttl


def test_nxdomain_and_nodata(lab: Lab) -> None:
    out = lab.dig("nope.default.l3fabric.internal", "A")
    assert "status: NXDOMAIN" in out and "SOA" in out
    out = lab.dig("w1.team-a.l3fabric.internal", "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out and "SOA" in out


def test_tcp_and_truncation(lab: Lab) -> None:
    assert lab.short("w0.default.l3fabric.internal", "A", "+tcp") == ["10.0.0.5"]
    # 60 A records do not fit in 512 bytes: TC over UDP, all of them over TCP.
    out = lab.dig("big.default.svc.l3fabric.internal", "A", "+noedns", "+ignore")
    assert " tc" in out.split("flags:")[1].split(";")[0]
    assert len(lab.short("big.default.svc.l3fabric.internal", "A", "+tcp")) == 60
    # dig retries over TCP by itself when it sees TC.
    assert len(lab.short("big.default.svc.l3fabric.internal", "A", "+noedns")) == 60
    query = dns.message.make_query("big.default.svc.l3fabric.internal", "A")
    reply = lab.udp(query)
    assert reply.flags & dns.flags.TC and not reply.answer
    reply = lab.tcp(query)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 60


def test_edns0_is_echoed_with_our_size(lab: Lab) -> None:
    out = lab.dig("w0.default.l3fabric.internal", "A", "+edns=0", "+bufsize=4096")
    assert "EDNS: version: 0" in out and "udp: 1232" in out
    query = dns.message.make_query(
        "big.default.svc.l3fabric.internal", "A", use_edns=0, payload=4096
    )
    reply = lab.udp(query)  # ~1000 bytes: fits in 1232
    assert reply.edns == 0 and reply.payload == 1232 and not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 60


def test_forward_to_upstream_and_refused_without_one(lab: Lab) -> None:
    assert lab.short("www.upstream.test", "A") == ["192.0.2.10"]
    out = lab.dig("www.upstream.test", "A")
    assert "status: NOERROR" in out and " ra" in out.split("flags:")[1].split(";")[0]
    assert "status: NXDOMAIN" in lab.dig("nope.upstream.test", "A")
    # The upstream has no upstream: it refuses names outside its zone.
    assert "status: REFUSED" in lab.dig("example.com", "A", port=UPSTREAM_PORT)
    assert "status: REFUSED" in lab.dig("w0.default.l3fabric.internal", port=UPSTREAM_PORT)
    reply = lab.udp(dns.message.make_query("www.upstream.test", "A", use_edns=0))
    assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.10"] and reply.payload == 1232


def test_malformed_packets_are_dropped_and_counted(lab: Lab) -> None:
    rng = random.Random(20240611)
    valid = dns.message.make_query("w0.default.l3fabric.internal", "A").to_wire()
    packets = []
    for i in range(1000):
        if i % 2:
            packets.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120))))
        else:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            packets.append(bytes(data))
    lab.send_raw(packets)
    # Garbage over TCP too: a frame of junk, and a connection closed mid-frame.
    for junk in (b"\x00\x05hello", b"\x01\x00abc"):
        sock = in_netns(lab.ns, lambda: socket.create_connection(("127.0.0.1", FABRIC_PORT), 3))
        with sock:
            sock.sendall(junk)
    assert lab.short("w0.default.l3fabric.internal") == ["10.0.0.5"]

    def dropped() -> float:
        for line in lab.metrics().splitlines():
            if line.startswith("l3fabric_dns_malformed_packets_total "):
                return float(line.split()[1])
        return 0.0

    # + the junk TCP frame; the cut-off one is not a packet at all.
    expected = sum(not _parses_as_query(packet) for packet in packets) + 1
    assert expected > 400
    wait_for(lambda: dropped() == expected, timeout=10, what=f"{expected} packets dropped")
    text = lab.metrics()
    assert 'l3fabric_dns_queries_total{qtype="A",rcode="NOERROR"}' in text
    assert "l3fabric_dns_query_duration_seconds_bucket" in text
    assert "l3fabric_dns_records " in text


def test_added_record_resolves_and_deleted_one_is_nxdomain(lab: Lab) -> None:
    name = "late.default.l3fabric.internal"
    assert "status: NXDOMAIN" in lab.dig(name)
    pairs = R.workload_records("late", "default", ["10.0.9.9"])
    lab.put(pairs)
    wait_for(lambda: lab.short(name) == ["10.0.9.9"], timeout=10, what="new record served")
    # A new address replaces the old one.
    new = R.workload_records("late", "default", ["10.0.9.10"])
    puts, deletes = R.plan_update(lab.store.list(R.workload_prefix("late", "default")), new)
    lab.put(puts)
    for key in deletes:
        lab.store.delete(key)
    wait_for(lambda: lab.short(name) == ["10.0.9.10"], timeout=10, what="new address served")
    for kv in lab.store.list(R.workload_prefix("late", "default")):
        lab.store.delete(kv.key)
    wait_for(lambda: "status: NXDOMAIN" in lab.dig(name), timeout=10, what="deleted")


def _parses_as_query(packet: bytes) -> bool:
    try:
        return not dns.message.from_wire(packet).flags & dns.flags.QR
    except Exception:
        return False


def _resolve(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*L3FABRIC, "resolve", "--datastore-path", str(lab.store_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_resolve_command(lab: Lab) -> None:
    out = _resolve(lab, "w0")
    assert out.returncode == 0 and out.stdout.split() == ["10.0.0.5", "fd00::5"]
    assert _resolve(lab, "w1.team-a").stdout.split() == ["10.0.1.7"]
    assert _resolve(lab, "w1.team-a.l3fabric.internal.").stdout.split() == ["10.0.1.7"]
    assert _resolve(lab, "web.default.svc").stdout.split() == ["10.0.0.5", "10.0.2.9", "fd00::5"]
    out = _resolve(lab, "nope")
    assert out.returncode == 1 and "no such name" in out.stderr
    out = _resolve(lab, "bad_name!")
    assert out.returncode == 2 and "not a DNS label" in out.stderr
    out = _resolve(lab, "-o", "json", "w0")
    assert out.returncode == 0 and '"addresses": ["10.0.0.5", "fd00::5"]' in out.stdout


def test_resolve_reads_the_datastore_named_by_the_node_config(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "node: {name: node1, asn: 64512, addresses: {ipv4: 198.18.0.1}}\n"
        "pools: [{cidr: 100.64.0.0/16}]\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"datastore: {{type: file, path: {lab.store_path}}}\n"
    )
    cmd = [*L3FABRIC, "resolve", "--config", str(config), "w1.team-a"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.split() == ["10.0.1.7"], out.stderr


def test_dns_command_rejects_bad_flags(tmp_path: Path) -> None:
    base = [*L3FABRIC, "dns", "--datastore-path", str(tmp_path / "ds")]
    for extra in (
        ["--listen", "127.0.0.1"],
        ["--listen", "x:53"],
        ["--listen", "127.0.0.1:53", "--upstream", "nope"],
    ):
        out = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, out.stderr
    out = subprocess.run(
        [*L3FABRIC, "dns", "--listen", "127.0.0.1:53"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2 and "--config" in out.stderr
