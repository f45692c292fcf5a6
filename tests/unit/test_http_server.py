"""Our HTTP/1.1 server over a real Unix socket: Docker's ping headers, version errors, 404/501,
streaming heads sent at once, and the hijack surviving a client half-close."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from asyncdock.api.http import Request, Router, json_response
from asyncdock.api.server import ApiServer, App


class _Engine:
    """The app needs an engine object only for handlers that use it; these routes do not."""


async def _echo_hijack(req: Request) -> None:
    conn = await req.hijack()
    got = b""
    while True:
        data = await conn.read()
        if not data:
            break
        got += data
    # stdin is closed: the answer still goes out after the client's half-close
    await conn.write(b"got:" + got)
    await conn.close()


async def _slow_stream(req: Request):  # type: ignore[no-untyped-def]
    stream = await req.stream()
    await req.app.release.wait()
    await stream.write(b'{"done":true}\n')
    return stream


def _app() -> App:
    app = App(_Engine())
    app.release = asyncio.Event()  # type: ignore[attr-defined]
    app.router.add("POST", "/test/hijack", _echo_hijack)
    app.router.add("GET", "/test/stream", _slow_stream)
    return app


async def _serve(tmp_path: Path) -> tuple[ApiServer, str]:
    server = ApiServer(_app())
    path = str(tmp_path / "api.sock")
    await server.listen_unix(path)
    return server, path


async def _request(path: str, raw: bytes, *, half_close: bool = False) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    if half_close:
        writer.write_eof()
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_ping_headers_and_versions(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve(tmp_path)
        try:
            head = await _request(path, b"HEAD /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            for h in (b"Api-Version: 1.41", b"Docker-Experimental: false", b"Ostype: linux",
                      b"Cache-Control: no-cache, no-store, must-revalidate", b"Pragma: no-cache",
                      b"Content-Length: 0"):
                assert h in head
            get = await _request(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert get.endswith(b"\r\n\r\nOK")
            new = await _request(path, b"GET /v1.45/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert new.startswith(b"HTTP/1.1 400 Bad Request")
            assert new.endswith(b'{"message":"client version 1.45 is too new. Maximum supported API version is 1.41"}\n')
            assert b"Docker-Experimental" not in new
            old = await _request(path, b"GET /v1.11/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"Content-Type: text/plain; charset=utf-8" in old
            assert old.endswith(b"client version 1.11 is too old. Minimum supported API version is 1.24, "
                                b"please upgrade your client to a newer version\n")
            missing = await _request(path, b"GET /v1.41/nosuchendpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404") and missing.endswith(b'{"message":"page not found"}\n')
            later = await _request(path, b"POST /v1.41/build HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            assert later.startswith(b"HTTP/1.1 501") and b"image build is not implemented" in later
        finally:
            await server.close()

    asyncio.run(main())


def test_keep_alive_serves_requests_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve(tmp_path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            for _ in range(3):
                writer.write(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            data = b""
            while data.count(b"\r\n\r\nOK") < 3:
                chunk = await asyncio.wait_for(reader.read(4096), 5)
                assert chunk, "connection closed early"
                data += chunk
            writer.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_hijack_keeps_writing_after_client_half_close(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve(tmp_path)
        try:
            req = (b"POST /v1.41/test/hijack HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                   b"Content-Length: 0\r\n\r\nhello stdin")
            out = await _request(path, req, half_close=True)
            assert out.startswith(b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
                                  b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
            assert out.endswith(b"got:hello stdin")
        finally:
            await server.close()

    asyncio.run(main())


def test_stream_head_is_sent_before_the_body(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve(tmp_path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"GET /test/stream HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert b"200 OK" in head and b"Transfer-Encoding: chunked" in head
            server.app.release.set()  # type: ignore[attr-defined]
            body = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
            assert b'{"done":true}' in body
            writer.close()
        finally:
            await server.close()

    asyncio.run(main())
