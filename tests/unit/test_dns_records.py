"""The SkyDNS / CoreDNS-etcd record layout: keys, values, validation."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.datastore import skydns as R
from l3fabric.datastore.base import KeyValue
from l3fabric.datastore.skydns import Endpoint, Record, RecordError, ServicePort

# --- golden: from CoreDNS's etcd plugin documentation ------------------------
# The documentation's examples, as given there (etcdctl put KEY VALUE):
#
#   % etcdctl put /skydns/arpa/in-addr/10/0/0/127 '{"host":"reverse.skydns.local."}'
#   % etcdctl put /skydns/local/skydns/x1 '{"host":"1.1.1.1","ttl":"60"}'
#   % etcdctl put /skydns/local/skydns/x2 '{"host":"1.1.1.2","ttl":"60"}'
#   % etcdctl put /skydns/local/skydns/x3 '{"host":"2003::8:1","ttl":"60"}'
#   % etcdctl put /skydns/local/skydns/x5 \
#       '{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}'
#   % etcdctl put /skydns/local/skydns/x6 '{"ttl":60,"text":"this is a random text message."}'
#
# and the SRV answer: `dig +short skydns.local SRV` -> `10 100 8080 skydns-local.server.`
DOC_PTR = ("/skydns/arpa/in-addr/10/0/0/127", b'{"host":"reverse.skydns.local."}')
DOC_SRV = (
    "/skydns/local/skydns/x5",
    b'{"host":"skydns-local.server","ttl":60,"priority":10,"port":8080}',
)
DOC_TXT = ("/skydns/local/skydns/x6", b'{"ttl":60,"text":"this is a random text message."}')
DOC_STRING_TTL = ("/skydns/local/skydns/x1", b'{"host":"1.1.1.1","ttl":"60"}')


def test_golden_key_paths_are_reversed_labels_under_the_prefix() -> None:
    assert R.name_to_key("x5.skydns.local") == DOC_SRV[0]
    assert R.key_to_name(DOC_SRV[0]) == "x5.skydns.local"
    assert R.ptr_key("10.0.0.127") == DOC_PTR[0]
    assert R.reverse_name(ipaddress.ip_address("10.0.0.127")) == "127.0.0.10.in-addr.arpa"


@pytest.mark.parametrize("golden", [DOC_PTR, DOC_SRV, DOC_TXT])
def test_golden_values_parse_and_render_back_to_the_same_json(golden: tuple[str, bytes]) -> None:
    key, value = golden
    record = R.parse_record(key, value)
    assert record.key == key
    # Field order on the wire is Go's struct order, not the document's.
    assert json.loads(record.value()) == json.loads(value)


def test_golden_srv_fields() -> None:
    record = R.parse_record(*DOC_SRV)
    assert (record.host, record.ttl, record.priority, record.port) == (
        "skydns-local.server",
        60,
        10,
        8080,
    )
    assert record.host_type() == "CNAME"  # a name host: the SRV target
    assert R.parse_record(*DOC_TXT).host_type() == "TXT"


def test_golden_our_ptr_value_has_the_documented_shape() -> None:
    # The documented reverse record with the workload's name and our ttl.
    [(key, value)] = R.ptr_records("w0", "default", ["10.0.0.127"])
    assert key == DOC_PTR[0]
    assert json.loads(value) == {"host": "w0.default.l3fabric.internal.", "ttl": 5}


def test_a_string_ttl_is_rejected_as_coredns_decoder_would() -> None:
    # The documentation's x1..x4 examples quote the ttl; CoreDNS decodes ttl
    # into a uint32, which a JSON string is not, so they fail there too.
    with pytest.raises(RecordError, match="ttl must be a number"):
        R.parse_record(*DOC_STRING_TTL)
    fixed = R.parse_record(DOC_STRING_TTL[0], b'{"host":"1.1.1.1","ttl":60}')
    assert fixed.value() == b'{"host":"1.1.1.1","ttl":60}'


# --- what l3fabric writes ---------------------------------------------------


def test_workload_records_one_sub_key_per_address() -> None:
    out = R.workload_records("w0", "default", ["fd00::5", "10.0.0.5", "10.0.0.5"], ttl=7)
    assert out == [
        ("/skydns/internal/l3fabric/default/w0/10-0-0-5", b'{"host":"10.0.0.5","ttl":7}'),
        (
            "/skydns/internal/l3fabric/default/w0/fd00-0000-0000-0000-0000-0000-0000-0005",
            b'{"host":"fd00::5","ttl":7}',
        ),
    ]
    assert all(k.startswith(R.workload_prefix("w0", "default")) for k, _ in out)


def test_zone_and_prefix_are_configurable() -> None:
    out = R.workload_records("w0", "team-a", ["10.0.0.5"], zone="corp.example.", prefix="/dns")
    assert out[0][0] == "/dns/example/corp/team-a/w0/10-0-0-5"


def test_ptr_records_v6_nibbles() -> None:
    [(key, _)] = R.ptr_records("w0", "default", ["fd00::5"])
    assert key == "/skydns/arpa/ip6/" + "/".join("fd00" + "0" * 27 + "5")


def test_service_records_addresses_and_srv_are_grouped_apart() -> None:
    eps = [
        Endpoint("w0", (ipaddress.ip_address("10.0.0.5"),)),
        Endpoint("w1", (ipaddress.ip_address("10.0.1.7"), ipaddress.ip_address("fd00::7"))),
    ]
    out = dict(R.service_records("web", "default", eps, [ServicePort.parse("http:80/tcp")]))
    base = "/skydns/internal/l3fabric/svc/default/web"
    assert json.loads(out[f"{base}/10-0-0-5"]) == {
        "host": "10.0.0.5",
        "ttl": 5,
        "group": R.ADDRESS_GROUP,
    }
    assert json.loads(out[f"{base}/_tcp/_http/w1"]) == {
        "host": "w1.default.l3fabric.internal",
        "port": 80,
        "ttl": 5,
        "group": R.SRV_GROUP,
    }
    assert len(out) == 5
    assert all(k.startswith(R.service_prefix("web", "default")) for k in out)
    assert R.srv_name(ServicePort("http", 80), "web", "default") == (
        "_http._tcp.web.default.svc.l3fabric.internal"
    )


def test_service_port_parse() -> None:
    assert ServicePort.parse("dns:53/udp") == ServicePort("dns", 53, "udp")
    assert ServicePort.parse("http:8080") == ServicePort("http", 8080, "tcp")
    for bad in ("http", "http:0", "http:x", "http:80/icmp", "Http:80", "_http:80"):
        with pytest.raises(RecordError):
            ServicePort.parse(bad)


def test_service_rejects_shared_addresses_and_repeats() -> None:
    a = ipaddress.ip_address("10.0.0.5")
    with pytest.raises(RecordError, match="belongs to both"):
        R.service_records("web", "default", [Endpoint("w0", (a,)), Endpoint("w1", (a,))])
    with pytest.raises(RecordError, match="listed twice"):
        R.service_records("web", "default", [Endpoint("w0", (a,)), Endpoint("w0", ())])


@pytest.mark.parametrize(
    ("name", "namespace", "match"),
    [
        ("W0", "default", "not a DNS label"),
        ("w_0", "default", "not a DNS label"),
        ("w0.x", "default", "not a DNS label"),
        ("-w0", "default", "not a DNS label"),
        ("w0-", "default", "not a DNS label"),
        ("a" * 64, "default", "not a DNS label"),
        ("", "default", "not a DNS label"),
        ("w0", "svc", "reserved"),
        ("w0", "dns", "reserved"),
        ("w0", "Default", "not a DNS label"),
    ],
)
def test_names_are_strict_dns_labels(name: str, namespace: str, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        R.workload_records(name, namespace, ["10.0.0.5"])


def test_total_name_length_and_key_length_are_checked() -> None:
    label = "a" * 63
    with pytest.raises(RecordError, match="1 to 253"):
        R.check_name(".".join([label] * 4), "name")
    # 63+63+63 plus the zone is a valid name but longer than a datastore key may be.
    with pytest.raises(RecordError, match="characters"):
        R.workload_records(label, label, ["10.0.0.5"], zone=label + ".internal")


def test_bad_addresses_and_ttls() -> None:
    with pytest.raises(RecordError, match="not an IP address"):
        R.workload_records("w0", "default", ["10.0.0.300"])
    for ttl in (0, -1, True, 2**31):
        with pytest.raises(RecordError, match="ttl"):
            R.workload_records("w0", "default", ["10.0.0.5"], ttl=ttl)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("/skydns/local/x/a", b"{", "not JSON"),
        ("/skydns/local/x/a", b"[]", "JSON object"),
        ("/skydns/local/x/a", b'{"host":1}', "host must be a string"),
        ("/skydns/local/x/a", b'{"host":"1.1.1.1","port":true}', "port must be a number"),
        ("/skydns/local/x/a", b'{"host":"1.1.1.1","ttl":-1}', "out of range"),
        ("/skydns/local/x/a", b'{"host":"1.1.1.1","mail":1}', "mail"),
        ("/skydns/local/x/a", b'{"ttl":5}', "needs a host or a text"),
        ("/skydns/local/x/a", b'{"host":"bad host!"}', "not a DNS label"),
        ("/skydns/local/X/a", b'{"host":"1.1.1.1"}', "not a DNS label"),
        ("/other/local/x", b'{"host":"1.1.1.1"}', "not under the prefix"),
        ("/skydns", b'{"host":"1.1.1.1"}', "not under the prefix"),
    ],
)
def test_parse_record_is_strict(key: str, value: bytes, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        R.parse_record(key, value)


def test_parse_ignores_unknown_fields_as_go_does() -> None:
    record = R.parse_record("/skydns/local/x/a", b'{"host":"1.1.1.1","future":[1]}')
    assert record == Record("/skydns/local/x/a", "a.x.local", host="1.1.1.1")


def test_parse_records_collects_errors() -> None:
    good = R.workload_records("w0", "default", ["10.0.0.5"])[0]
    records, errors = R.parse_records(
        [KeyValue(good[0], good[1], 1), KeyValue("/skydns/x/y", b"nope", 2)]
    )
    assert [r.key for r in records] == [good[0]] and len(errors) == 1


def test_plan_update_diffs_against_what_is_stored() -> None:
    old = R.workload_records("w0", "default", ["10.0.0.5", "fd00::5"])
    new = R.workload_records("w0", "default", ["10.0.0.6", "fd00::5"])
    existing = [KeyValue(k, v, i + 1) for i, (k, v) in enumerate(old)]
    puts, deletes = R.plan_update(existing, new)
    assert puts == [new[0]]
    assert deletes == [old[0][0]]
    assert R.plan_update(existing, old) == ([], [])
    assert R.plan_update(existing, []) == ([], sorted(k for k, _ in old))


_labels = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
_addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


@settings(deadline=None, max_examples=200)
@given(
    name=_labels.filter(lambda s: s not in R.RESERVED_NAMESPACES),
    namespace=_labels.filter(lambda s: s not in R.RESERVED_NAMESPACES),
    addresses=st.lists(_addresses, min_size=1, max_size=4),
    ttl=st.integers(1, 2**31 - 1),
)
def test_round_trip(name: str, namespace: str, addresses: list[str], ttl: int) -> None:
    out = R.workload_records(name, namespace, addresses, ttl=ttl)
    owner = R.workload_name(name, namespace)
    assert len(out) == len({ipaddress.ip_address(a) for a in addresses})
    for key, value in out:
        record = R.parse_record(key, value)
        assert record.name.endswith("." + owner)
        assert record.ttl == ttl and record.value() == value
        assert R.name_to_key(record.name) == key
        assert ipaddress.ip_address(record.host) in {ipaddress.ip_address(a) for a in addresses}
