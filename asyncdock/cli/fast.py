"""Blocking one-shot API calls for short CLI commands (ps, images, inspect, version, ...).

asyncio plus msgspec alone cost ~90 ms to import here; a plain socket and json keep `asyncdock ps`
well under its 150 ms budget. Streaming commands use the async Client instead.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/run/asyncdock.sock"


class CallError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def socket_path(host: str | None = None) -> str:
    host = host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not host.startswith("unix://"):
        raise SystemExit(f"asyncdock: only unix:// hosts are supported, not {host}")
    return host[len("unix://"):]


def call(method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
         host: str | None = None) -> Any:
    q = {k: ("1" if v is True else "0" if v is False else v) for k, v in (query or {}).items() if v is not None}
    target = "/v1.41" + quote(path, safe="/:@") + ("?" + urlencode(q, doseq=True) if q else "")
    data = b"" if body is None else json.dumps(body).encode()
    head = (f"{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: asyncdock-cli\r\nConnection: close\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Content-Type: application/json\r\n" if body is not None else "") + "\r\n")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            s.connect(socket_path(host))
        except OSError as e:
            raise SystemExit(f"Cannot connect to the asyncdock daemon at unix://{socket_path(host)}. "
                             f"Is the daemon running? ({e.strerror})") from None
        s.sendall(head.encode() + data)
        chunks = []
        while True:
            c = s.recv(1 << 16)
            if not c:
                break
            chunks.append(c)
    finally:
        s.close()
    raw = b"".join(chunks)
    hdr, _, rest = raw.partition(b"\r\n\r\n")
    lines = hdr.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", ""):
        out = bytearray()
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out += rest[:n]
            rest = rest[n + 2:]
        rest = bytes(out)
    if status >= 400:
        try:
            msg = json.loads(rest).get("message", "")
        except ValueError:
            msg = rest.decode(errors="replace").strip()
        raise CallError(status, msg)
    if not rest.strip():
        return None
    try:
        return json.loads(rest)
    except ValueError:
        return rest
