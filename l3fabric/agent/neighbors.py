"""Which BGP neighbours a node should have: pure, from config and node records.

In full mesh every other registered node is a neighbour (per address family
both ends have); configured peers (route reflectors, ToRs) come from the
config. A bad node record is reported and skipped: one record must not take
the whole mesh down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from l3fabric.bgp.exabgp_config import NeighborSpec
from l3fabric.bgp.policy import ImportPolicy, PeerInfo
from l3fabric.config import Config, PeerConfig
from l3fabric.datastore.base import KeyValue
from l3fabric.model import IPAddress, NodeRecord


@dataclass(frozen=True)
class DesiredNeighbor:
    spec: NeighborSpec  # what ExaBGP is told
    info: PeerInfo  # what the RIB's import policy knows of the peer
    kind: str  # mesh | route-reflector | external


@dataclass(frozen=True)
class NeighborPlan:
    neighbors: dict[IPAddress, DesiredNeighbor]
    problems: tuple[str, ...] = ()  # records or peers left out, and why


def decode_node_records(values: Iterable[KeyValue]) -> tuple[list[NodeRecord], list[str]]:
    """Node records from the datastore, and a problem line for each bad one."""
    records: list[NodeRecord] = []
    problems: list[str] = []
    for kv in values:
        try:
            records.append(NodeRecord.from_dict(json.loads(kv.value)))
        except (ValueError, KeyError, AssertionError, TypeError) as exc:
            problems.append(f"ignoring bad node record {kv.key}: {exc}")
    return records, problems


def desired_neighbors(config: Config, records: Sequence[NodeRecord]) -> NeighborPlan:
    wanted: dict[IPAddress, DesiredNeighbor] = {}
    problems: list[str] = []
    node = config.node
    if config.bgp.mesh:
        for record in records:
            if record.name == node.name:
                continue
            for peer_addr, local in ((record.ipv4, node.ipv4), (record.ipv6, node.ipv6)):
                if peer_addr is None or local is None:
                    continue
                name = f"mesh-{record.name}-v{peer_addr.version}"
                try:
                    wanted[peer_addr] = _neighbor(config, peer_addr, record.asn, local, name)
                except ValueError as exc:
                    problems.append(f"ignoring node {record.name} for the mesh: {exc}")
    for peer in config.bgp.peers:
        local = peer.local_address or (node.ipv4 if peer.address.version == 4 else node.ipv6)
        if local is None:
            problems.append(f"no local address of the family of peer {peer.address}")
            continue
        wanted[peer.address] = _neighbor(
            config, peer.address, peer.asn, local, _peer_name(peer), peer
        )
    return NeighborPlan(wanted, tuple(problems))


def import_policy(config: Config) -> ImportPolicy:
    """The import policy the config asks for (local addresses come later)."""
    imp = config.bgp.import_policy
    node = config.node
    return ImportPolicy(
        allow_default=imp.allow_default,
        allow_outside_pools=imp.allow_outside_pools,
        allowed_prefixes=imp.allowed_prefixes,
        max_prefixes=imp.max_prefixes,
        pools=tuple(p.cidr for p in config.pools),
        local_addresses=frozenset(),
        node_addresses=tuple(a for a in (node.ipv4, node.ipv6) if a is not None),
    )


def _neighbor(
    config: Config,
    address: IPAddress,
    asn: int,
    local: IPAddress,
    name: str,
    peer: PeerConfig | None = None,
) -> DesiredNeighbor:
    bgp = config.bgp
    gr_enabled = bgp.graceful_restart.enabled
    if peer is not None and peer.graceful_restart is not None:
        gr_enabled = peer.graceful_restart
    gr = bgp.graceful_restart.restart_time if gr_enabled else None
    kind = peer.role if peer is not None else "mesh"
    spec = NeighborSpec(
        peer_address=address,
        peer_as=asn,
        local_address=local,
        name=name,
        local_as=config.node.asn,
        router_id=config.node.router_id,
        families=("ipv4",) if address.version == 4 else ("ipv6",),
        hold_time=(peer.hold_time if peer and peer.hold_time is not None else bgp.hold_time),
        passive=bool(peer and peer.passive),
        md5_password=peer.password if peer else None,
        multihop_ttl=peer.multihop if peer else None,
        graceful_restart=gr,
    )
    info = PeerInfo(
        address=address,
        kind=kind,  # type: ignore[arg-type]
        asn=asn,
        local_asn=config.node.asn,
        graceful_restart_time=float(gr) if gr else None,
    )
    return DesiredNeighbor(spec, info, kind)


def _peer_name(peer: PeerConfig) -> str:
    return peer.name.replace(":", "-").replace(".", "-")
