"""parse_prefix and the hash-once prefixes: the same networks, equal and
hashing alike, as ipaddress.ip_network gives, and the same refusals."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3fabric.prefix import Prefix4, Prefix6, parse_prefix

ACCEPTED = [
    "198.19.0.1/32",
    "198.19.0.0/31",
    "0.0.0.0/0",
    "10.0.0.0/8",
    "255.255.255.255/32",
    "10.0.0.0/08",  # the standard parser's leniency is kept
    "10.0.0.0/255.0.0.0",
    "2001:db8::/32",
    "fd00:64::1/128",
    "fd00:64::/127",
    "::/0",
]
REFUSED = [
    "10.0.0.1/24",  # host bits
    "01.0.0.0/8",
    "1.2.3.4/33",
    "256.0.0.0/8",
    "1.2.3/8",
    "x",
    "",
    "\u0661.2.3.4/32",  # an Arabic-Indic digit
    "1.2.3.4/32\n",
    "fd00:64::1/64",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_same_network_as_the_standard_parser(text: str) -> None:
    ours, theirs = parse_prefix(text), ipaddress.ip_network(text)
    assert isinstance(ours, Prefix4 | Prefix6)
    assert ours == theirs and theirs == ours
    assert hash(ours) == hash(theirs)
    assert {theirs: 1}[ours] == 1 and {ours: 1}[theirs] == 1
    assert str(ours) == str(theirs)
    assert ours.broadcast_address == theirs.broadcast_address
    assert list(itertools.islice(ours.hosts(), 3)) == list(itertools.islice(theirs.hosts(), 3))


@pytest.mark.parametrize("text", REFUSED)
def test_refuses_what_the_standard_parser_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        ipaddress.ip_network(text)
    with pytest.raises(ValueError):
        parse_prefix(text)


def test_different_prefixes_differ() -> None:
    a, b, c = parse_prefix("10.0.0.0/24"), parse_prefix("10.0.0.0/25"), parse_prefix("10.0.1.0/24")
    assert a != b and a != c and len({a, b, c, parse_prefix("10.0.0.0/24")}) == 3
    assert parse_prefix("fd00::/64") != parse_prefix("fd00::/65")
    assert parse_prefix("10.0.0.0/8") != "10.0.0.0/8"


@settings(deadline=None, max_examples=300)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_any_ipv4_prefix(value: int, length: int) -> None:
    network = ipaddress.IPv4Network((value, length), strict=False)
    text = str(network)
    ours = parse_prefix(text)
    assert ours == network and hash(ours) == hash(network) and str(ours) == text
    assert ours == Prefix4.from_int(int(network.network_address), length)


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 2**128 - 1), st.integers(0, 128))
def test_any_ipv6_prefix(value: int, length: int) -> None:
    network = ipaddress.IPv6Network((value, length), strict=False)
    ours = parse_prefix(str(network))
    assert ours == network and hash(ours) == hash(network)


def test_from_int_refuses_host_bits() -> None:
    with pytest.raises(ValueError, match="host bits"):
        Prefix4.from_int(int(ipaddress.IPv4Address("10.0.0.1")), 24)
