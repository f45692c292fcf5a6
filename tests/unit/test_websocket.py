"""The websocket framing used by attach/ws, checked against frames built by hand per RFC 6455."""
from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest

from asyncdock.api import websocket as ws
from asyncdock.base.errors import InvalidParameter


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    head = struct.pack("!BB", b0, 0x80 | n) if n < 126 else struct.pack("!BBH", b0, 0x80 | 126, n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def test_handshake_accept_key() -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    resp = ws.handshake_response({"upgrade": "websocket", "sec-websocket-key": key})
    want = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert resp.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: " + want + b"\r\n" in resp
    with pytest.raises(InvalidParameter):
        ws.handshake_response({"upgrade": "tcp"})


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 70000])
def test_server_frame_lengths(size: int) -> None:
    payload = os.urandom(size)
    data = ws.frame(ws.BINARY, payload)
    assert data[0] == 0x82 and not data[1] & 0x80  # FIN + binary, unmasked
    n = data[1]
    if size < 126:
        assert n == size and data[2:] == payload
    elif size < 65536:
        assert n == 126 and struct.unpack("!H", data[2:4])[0] == size and data[4:] == payload
    else:
        assert n == 127 and struct.unpack("!Q", data[2:10])[0] == size and data[10:] == payload


def test_decoder_unmasks_joins_fragments_and_buffers_partial_frames() -> None:
    d = ws.Decoder()
    stream = (client_frame(ws.TEXT, b"hel", fin=False) + client_frame(0, b"lo", fin=True)
              + client_frame(ws.PING, b"p") + client_frame(ws.BINARY, b"x" * 300))
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(stream), 7):  # arrives in small pieces
        out += d.feed(stream[i:i + 7])
    assert out == [(ws.TEXT, b"hello"), (ws.PING, b"p"), (ws.BINARY, b"x" * 300)]
