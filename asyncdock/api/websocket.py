"""Just enough RFC 6455 for Docker's websocket attach: the handshake answer and sans-IO framing
(server frames unmasked, client frames masked)."""
from __future__ import annotations

import base64
import hashlib
import struct

from ..base.errors import InvalidParameter

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_MAX_FRAME = 16 << 20


def handshake_response(headers: dict[str, str]) -> bytes:
    key = headers.get("sec-websocket-key", "").strip()
    if not key or "websocket" not in headers.get("upgrade", "").lower():
        raise InvalidParameter("websocket attach needs an Upgrade: websocket request with Sec-WebSocket-Key")
    accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def frame(opcode: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


class Decoder:
    """Feeds bytes from the client, yields complete (opcode, payload) messages. Fragmented
    messages are joined; control frames come out as they arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._partial: tuple[int, bytearray] | None = None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            if len(self._buf) < 2:
                return out
            b0, b1 = self._buf[0], self._buf[1]
            fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
            pos = 2
            if n == 126:
                if len(self._buf) < 4:
                    return out
                n = struct.unpack_from("!H", self._buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(self._buf) < 10:
                    return out
                n = struct.unpack_from("!Q", self._buf, 2)[0]
                pos = 10
            if n > _MAX_FRAME:
                raise ValueError("websocket frame too large")
            mask = b""
            if masked:
                if len(self._buf) < pos + 4:
                    return out
                mask = bytes(self._buf[pos:pos + 4])
                pos += 4
            if len(self._buf) < pos + n:
                return out
            payload = bytearray(self._buf[pos:pos + n])
            del self._buf[:pos + n]
            if mask:
                for i in range(n):
                    payload[i] ^= mask[i & 3]
            if opcode >= CLOSE:
                out.append((opcode, bytes(payload)))
            elif opcode == 0 and self._partial is not None:
                self._partial[1].extend(payload)
                if fin:
                    out.append((self._partial[0], bytes(self._partial[1])))
                    self._partial = None
            elif fin:
                out.append((opcode, bytes(payload)))
            else:
                self._partial = (opcode, payload)
