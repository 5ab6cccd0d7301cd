"""Answers one DNS query from a RecordView: pure, no sockets, no datastore.

The rules are CoreDNS's etcd plugin's, so both servers answer the same
names the same way from the same records: a name's records are every
record at or below its key, narrowed to the shortest keys' `group`; an IP
host gives A/AAAA, a name host gives CNAME (chased inside the zone), SRV
targets are the host name or, for an IP host, the record's own name; PTR
reads only the exact reverse key. Where CoreDNS has no rule of its own
l3fabric follows the RFCs: NXDOMAIN for a name in the zone with no records
at or below it, NODATA (NOERROR, an empty answer and the SOA) for a name
that has records but none of the asked type.

answer() returns None for a name outside our zone and outside the reverse
names we hold: the server forwards those, or refuses them.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from l3fabric.datastore.skydns import (
    CORE_DNS_DEFAULT_PRIORITY,
    DEFAULT_TTL,
    DEFAULT_ZONE,
    REVERSE_ZONES,
    Record,
    check_zone,
    name_to_key,
)
from l3fabric.dns.view import RecordView
from l3fabric.model import IPAddress

OUR_PAYLOAD = 1232  # the EDNS0 size we advertise (the DNS flag day 2020 value)
MAX_CNAME_DEPTH = 8  # CoreDNS stops following CNAMEs after 8 as well
_IN = dns.rdataclass.IN
RdataType = dns.rdatatype.RdataType
A, AAAA, CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME
SRV, TXT, PTR, SOA = dns.rdatatype.SRV, dns.rdatatype.TXT, dns.rdatatype.PTR, dns.rdatatype.SOA
ANY = dns.rdatatype.ANY


def group(records: Sequence[Record]) -> list[Record]:
    """CoreDNS's msg.Group: the shortest keys' group picks which records of a
    name are returned together (records without a group always are); when
    the shortest keys disagree, everything is returned."""
    if not records:
        return []
    chosen = records[0].group
    slashes = records[0].key.count("/")
    depths = [0] * len(records)  # like Go's make([]int, n): unset entries stay 0
    for i, record in enumerate(records):
        depth = record.key.count("/")
        depths[i] = depth
        if depth < slashes:
            if not record.group:
                break
            slashes, chosen = depth, record.group
    if not chosen:
        return list(records)
    out = []
    for record, depth in zip(records, depths, strict=True):
        if not record.group:
            out.append(record)
            continue
        if depth == slashes and record.group != chosen:
            return list(records)
        if record.group == chosen:
            out.append(record)
    return out


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def _strip(name: str, count: int) -> str:
    labels = name.split(".")
    return ".".join(labels[count:]) if 0 < count < len(labels) else name


@dataclass(frozen=True)
class _Built:
    answer: list[dns.rrset.RRset]
    additional: list[dns.rrset.RRset]


class Resolver:
    """The authoritative side of the server, for one zone and the reverse
    names of the records it holds."""

    def __init__(
        self,
        view: RecordView,
        zone: str = DEFAULT_ZONE,
        *,
        negative_ttl: int = DEFAULT_TTL,
        recursion_available: bool = False,
        our_payload: int = OUR_PAYLOAD,
    ) -> None:
        self.view = view
        self.zone = check_zone(zone).lower()
        self.negative_ttl = negative_ttl
        self.recursion_available = recursion_available
        self.our_payload = our_payload

    # --- the query path ----------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response to a well-formed query with one question, or None
        when the name is not ours."""
        question = query.question[0]
        name = _text(question.name)
        ours = in_zone(name, self.zone)
        if not ours and not (_is_reverse(name) and self.view.exists(name)):
            return None
        response = dns.message.make_response(
            query, recursion_available=self.recursion_available, our_payload=self.our_payload
        )
        response.flags |= dns.flags.AA
        if question.rdclass != _IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if question.rdtype == ANY:
            # RFC 8482 lets a server decline ANY; we do, rather than dump a name.
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        records = self._records(name)
        if not records and name != self.zone:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa(name))
            return response
        built = self._build(question.name, name, question.rdtype, records)
        response.answer.extend(built.answer)
        response.additional.extend(built.additional)
        if not built.answer:
            response.authority.append(self._soa(name))
        return response

    def addresses(self, name: str) -> list[IPAddress] | None:
        """A and AAAA of a name as the server would answer them (CNAMEs
        followed inside the zone); None when the name does not exist."""
        name = name.rstrip(".").lower()
        records = self._records(name)
        if not records and name != self.zone:
            return None
        qname = dns.name.from_text(name)
        out: list[IPAddress] = []
        for rdtype in (A, AAAA):
            for rrset in self._addresses(qname, name, rdtype, 0, {name}):
                if rrset.rdtype == rdtype:
                    out.extend(ipaddress.ip_address(rd.address) for rd in rrset)
        return out

    # --- building answers --------------------------------------------------

    def _records(self, name: str) -> list[Record]:
        if name == self.zone:
            # The zone's own addresses live at apex.dns.ZONE, as in CoreDNS.
            apex = self.view.lookup("apex.dns." + self.zone)
            if apex:
                return group(apex)
        return group(self.view.lookup(name))

    def _build(
        self, qname: dns.name.Name, name: str, rdtype: RdataType, records: list[Record]
    ) -> _Built:
        if rdtype in (A, AAAA):
            return _Built(self._addresses(qname, name, rdtype, 0, {name}, records), [])
        if rdtype == SRV:
            return self._srv(qname, records)
        if rdtype == TXT:
            rrset = dns.rrset.RRset(qname, _IN, TXT)
            for record in records:
                if record.host_type() == "TXT":
                    chunks = [record.text[i : i + 255] for i in range(0, len(record.text), 255)]
                    text = " ".join(_quote(chunk) for chunk in chunks)
                    rrset.add(dns.rdata.from_text(_IN, TXT, text), record.effective_ttl())
            return _Built([rrset] if rrset else [], [])
        if rdtype == PTR:
            key = (
                name_to_key(name, self.view.prefix)
                if _valid_for_key(name, self.view.prefix)
                else ""
            )
            rrset = dns.rrset.RRset(qname, _IN, PTR)
            for record in records:
                if record.key == key and record.host_type() == "CNAME":
                    target = dns.name.from_text(record.host)
                    rrset.add(
                        dns.rdata.from_text(_IN, PTR, target.to_text()), record.effective_ttl()
                    )
            return _Built([rrset] if rrset else [], [])
        if rdtype == SOA and name == self.zone:
            return _Built([self._soa(name, owner=qname)], [])
        return _Built([], [])

    def _addresses(
        self,
        qname: dns.name.Name,
        name: str,
        rdtype: RdataType,
        depth: int,
        seen: set[str],
        records: list[Record] | None = None,
    ) -> list[dns.rrset.RRset]:
        if records is None:
            records = self._records(name)
        wanted = "A" if rdtype == A else "AAAA"
        direct = dns.rrset.RRset(qname, _IN, rdtype)
        chained: list[dns.rrset.RRset] = []
        for record in records:
            kind = record.host_type()
            if kind == wanted:
                direct.add(dns.rdata.from_text(_IN, rdtype, record.host), record.effective_ttl())
            elif kind == "CNAME":
                target = record.host.rstrip(".").lower()
                if target in seen or depth >= MAX_CNAME_DEPTH:
                    continue  # x CNAME x, or a longer loop
                cname = dns.rrset.RRset(qname, _IN, CNAME)
                target_name = dns.name.from_text(target)
                cname.add(
                    dns.rdata.from_text(_IN, CNAME, target_name.to_text()), record.effective_ttl()
                )
                if not in_zone(target, self.zone):
                    chained.append(cname)  # the client's resolver follows it
                    continue
                found = self._addresses(target_name, target, rdtype, depth + 1, seen | {target})
                if found:
                    chained.extend([cname, *found])
        return ([direct] if direct else []) + chained

    def _srv(self, qname: dns.name.Name, records: list[Record]) -> _Built:
        totals: dict[int, int] = {}
        for record in records:
            priority = record.priority or CORE_DNS_DEFAULT_PRIORITY
            totals[priority] = totals.get(priority, 0) + (record.weight or 100)
        srv = dns.rrset.RRset(qname, _IN, SRV)
        additional: dict[tuple[str, RdataType], dns.rrset.RRset] = {}
        for record in records:
            kind = record.host_type()
            if record.port == -1 or kind == "TXT":
                continue
            priority = record.priority or CORE_DNS_DEFAULT_PRIORITY
            share = 100.0 / totals[priority] * (record.weight or 100)
            weight = max(1, math.floor(share))
            if kind == "CNAME":
                target = _strip(record.host.rstrip(".").lower(), record.targetstrip)
            else:
                target = _strip(record.name, record.targetstrip)
            target_name = dns.name.from_text(target)
            rdata = f"{priority} {weight} {record.port} {target_name.to_text()}"
            srv.add(dns.rdata.from_text(_IN, SRV, rdata), record.effective_ttl())
            if kind == "CNAME":
                if in_zone(target, self.zone) and (target, A) not in additional:
                    for rdtype in (A, AAAA):
                        for rrset in self._addresses(target_name, target, rdtype, 1, {target}):
                            additional.setdefault((rrset.name.to_text(), rrset.rdtype), rrset)
                continue
            rdtype = A if kind == "A" else AAAA
            rrset = additional.setdefault(
                (target, rdtype), dns.rrset.RRset(target_name, _IN, rdtype)
            )
            rrset.add(dns.rdata.from_text(_IN, rdtype, record.host), record.effective_ttl())
        return _Built([srv] if srv else [], list(additional.values()))

    def _soa(self, name: str, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        zone = self.zone
        if not in_zone(name, self.zone):
            zone = next(z for z in REVERSE_ZONES if in_zone(name, z))
        # The serial follows the datastore revision, so it grows with every change.
        serial = self.view.revision % 2**32
        text = (
            f"ns.dns.{self.zone}. hostmaster.{self.zone}. {serial} 7200 1800 86400 "
            f"{self.negative_ttl}"
        )
        rrset = dns.rrset.RRset(owner or dns.name.from_text(zone), _IN, SOA)
        rrset.add(dns.rdata.from_text(_IN, SOA, text), self.negative_ttl)
        return rrset


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() if name != dns.name.root else ""


def _is_reverse(name: str) -> bool:
    return any(in_zone(name, zone) for zone in REVERSE_ZONES)


def _valid_for_key(name: str, prefix: str) -> bool:
    try:
        name_to_key(name, prefix)
    except ValueError:
        return False
    return True


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
