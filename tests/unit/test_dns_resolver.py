"""The view, the resolver and the server's query path, without sockets."""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import random
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from l3fabric.datastore import skydns as R
from l3fabric.datastore.base import KeyValue, WatchCompacted, WatchEvent
from l3fabric.dns.metrics import DnsMetrics
from l3fabric.dns.resolver import Resolver, group
from l3fabric.dns.server import DnsServer, ServerConfig, parse_endpoint
from l3fabric.dns.view import RecordView, ViewFeeder

ZONE = "l3fabric.internal"


def _view(pairs: Iterable[tuple[str, bytes]], prefix: str = R.DEFAULT_PREFIX) -> RecordView:
    view = RecordView(prefix)
    view.replace([KeyValue(k, v, i + 1) for i, (k, v) in enumerate(pairs)], 100)
    return view


def _fabric() -> RecordView:
    pairs = R.workload_records("w0", "default", ["10.0.0.5", "fd00::5"])
    pairs += R.workload_records("w1", "default", ["10.0.1.7"], ttl=30)
    pairs += R.ptr_records("w0", "default", ["10.0.0.5", "fd00::5"])
    eps = [
        R.Endpoint("w0", (ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5"))),
        R.Endpoint("w1", (ipaddress.ip_address("10.0.1.7"),)),
    ]
    pairs += R.service_records(
        "web", "default", eps, [R.ServicePort.parse("http:80/tcp"), R.ServicePort("dns", 53, "udp")]
    )
    return _view(pairs)


def _ask(
    resolver: Resolver, name: str, rdtype: str = "A", **kw: object
) -> dns.message.Message | None:
    return resolver.answer(dns.message.make_query(name, rdtype, **kw))  # type: ignore[arg-type]


def _rdatas(msg: dns.message.Message, rdtype: str, section: str = "answer") -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rr in getattr(msg, section) if rr.rdtype == t for rd in rr)


def test_workload_a_and_aaaa_with_the_record_ttl() -> None:
    resolver = Resolver(_fabric(), ZONE)
    msg = _ask(resolver, "w0.default.l3fabric.internal", "A")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert _rdatas(msg, "A") == ["10.0.0.5"]
    assert msg.answer[0].ttl == 5
    msg = _ask(resolver, "W0.Default.L3fabric.Internal.", "AAAA")  # case-insensitive
    assert msg is not None and _rdatas(msg, "AAAA") == ["fd00::5"]
    assert msg.answer[0].name.to_text() == "W0.Default.L3fabric.Internal."
    msg = _ask(resolver, "w1.default.l3fabric.internal", "A")
    assert msg is not None and msg.answer[0].ttl == 30


def test_nxdomain_and_nodata_carry_the_soa() -> None:
    resolver = Resolver(_fabric(), ZONE, negative_ttl=3)
    msg = _ask(resolver, "nope.default.l3fabric.internal")
    assert msg is not None and msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA and msg.authority[0].ttl == 3
    assert msg.authority[0].name.to_text() == "l3fabric.internal."
    msg = _ask(resolver, "w1.default.l3fabric.internal", "AAAA")  # exists, v4 only
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA
    msg = _ask(resolver, "w0.default.l3fabric.internal", "MX")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer


def test_apex_soa_and_apex_is_never_nxdomain() -> None:
    resolver = Resolver(_view([]), ZONE)
    msg = _ask(resolver, "l3fabric.internal", "SOA")
    assert msg is not None and _rdatas(msg, "SOA")[0].startswith("ns.dns.l3fabric.internal.")
    msg = _ask(resolver, "l3fabric.internal", "A")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer


def test_service_a_has_every_endpoint_and_no_srv_targets() -> None:
    resolver = Resolver(_fabric(), ZONE)
    msg = _ask(resolver, "web.default.svc.l3fabric.internal", "A")
    assert msg is not None
    assert _rdatas(msg, "A") == ["10.0.0.5", "10.0.1.7"]
    assert not _rdatas(msg, "CNAME")  # the SRV entries are another group
    msg = _ask(resolver, "web.default.svc.l3fabric.internal", "AAAA")
    assert msg is not None and _rdatas(msg, "AAAA") == ["fd00::5"]


def test_srv_targets_are_workload_names_with_their_addresses_additional() -> None:
    resolver = Resolver(_fabric(), ZONE)
    msg = _ask(resolver, "_http._tcp.web.default.svc.l3fabric.internal", "SRV")
    assert msg is not None
    assert _rdatas(msg, "SRV") == [
        "10 50 80 w0.default.l3fabric.internal.",
        "10 50 80 w1.default.l3fabric.internal.",
    ]
    assert _rdatas(msg, "A", "additional") == ["10.0.0.5", "10.0.1.7"]
    assert _rdatas(msg, "AAAA", "additional") == ["fd00::5"]
    msg = _ask(resolver, "_dns._udp.web.default.svc.l3fabric.internal", "SRV")
    assert msg is not None and len(_rdatas(msg, "SRV")) == 2
    msg = _ask(resolver, "_http._udp.web.default.svc.l3fabric.internal", "SRV")
    assert msg is not None and msg.rcode() == dns.rcode.NXDOMAIN


def test_ptr_v4_and_v6_exact_key_only() -> None:
    resolver = Resolver(_fabric(), ZONE)
    for address in ("10.0.0.5", "fd00::5"):
        name = ipaddress.ip_address(address).reverse_pointer
        msg = _ask(resolver, name, "PTR")
        assert msg is not None and _rdatas(msg, "PTR") == ["w0.default.l3fabric.internal."]
    # A reverse parent we hold names below: it exists, but has no PTR of its own.
    msg = _ask(resolver, "0.0.10.in-addr.arpa", "PTR")
    assert msg is not None and msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert msg.authority[0].name.to_text() == "in-addr.arpa."
    # A reverse name we know nothing about is not ours: forwarded or refused.
    assert _ask(resolver, "8.8.8.8.in-addr.arpa", "PTR") is None


def test_names_outside_the_zone_are_not_ours() -> None:
    resolver = Resolver(_fabric(), ZONE)
    assert _ask(resolver, "example.com") is None
    assert _ask(resolver, "internal") is None
    assert _ask(resolver, "xl3fabric.internal") is None
    msg = resolver.answer(dns.message.make_query("w0.default.l3fabric.internal", "A", "CH"))
    assert msg is not None and msg.rcode() == dns.rcode.REFUSED
    msg = _ask(resolver, "w0.default.l3fabric.internal", "ANY")
    assert msg is not None and msg.rcode() == dns.rcode.NOTIMP


def test_addresses_for_resolve() -> None:
    resolver = Resolver(_fabric(), ZONE)
    assert [str(a) for a in resolver.addresses("w0.default.l3fabric.internal") or []] == [
        "10.0.0.5",
        "fd00::5",
    ]
    assert resolver.addresses("nope.default.l3fabric.internal") is None
    assert resolver.addresses("default.svc.l3fabric.internal") is not None


# --- CoreDNS's rules: the documentation's examples answer as documented ------


def test_coredns_documented_examples_answer_the_same() -> None:
    # From CoreDNS's etcd plugin documentation (ttl written as a number; see
    # test_dns_records for why the quoted form is rejected).
    view = _view(
        [
            ("/skydns/local/skydns/x1", b'{"host":"1.1.1.1","ttl":60}'),
            ("/skydns/local/skydns/x2", b'{"host":"1.1.1.2","ttl":60}'),
            ("/skydns/local/skydns/x3", b'{"host":"2003::8:1","ttl":60}'),
            ("/skydns/local/skydns/x4", b'{"host":"2003::8:2","ttl":60}'),
            ("/skydns/arpa/in-addr/10/0/0/127", b'{"host":"reverse.skydns.local."}'),
        ]
    )
    resolver = Resolver(view, "skydns.local")
    msg = _ask(resolver, "skydns.local", "A")
    assert msg is not None and _rdatas(msg, "A") == ["1.1.1.1", "1.1.1.2"]
    msg = _ask(resolver, "skydns.local", "AAAA")
    assert msg is not None and _rdatas(msg, "AAAA") == ["2003::8:1", "2003::8:2"]
    msg = _ask(resolver, "127.0.0.10.in-addr.arpa", "PTR")
    assert msg is not None and _rdatas(msg, "PTR") == ["reverse.skydns.local."]
    assert msg.answer[0].ttl == R.CORE_DNS_DEFAULT_TTL  # no ttl stored

    srv = Resolver(
        _view(
            [
                (
                    "/skydns/local/skydns/x5",
                    b'{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}',
                )
            ]
        ),
        "skydns.local",
    )
    msg = _ask(srv, "skydns.local", "SRV")
    assert msg is not None and _rdatas(msg, "SRV") == ["10 100 8080 skydns-local.server."]
    txt = Resolver(
        _view([("/skydns/local/skydns/x6", b'{"ttl":60,"text":"this is a random text message."}')]),
        "skydns.local",
    )
    msg = _ask(txt, "skydns.local", "TXT")
    assert msg is not None and _rdatas(msg, "TXT") == ['"this is a random text message."']


def test_srv_with_an_ip_host_synthesises_the_target_from_the_key() -> None:
    view = _view(
        [
            ("/skydns/local/skydns/a/x1", b'{"host":"10.1.1.1","port":80,"weight":25}'),
            ("/skydns/local/skydns/a/x2", b'{"host":"10.1.1.2","port":80,"weight":75}'),
            ("/skydns/local/skydns/a/x3", b'{"host":"10.1.1.3","port":81,"targetstrip":1}'),
        ]
    )
    msg = _ask(Resolver(view, "skydns.local"), "a.skydns.local", "SRV")
    assert msg is not None
    assert _rdatas(msg, "SRV") == [
        "10 12 80 x1.a.skydns.local.",
        "10 37 80 x2.a.skydns.local.",
        "10 50 81 a.skydns.local.",
    ]
    assert _rdatas(msg, "A", "additional") == ["10.1.1.1", "10.1.1.2", "10.1.1.3"]


def test_cname_hosts_are_chased_inside_the_zone_and_loops_stop() -> None:
    view = _view(
        [
            ("/skydns/local/z/alias", b'{"host":"real.z.local"}'),
            ("/skydns/local/z/real", b'{"host":"10.9.9.9"}'),
            ("/skydns/local/z/loop1", b'{"host":"loop2.z.local"}'),
            ("/skydns/local/z/loop2", b'{"host":"loop1.z.local"}'),
            ("/skydns/local/z/out", b'{"host":"www.example.com"}'),
        ]
    )
    resolver = Resolver(view, "z.local")
    msg = _ask(resolver, "alias.z.local")
    assert msg is not None
    assert _rdatas(msg, "CNAME") == ["real.z.local."] and _rdatas(msg, "A") == ["10.9.9.9"]
    msg = _ask(resolver, "loop1.z.local")
    assert msg is not None and not _rdatas(msg, "A")
    msg = _ask(resolver, "out.z.local")
    assert msg is not None and _rdatas(msg, "CNAME") == ["www.example.com."]


def test_group_rule_matches_coredns() -> None:
    def rec(key: str, grp: str = "") -> R.Record:
        return R.Record(key, R.key_to_name(key), host="10.0.0.1", group=grp)

    a, b = rec("/skydns/l/x/a", "g1"), rec("/skydns/l/x/b", "g1")
    deep = rec("/skydns/l/x/_tcp/_h/w", "g2")
    plain = rec("/skydns/l/x/c")
    assert group([deep, a, b]) == [a, b]
    assert group([a, deep, plain]) == [a, plain]
    assert group([a, rec("/skydns/l/x/z", "g3")]) == [a, rec("/skydns/l/x/z", "g3")]
    assert group([plain, deep]) == [plain, deep]


# --- the view and its feeder ------------------------------------------------


def test_view_applies_puts_and_deletes_and_indexes_ancestors() -> None:
    view = _view([])
    [(k0, v0)] = R.workload_records("w0", "default", ["10.0.0.5"])
    view.apply([WatchEvent("put", k0, v0, 101)], 101)
    assert view.exists("w0.default.l3fabric.internal") and view.exists("l3fabric.internal")
    assert view.revision == 101 and len(view) == 1
    view.apply([WatchEvent("put", "/skydns/bad/x", b"nope", 102)], 102)
    assert "/skydns/bad/x" in view.invalid() and len(view) == 1
    view.apply(
        [WatchEvent("delete", k0, None, 103), WatchEvent("delete", "/skydns/bad/x", None, 103)], 103
    )
    assert not view.exists("w0.default.l3fabric.internal") and not view.exists("internal")
    assert view.invalid() == {} and len(view) == 0


class _FakeStore:
    """list/revision/watch from a script; the first watch says compacted."""

    def __init__(self, items: list[KeyValue], revision: int) -> None:
        self.items, self.rev, self.watches = items, revision, 0
        self.pending: list[WatchEvent] = []

    def revision(self) -> int:
        return self.rev

    def list(self, prefix: str) -> builtins.list[KeyValue]:
        return [kv for kv in self.items if kv.key.startswith(prefix)]

    def watch(
        self, prefix: str, since_revision: int, timeout: float
    ) -> tuple[int, builtins.list[WatchEvent]]:
        self.watches += 1
        if self.watches == 1:
            raise WatchCompacted(since_revision, since_revision + 5)
        events, self.pending = self.pending, []
        return self.rev, events


def test_feeder_lists_watches_and_relists_after_compaction() -> None:
    [(k0, v0)] = R.workload_records("w0", "default", ["10.0.0.5"])
    [(k1, v1)] = R.workload_records("w1", "default", ["10.0.0.6"])
    store = _FakeStore([KeyValue(k0, v0, 3)], 3)
    view = RecordView()
    feeder = ViewFeeder(store, view)  # type: ignore[arg-type]
    feeder.sync()
    assert view.exists("w0.default.l3fabric.internal") and view.loaded.is_set()
    store.items, store.rev = [KeyValue(k1, v1, 9)], 9  # w0 went while history was lost
    feeder.step()  # compacted: lists again
    assert not view.exists("w0.default.l3fabric.internal")
    assert view.exists("w1.default.l3fabric.internal") and view.revision == 9
    store.rev, store.pending = 10, [WatchEvent("delete", k1, None, 10)]
    feeder.step()
    assert not view.exists("w1.default.l3fabric.internal") and view.revision == 10


# --- the server's query path ------------------------------------------------


def _server(view: RecordView, **config: object) -> tuple[DnsServer, DnsMetrics]:
    metrics = DnsMetrics(CollectorRegistry())
    cfg = ServerConfig(("127.0.0.1", 0), **config)  # type: ignore[arg-type]
    return DnsServer(Resolver(view, ZONE), cfg, metrics), metrics


def _handle(server: DnsServer, wire: bytes, *, tcp: bool = False) -> dns.message.Message | None:
    out = asyncio.run(server.handle(wire, tcp=tcp))
    return None if out is None else dns.message.from_wire(out)


BIG = "big.default.svc.l3fabric.internal"


def _big_service(endpoints: int) -> RecordView:
    eps = [R.Endpoint(f"w{i}", (ipaddress.ip_address(f"10.0.{i}.1"),)) for i in range(endpoints)]
    return _view(R.service_records("big", "default", eps))


def test_udp_truncates_to_512_without_edns_and_to_the_edns_size_with_it() -> None:
    server, _ = _server(_big_service(40))  # 40 A records: ~700 bytes
    query = dns.message.make_query("big.default.svc.l3fabric.internal", "A")
    msg = _handle(server, query.to_wire())
    assert msg is not None and msg.flags & dns.flags.TC and not msg.answer
    msg = _handle(server, query.to_wire(), tcp=True)
    assert msg is not None and not msg.flags & dns.flags.TC and len(msg.answer[0]) == 40
    edns = dns.message.make_query(
        "big.default.svc.l3fabric.internal", "A", use_edns=0, payload=4096
    )
    msg = _handle(server, edns.to_wire())
    assert msg is not None and not msg.flags & dns.flags.TC and len(msg.answer[0]) == 40
    assert msg.edns == 0 and msg.payload == 1232  # ours, not the client's
    server, _ = _server(_big_service(100))  # ~1700 bytes: more than our EDNS size
    edns = dns.message.make_query(
        "big.default.svc.l3fabric.internal", "A", use_edns=0, payload=4096
    )
    msg = _handle(server, edns.to_wire())
    assert msg is not None and msg.flags & dns.flags.TC and msg.edns == 0


def test_edns_version_other_than_0_is_badvers() -> None:
    server, _ = _server(_fabric())
    query = dns.message.make_query("w0.default.l3fabric.internal", "A", use_edns=1)
    msg = _handle(server, query.to_wire())
    assert msg is not None and msg.rcode() == dns.rcode.BADVERS


def test_refused_without_upstreams_and_counted() -> None:
    server, metrics = _server(_fabric())
    msg = _handle(server, dns.message.make_query("example.com", "A").to_wire())
    assert msg is not None and msg.rcode() == dns.rcode.REFUSED
    assert not msg.flags & dns.flags.AA
    value = metrics.registry.get_sample_value(
        "l3fabric_dns_queries_total", {"qtype": "A", "rcode": "REFUSED"}
    )
    assert value == 1


def test_malformed_packets_are_dropped_and_counted_never_raised() -> None:
    server, metrics = _server(_fabric())
    rng = random.Random(1234)
    valid = dns.message.make_query("w0.default.l3fabric.internal", "A", use_edns=0).to_wire()
    answered = 0
    for i in range(1000):
        if i % 2:
            packet = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        else:  # a valid query with a few bytes flipped: gets past the header
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            packet = bytes(data)
        answered += _handle(server, packet) is not None
    dropped = metrics.registry.get_sample_value("l3fabric_dns_malformed_packets_total")
    assert dropped is not None and dropped + answered == 1000 and dropped > 400
    msg = _handle(server, valid)
    assert msg is not None and _rdatas(msg, "A") == ["10.0.0.5"]


def test_a_response_sent_to_us_is_dropped() -> None:
    server, _ = _server(_fabric())
    query = dns.message.make_query("w0.default.l3fabric.internal", "A")
    assert _handle(server, dns.message.make_response(query).to_wire()) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        ("10.0.0.1", ("10.0.0.1", 53)),
    ],
)
def test_parse_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text, default_port=53) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "host:53", "1.2.3.4:0", "1.2.3.4:x", "[::1"])
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text)
