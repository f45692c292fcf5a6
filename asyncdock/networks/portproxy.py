"""The userland proxy for published ports: host ip:port -> container ip:port, TCP and UDP, on the
engine's event loop (Docker runs one docker-proxy process per port; we run one listener).

TCP: protocol-level splicing with flow control both ways (a slow side pauses reading from the
other) and half-close passed through. UDP: one connected upstream socket per client address,
dropped after 90 s idle (Docker's UDP conntrack timeout in docker-proxy), bounded in count.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from ..util.tasks import TaskSet

log = logging.getLogger(__name__)

UDP_IDLE = 90.0
UDP_MAX_FLOWS = 1024
CONNECT_TIMEOUT = 10.0


class ProxyBindError(OSError):
    """Docker's wording: `listen tcp4 0.0.0.0:8080: bind: address already in use`."""

    def __init__(self, proto: str, host_ip: str, port: int, err: OSError) -> None:
        reason = "address already in use" if err.errno == errno.EADDRINUSE else (
            "cannot assign requested address" if err.errno == errno.EADDRNOTAVAIL else
            (err.strerror or str(err)).lower())
        super().__init__(err.errno, f"listen {proto}4 {host_ip}:{port}: bind: {reason}")
        self.text = f"listen {proto}4 {host_ip}:{port}: bind: {reason}"


class _Pipe(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []
        self.got_eof = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.got_eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            if peer.got_eof:
                self._close_both()
                return False
        return True  # keep our write side open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()

    def _close_both(self) -> None:
        for side in (self, self.peer):
            if side is not None and side.transport is not None:
                side.transport.close()


class _ClientSide(_Pipe):
    def __init__(self, proxy: TcpProxy) -> None:
        super().__init__()
        self.proxy = proxy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        self.proxy._spawn(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        up = _Pipe()
        up.peer = self
        try:
            await asyncio.wait_for(loop.create_connection(lambda: up, self.proxy.target_ip, self.proxy.target_port),
                                   CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as e:
            log.debug("proxy %s: upstream %s:%s: %s", self.proxy, self.proxy.target_ip, self.proxy.target_port, e)
            if self.transport is not None:
                self.transport.close()
            return
        if self.closed:
            up.transport.close()  # type: ignore[union-attr]
            return
        self.peer = up
        for chunk in self.pending:
            up.transport.write(chunk)  # type: ignore[union-attr]
        self.pending.clear()
        if self.got_eof and up.transport.can_write_eof():  # type: ignore[union-attr]
            up.transport.write_eof()  # type: ignore[union-attr]
        self.transport.resume_reading()  # type: ignore[union-attr]


class TcpProxy:
    proto = "tcp"

    def __init__(self, host_ip: str, host_port: int, target_ip: str, target_port: int) -> None:
        self.host_ip, self.host_port = host_ip or "0.0.0.0", host_port
        self.target_ip, self.target_port = target_ip, target_port
        self._server: asyncio.AbstractServer | None = None
        self._tasks = TaskSet("tcp proxy")  # connections to the upstream being made

    def __repr__(self) -> str:
        return f"tcp {self.host_ip}:{self.host_port}->{self.target_ip}:{self.target_port}"

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro, name="upstream connect")

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host_ip, self.host_port))
        except OSError as e:
            sock.close()
            raise ProxyBindError("tcp", self.host_ip, self.host_port, e) from None
        sock.listen(1024)
        sock.setblocking(False)
        self._server = await loop.create_server(lambda: _ClientSide(self), sock=sock)
        self.host_port = sock.getsockname()[1]
        return self.host_port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._tasks.close()


class _UdpUpstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpProxy, client: tuple[str, int]) -> None:
        self.proxy, self.client = proxy, client
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.touch()
        if self.proxy.front is not None:
            self.proxy.front.sendto(data, self.client)

    def touch(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(UDP_IDLE, self.close)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()
        self.proxy.flows.pop(self.client, None)


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, proxy: UdpProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proxy.forward(data, addr)


class UdpProxy:
    proto = "udp"

    def __init__(self, host_ip: str, host_port: int, target_ip: str, target_port: int) -> None:
        self.host_ip, self.host_port = host_ip or "0.0.0.0", host_port
        self.target_ip, self.target_port = target_ip, target_port
        self.front: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, _UdpUpstream] = {}
        self._connecting: dict[Any, list[bytes]] = {}
        self._tasks = TaskSet("udp proxy")  # upstream sockets being opened

    def __repr__(self) -> str:
        return f"udp {self.host_ip}:{self.host_port}->{self.target_ip}:{self.target_port}"

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host_ip, self.host_port))
        except OSError as e:
            sock.close()
            raise ProxyBindError("udp", self.host_ip, self.host_port, e) from None
        sock.setblocking(False)
        self.front, _ = await loop.create_datagram_endpoint(lambda: _UdpFront(self), sock=sock)
        self.host_port = sock.getsockname()[1]
        return self.host_port

    def forward(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is not None and flow.transport is not None:
            flow.touch()
            flow.transport.sendto(data)
            return
        if addr in self._connecting:
            if len(self._connecting[addr]) < 64:
                self._connecting[addr].append(data)
            return
        if len(self.flows) + len(self._connecting) >= UDP_MAX_FLOWS:
            return  # dropped, as a full conntrack table would
        self._connecting[addr] = [data]
        self._tasks.spawn(self._open(addr), name="upstream open")

    async def _open(self, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        queued = self._connecting.get(addr, [])
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _UdpUpstream(self, addr), remote_addr=(self.target_ip, self.target_port))
        except OSError:
            self._connecting.pop(addr, None)
            return
        self._connecting.pop(addr, None)
        if self.front is None:
            transport.close()
            return
        self.flows[addr] = proto
        proto.touch()
        for d in queued:
            transport.sendto(d)

    async def close(self) -> None:
        if self.front is not None:
            self.front.close()
            self.front = None
        await self._tasks.close()
        for flow in list(self.flows.values()):
            flow.close()


Proxy = TcpProxy | UdpProxy


def make_proxy(proto: str, host_ip: str, host_port: int, target_ip: str, target_port: int) -> Proxy:
    cls = UdpProxy if proto == "udp" else TcpProxy
    return cls(host_ip, host_port, target_ip, target_port)
