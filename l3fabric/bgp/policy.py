"""Import policy: which routes learned from BGP peers this node may use.

Pure logic, no I/O. A route is judged on its own (prefix, attributes and the
peer it came from); the verdict is None (accept) or one reason from
REJECT_REASONS. The RIB keeps rejected routes so that operators can see what
a peer sent and why it was refused, but never selects them.

docs/routing-policy.md describes every rule and setting.
"""

from __future__ import annotations

import bisect
import copy
import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from l3fabric import limits
from l3fabric.bgp.events import PathAttributes
from l3fabric.model import IPAddress, IPNetwork

PeerKind = Literal["mesh", "route-reflector", "external"]
PEER_KINDS: tuple[str, ...] = get_args(PeerKind)

# Reasons, in the order the checks run: the first that applies is reported.
DEFAULT_ROUTE = "default-route"
COVERS_LOCAL_WORKLOAD = "covers-local-workload"
OUTSIDE_POOLS = "outside-pools"
BAD_NEXT_HOP = "bad-next-hop"
NEXT_HOP_SELF = "next-hop-self"
UNREACHABLE_NEXT_HOP = "unreachable-next-hop"
AS_LOOP = "as-loop"
BAD_FIRST_AS = "bad-first-as"
REJECT_REASONS: tuple[str, ...] = (
    DEFAULT_ROUTE,
    COVERS_LOCAL_WORKLOAD,
    OUTSIDE_POOLS,
    BAD_NEXT_HOP,
    NEXT_HOP_SELF,
    UNREACHABLE_NEXT_HOP,
    AS_LOOP,
    BAD_FIRST_AS,
)

DEFAULT_MAX_PREFIXES = 10_000
_MAX_CACHED_NEXT_HOPS = 4096
MAX_MAX_PREFIXES = 10_000_000

_NETWORK_TYPES = (ipaddress.IPv4Network, ipaddress.IPv6Network)
_ADDRESS_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)


def _check_asn(what: str, asn: object) -> None:
    problem = limits.asn_error(asn)
    if problem is not None:
        raise ValueError(f"{what}: {problem}")


@dataclass(frozen=True)
class PeerInfo:
    """A configured BGP neighbour as the RIB needs to know it.

    max_prefixes None means "use ImportPolicy.max_prefixes"; graceful_restart_time
    None means the peer's routes are dropped the moment its session drops.
    long_lived_stale_time (seconds, RFC 9494 applied locally): when the restart
    time runs out, the still-stale routes are kept this much longer as
    long-lived stale, losing to any other path; None or 0 sweeps them then.
    It applies only with a graceful_restart_time.
    """

    address: IPAddress
    kind: PeerKind
    asn: int
    local_asn: int
    max_prefixes: int | None = None
    graceful_restart_time: float | None = None
    long_lived_stale_time: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.address, _ADDRESS_TYPES):
            raise ValueError(f"peer address must be an IP address, got {self.address!r}")
        if self.kind not in PEER_KINDS:
            raise ValueError(
                f"peer {self.address}: kind must be one of {', '.join(PEER_KINDS)}, "
                f"got {self.kind!r}"
            )
        _check_asn(f"peer {self.address}: asn", self.asn)
        _check_asn(f"peer {self.address}: local_asn", self.local_asn)
        if self.kind == "external" and self.asn == self.local_asn:
            raise ValueError(
                f"peer {self.address}: kind external but asn {self.asn} is our own asn"
            )
        if self.kind != "external" and self.asn != self.local_asn:
            raise ValueError(
                f"peer {self.address}: kind {self.kind} is iBGP but asn {self.asn} "
                f"differs from our asn {self.local_asn}"
            )
        if self.max_prefixes is not None:
            _check_max_prefixes(f"peer {self.address}: max_prefixes", self.max_prefixes)
        gr = self.graceful_restart_time
        if gr is not None and (isinstance(gr, bool) or not isinstance(gr, int | float) or gr <= 0):
            raise ValueError(
                f"peer {self.address}: graceful_restart_time must be a positive number of "
                f"seconds or None, got {gr!r}"
            )
        llst = self.long_lived_stale_time
        if llst is not None:
            problem = limits.long_lived_stale_time_error(llst)
            if problem is not None:
                raise ValueError(f"peer {self.address}: long_lived_stale_time: {problem}")

    @property
    def external(self) -> bool:
        return self.kind == "external"


