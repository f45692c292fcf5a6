"""The embedded DNS server of user-defined networks (Docker's 127.0.0.11): one UDP socket per
container, bound to 127.0.0.11:53 inside the container's netns (made there by a thread that
enters the netns), served on the engine's loop. Names of containers and aliases on the networks
the asking container shares are answered here; anything else goes to the host's resolvers
(from the engine, in the host's netns) and the answer is relayed."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..util.tasks import TaskSet
from . import netns

log = logging.getLogger(__name__)

DNS_ADDR = "127.0.0.11"
TTL = 600
FORWARD_TIMEOUT = 4.0
MAX_INFLIGHT = 256

# (asking container id, lower-case name without the trailing dot) -> IPv4 addresses or None
# when the name is not ours.
Resolver = Callable[[str, str], list[str] | None]


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    out: list[str] = []
    try:
        for line in Path(path).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    ipaddress.IPv4Address(parts[1])
                except ValueError:
                    continue
                out.append(parts[1])
    except OSError:
        pass
    return out


def parse_question(msg: bytes) -> tuple[int, str, int, int] | None:
    """(id, name, qtype, end offset of the question) of a standard single-question query."""
    if len(msg) < 12:
        return None
    qid, flags, qd = struct.unpack_from("!HHH", msg, 0)
    if flags & 0x8000 or qd != 1:
        return None
    pos = 12
    labels: list[str] = []
    while True:
        if pos >= len(msg):
            return None
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(msg):
            return None
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        return None
    qtype, _qclass = struct.unpack_from("!HH", msg, pos)
    return qid, ".".join(labels).lower(), qtype, pos + 4


def answer(msg: bytes, end: int, qtype: int, ips: list[str], rcode: int = 0) -> bytes:
    qid, flags = struct.unpack_from("!HH", msg, 0)
    rd = flags & 0x0100
    records = [ip for ip in ips] if qtype in (1, 255) else []
    head = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, len(records), 0, 0)
    out = bytearray(head + msg[12:end])
    for ip in records:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, TTL, 4) + socket.inet_aton(ip)
    return bytes(out)


class _Server(asyncio.DatagramProtocol):
    def __init__(self, dns: EmbeddedDNS, cid: str) -> None:
        self.dns, self.cid = dns, cid
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = parse_question(data)
        if q is None:
            return
        _qid, name, qtype, end = q
        ips = self.dns.resolver(self.cid, name.rstrip("."))
        if ips is not None:
            self.transport.sendto(answer(data, end, qtype, ips), addr)  # type: ignore[union-attr]
            return
        if self.dns.inflight >= MAX_INFLIGHT:
            self.transport.sendto(answer(data, end, qtype, [], rcode=2), addr)  # type: ignore[union-attr]
            return
        self.dns.spawn(self._forward(data, end, qtype, addr))

    async def _forward(self, data: bytes, end: int, qtype: int, addr: Any) -> None:
        self.dns.inflight += 1
        try:
            reply = await self.dns.forward(data)
        finally:
            self.dns.inflight -= 1
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.sendto(reply if reply is not None else answer(data, end, qtype, [], rcode=2), addr)


class _Once(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes]) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


class EmbeddedDNS:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.servers: dict[str, asyncio.DatagramTransport] = {}
        self.inflight = 0
        self._tasks = TaskSet("embedded DNS")  # queries forwarded to the host's resolvers

    def spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro, name="forwarded query")

    async def serve(self, cid: str, netns_path: str) -> None:
        if cid in self.servers:
            return
        sock = await asyncio.to_thread(netns.udp_socket_in, netns_path, (DNS_ADDR, 53))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Server(self, cid), sock=sock)
        self.servers[cid] = transport

    def stop(self, cid: str) -> None:
        t = self.servers.pop(cid, None)
        if t is not None:
            t.close()

    async def forward(self, data: bytes) -> bytes | None:
        loop = asyncio.get_running_loop()
        for server in host_resolvers():
            fut: asyncio.Future[bytes] = loop.create_future()
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: _Once(fut), remote_addr=(server, 53))
            except OSError:
                continue
            try:
                transport.sendto(data)
                return await asyncio.wait_for(fut, FORWARD_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                continue
            finally:
                transport.close()
        return None

    async def close(self) -> None:
        for cid in list(self.servers):
            self.stop(cid)
        await self._tasks.close()
