"""The DNS server: UDP and TCP listeners on asyncio around the Resolver.

dnspython parses and renders the messages (and sends the forwards); the
loops are ours, so every packet goes through one handle() that counts what
it could not parse and never lets an exception out. UDP answers fit in 512
bytes, or in the client's EDNS0 size up to ours; a bigger answer goes out
truncated with TC set so the client retries over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from l3fabric.dns.metrics import DnsMetrics
from l3fabric.dns.resolver import OUR_PAYLOAD, Resolver

log = logging.getLogger(__name__)

UDP_MIN = 512  # what a client without EDNS0 can take (RFC 1035)
TCP_MAX = 65535
TCP_IDLE_TIMEOUT = 10.0  # seconds a TCP client may sit between queries
DEFAULT_UPSTREAM_TIMEOUT = 2.0


def parse_endpoint(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """ADDR:PORT, [V6ADDR]:PORT, or a bare address when default_port is set."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ADDRESS]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text:
        if default_port is None:
            raise ValueError(f"{text!r}: a port is required (ADDRESS:PORT)")
        return str(address), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: {port_text!r} is not a port in 1..65535")
    return str(address), int(port_text)


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, int]
    upstreams: tuple[tuple[str, int], ...] = ()
    upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT


class DnsServer:
    """handle() is the whole query path; start() binds the sockets."""

    def __init__(
        self,
        resolver: Resolver,
        config: ServerConfig,
        metrics: DnsMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the query path ----------------------------------------------------

    async def handle(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """The answer to one packet, or None to drop it (counted)."""
        started = self.clock()
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # dnspython raises many kinds for hostile input
            self.metrics.malformed.inc()
            return None
        if query.flags & dns.flags.QR:
            self.metrics.malformed.inc()  # a response sent to a server
            return None
        try:
            response = await self._respond(query)
            limit = TCP_MAX if tcp else _udp_limit(query)
            answer = response.to_wire(max_size=limit, prefer_truncation=True)
        except Exception:
            # A bug must cost one answer, never the server.
            log.exception("DNS query failed", extra={"id": query.id})
            response = _error(query, dns.rcode.SERVFAIL)
            answer = response.to_wire(max_size=UDP_MIN, prefer_truncation=True)
        qtype = dns.rdatatype.to_text(query.question[0].rdtype) if query.question else "none"
        self.metrics.query(qtype, dns.rcode.to_text(response.rcode()), self.clock() - started)
        return answer

    async def _respond(self, query: dns.message.Message) -> dns.message.Message:
        if query.opcode() != dns.opcode.QUERY:
            return _error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _error(query, dns.rcode.FORMERR)
        if query.edns > 0:
            return _error(query, dns.rcode.BADVERS)
        response = self.resolver.answer(query)
        if response is not None:
            return response
        if not self.config.upstreams:
            return _error(query, dns.rcode.REFUSED)
        return await self._forward(query)

    async def _forward(self, query: dns.message.Message) -> dns.message.Message:
        timeout = self.config.upstream_timeout
        for host, port in self.config.upstreams:
            try:
                reply = await dns.asyncquery.udp(query, host, timeout=timeout, port=port)
                if reply.flags & dns.flags.TC:
                    reply = await dns.asyncquery.tcp(query, host, timeout=timeout, port=port)
            except dns.exception.Timeout:
                self.metrics.forwards.labels("timeout").inc()
                continue
            except Exception as exc:  # refused connections, bad replies
                self.metrics.forwards.labels("error").inc()
                log.warning(
                    "DNS upstream failed", extra={"upstream": f"{host}:{port}", "error": str(exc)}
                )
                continue
            self.metrics.forwards.labels("ok").inc()
            # The upstream's EDNS0 parameters are not the client's: speak ours.
            if query.edns >= 0:
                reply.use_edns(0, payload=OUR_PAYLOAD)
            else:
                reply.use_edns(False)
            reply.id = query.id
            # We answer as a forwarder: recursion available, not authoritative.
            reply.flags = (reply.flags | dns.flags.RA) & ~dns.flags.AA
            return reply
        return _error(query, dns.rcode.SERVFAIL, recursion_available=True)

    # --- sockets -----------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.config.listen
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port)
        )
        self._udp = transport
        self._tcp = await asyncio.start_server(self._tcp_client, host, port)
        log.info("DNS server listening", extra={"listen": f"{host}:{port}"})

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()

    def _spawn_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._udp_reply(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _udp_reply(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = await self.handle(data, tcp=False)
        if answer is not None and self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(answer, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", header)
                if length == 0:
                    self.metrics.malformed.inc()
                    break
                data = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                answer = await self.handle(data, tcp=True)
                if answer is None:
                    break  # a stream that carried garbage is not worth keeping
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server._spawn_udp(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("DNS UDP error", extra={"error": str(exc)})


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return UDP_MIN
    return max(UDP_MIN, min(query.payload, OUR_PAYLOAD))


def _error(
    query: dns.message.Message, rcode: dns.rcode.Rcode, *, recursion_available: bool = False
) -> dns.message.Message:
    response = dns.message.make_response(
        query, recursion_available=recursion_available, our_payload=OUR_PAYLOAD
    )
    if rcode == dns.rcode.BADVERS:
        response.use_edns(0, payload=OUR_PAYLOAD)
    response.set_rcode(rcode)
    return response


def upstream_list(texts: Sequence[str]) -> tuple[tuple[str, int], ...]:
    return tuple(parse_endpoint(text, default_port=53) for text in texts)