def _check_max_prefixes(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MAX_PREFIXES:
        raise ValueError(f"{what} must be an integer in 1..{MAX_MAX_PREFIXES}, got {value!r}")


@dataclass(frozen=True)
class ImportPolicy:
    """What this node accepts from its peers. Every default is the safe choice.

    allow_default: accept 0.0.0.0/0 and ::/0.
    allow_outside_pools: accept prefixes outside every fabric pool.
    allowed_prefixes: prefixes outside the pools that are accepted anyway (a
        route is accepted when it lies inside one of them).
    max_prefixes: how many prefixes one peer may send (received, whether
        accepted or not) before its session is torn down; PeerInfo can override.
    pools: the fabric's address pools.
    borrowed_addresses: this node's workload addresses that lie in another
        node's IPAM block (advertise: blocks): a peer may announce the block
        that covers them (its owner does), never the address itself.
    local_addresses: this node's workload addresses; no peer may announce a
        prefix equal to or covering one of them.
    node_addresses: this node's own underlay addresses; a route whose next hop
        is one of them would loop back to us.
    on_link: the networks this node reaches without a gateway (its
        interfaces' subnets and link-scope routes). The kernel only takes a
        gateway inside one of them, so a next hop outside them can never be
        installed. None: not known, next hops are not checked against them.
    """

    allow_default: bool = False
    allow_outside_pools: bool = False
    allowed_prefixes: tuple[IPNetwork, ...] = ()
    max_prefixes: int = DEFAULT_MAX_PREFIXES
    pools: tuple[IPNetwork, ...] = ()
    local_addresses: frozenset[IPAddress] = frozenset()
    borrowed_addresses: frozenset[IPAddress] = frozenset()
    node_addresses: tuple[IPAddress, ...] = ()
    on_link: tuple[IPNetwork, ...] | None = None
    # Sorted integer form of local_addresses per IP version, for O(log n)
    # "does this prefix contain a local address" questions.
    _local_index: dict[int, list[int]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    # next hop -> on an on-link network: a peer sends thousands of routes
    # with one next hop, and on_link does not change for this object.
    _on_link_verdicts: dict[IPAddress, bool] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    # pools and allowed_prefixes as (version, first, last) integer spans: a
    # peer's bulk is judged against them per prefix, and ipaddress's
    # containment builds objects on every question.
    _pool_spans: tuple[tuple[int, int, int], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _allowed_spans: tuple[tuple[int, int, int], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        for name in ("allow_default", "allow_outside_pools"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"import policy {name} must be true or false")
        _check_max_prefixes("import policy max_prefixes", self.max_prefixes)
        object.__setattr__(
            self, "allowed_prefixes", _networks("allowed_prefixes", self.allowed_prefixes)
        )
        object.__setattr__(self, "pools", _networks("pools", self.pools))
        object.__setattr__(self, "_pool_spans", _spans(self.pools))
        object.__setattr__(self, "_allowed_spans", _spans(self.allowed_prefixes))
        local = frozenset(_addresses("local_addresses", self.local_addresses))
        object.__setattr__(self, "local_addresses", local)
        borrowed = frozenset(_addresses("borrowed_addresses", self.borrowed_addresses))
        object.__setattr__(self, "borrowed_addresses", borrowed)
        object.__setattr__(
            self, "node_addresses", tuple(_addresses("node_addresses", self.node_addresses))
        )
        if self.on_link is not None:
            object.__setattr__(self, "on_link", _networks("on_link", self.on_link))
        index: dict[int, list[int]] = {4: [], 6: []}
        for address in local:
            index[address.version].append(int(address))
        for values in index.values():
            values.sort()
        object.__setattr__(self, "_local_index", index)

    def with_local_addresses(
        self, addresses: Iterable[IPAddress], borrowed: Iterable[IPAddress] = ()
    ) -> ImportPolicy:
        return replace(
            self, local_addresses=frozenset(addresses), borrowed_addresses=frozenset(borrowed)
        )

    def with_local_delta(
        self, added: Iterable[IPAddress], removed: Iterable[IPAddress]
    ) -> ImportPolicy:
        """One workload came or went: a copy with its addresses added or
        removed, in time proportional to the change (not re-validating and
        re-sorting every local address, which a 10k-workload node cannot
        afford per workload)."""
        plus = set(_addresses("local_addresses", added))
        minus = set(removed) - plus
        new = copy.copy(self)
        object.__setattr__(new, "local_addresses", (self.local_addresses - minus) | plus)
        index = {version: list(values) for version, values in self._local_index.items()}
        for address in minus & self.local_addresses:
            values = index[address.version]
            i = bisect.bisect_left(values, int(address))
            if i < len(values) and values[i] == int(address):
                del values[i]
        for address in plus - self.local_addresses:
            bisect.insort(index[address.version], int(address))
        object.__setattr__(new, "_local_index", index)
        return new

    def covers_local_workload(self, prefix: IPNetwork) -> bool:
        first, last = _span(prefix)
        host = prefix.prefixlen == prefix.max_prefixlen
        return self._covers_span(prefix.version, first, last, host, prefix)

    def in_pools(self, prefix: IPNetwork) -> bool:
        return _inside_any(prefix, self._pool_spans)

    def _next_hop_on_link(self, next_hop: IPAddress) -> bool:
        verdict = self._on_link_verdicts.get(next_hop)
        if verdict is None:
            assert self.on_link is not None
            if len(self._on_link_verdicts) >= _MAX_CACHED_NEXT_HOPS:
                self._on_link_verdicts.clear()  # a peer churning next hops
            verdict = self._on_link_verdicts[next_hop] = _address_inside_any(next_hop, self.on_link)
        return verdict

    def evaluate(self, prefix: IPNetwork, attrs: PathAttributes, peer: PeerInfo) -> str | None:
        """None to accept, otherwise the first reason in REJECT_REASONS that applies."""
        return self.judge_prefix(prefix) or self.judge_attributes(attrs, prefix.version, peer)

    def judge_prefix(self, prefix: IPNetwork) -> str | None:
        """The reasons that depend on the prefix alone (they come first in
        REJECT_REASONS): None when it passes them."""
        length = prefix.prefixlen
        if length == 0:
            # An allowed default route necessarily covers every local
            # workload; it is still the least specific route there is, so it
            # cannot take their traffic.
            return None if self.allow_default else DEFAULT_ROUTE
        version = prefix.version
        first = int(prefix.network_address)
        last = first | ((1 << ((32 if version == 4 else 128) - length)) - 1)
        if self._covers_span(version, first, last, length == prefix.max_prefixlen, prefix):
            return COVERS_LOCAL_WORKLOAD
        if not (
            self.allow_outside_pools
            or _span_inside_any(version, first, last, self._pool_spans)
            or _span_inside_any(version, first, last, self._allowed_spans)
        ):
            return OUTSIDE_POOLS
        return None

    def _covers_span(
        self, version: int, first: int, last: int, host: bool, prefix: IPNetwork
    ) -> bool:
        if host and self.borrowed_addresses and prefix.network_address in self.borrowed_addresses:
            return True
        values = self._local_index[version]
        i = bisect.bisect_left(values, first)
        return i < len(values) and values[i] <= last

    def judge_attributes(self, attrs: PathAttributes, version: int, peer: PeerInfo) -> str | None:
        """The reasons that depend on the path's attributes, for a prefix of
        IP `version` from `peer`: the same for every prefix of one UPDATE, so
        the RIB asks once per UPDATE."""
        if _bad_next_hop(attrs.next_hop, version):
            return BAD_NEXT_HOP
        if attrs.next_hop in self.node_addresses:
            return NEXT_HOP_SELF
        # RFC 4271 6.3: a next hop on no shared subnet is semantically
        # incorrect. Accepted, it would win best path and then fail in the
        # kernel ("Nexthop has invalid gateway") on every pass, while a
        # usable path for the same prefix stayed out.
        if self.on_link is not None and not self._next_hop_on_link(attrs.next_hop):
            return UNREACHABLE_NEXT_HOP
        if peer.external and peer.local_asn in attrs.as_path:
            return AS_LOOP
        # RFC 4271 6.3: an external peer's path starts with the peer's own AS.
        # One that leaves it out (or sends an empty path) would tie with an
        # iBGP path on length and then win as eBGP: a hijack of any workload.
        if peer.external and (not attrs.as_path or attrs.as_path[0] != peer.asn):
            return BAD_FIRST_AS
        return None


def _networks(what: str, values: Iterable[object]) -> tuple[IPNetwork, ...]:
    if isinstance(values, str | bytes):
        raise ValueError(f"import policy {what} must be a list of networks, got {values!r}")
    result: list[IPNetwork] = []
    for value in values:
        if not isinstance(value, _NETWORK_TYPES):
            raise ValueError(f"import policy {what}: {value!r} is not an IP network")
        result.append(value)
    return tuple(result)


def _addresses(what: str, values: Iterable[object]) -> list[IPAddress]:
    if isinstance(values, str | bytes):
        raise ValueError(f"import policy {what} must be a list of addresses, got {values!r}")
    result: list[IPAddress] = []
    for value in values:
        if not isinstance(value, _ADDRESS_TYPES):
            raise ValueError(f"import policy {what}: {value!r} is not an IP address")
        result.append(value)
    return result


def _span(prefix: IPNetwork) -> tuple[int, int]:
    """The first and last address of `prefix`, as integers."""
    first = int(prefix.network_address)
    return first, first | ((1 << (prefix.max_prefixlen - prefix.prefixlen)) - 1)


def _spans(networks: Iterable[IPNetwork]) -> tuple[tuple[int, int, int], ...]:
    return tuple((n.version, *_span(n)) for n in networks)


def _inside_any(prefix: IPNetwork, spans: tuple[tuple[int, int, int], ...]) -> bool:
    return _span_inside_any(prefix.version, *_span(prefix), spans)


def _span_inside_any(
    version: int, first: int, last: int, spans: tuple[tuple[int, int, int], ...]
) -> bool:
    for span_version, span_first, span_last in spans:
        if span_version == version and span_first <= first and last <= span_last:
            return True
    return False


def _address_inside_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


@functools.lru_cache(maxsize=4096)
def _bad_next_hop(next_hop: IPAddress, version: int) -> bool:
    """Next hops the kernel cannot forward to: the wrong family, or addresses
    that never belong to a neighbouring router.

    IPv4-mapped IPv6 next hops (::ffff:a.b.c.d, what a speaker produces for an
    IPv6 prefix sent over an IPv4 session without an IPv6 next hop) are
    rejected too: the kernel would look for an on-link IPv6 neighbour with that
    address and never find one.
    """
    if next_hop.version != version:
        return True
    if (
        next_hop.is_unspecified
        or next_hop.is_multicast
        or next_hop.is_loopback
        or next_hop.is_link_local
    ):
        return True
    if isinstance(next_hop, ipaddress.IPv4Address):
        return next_hop == ipaddress.IPv4Address("255.255.255.255")
    return next_hop.ipv4_mapped is not None
