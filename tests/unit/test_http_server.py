"""Our HTTP/1.1 server over a real Unix socket: Docker's ping headers, version errors, 404/501,
streaming heads sent at once, and the hijack surviving a client half-close."""
from __future__ import annotations

import asyncio
import http.client
import re
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.api.http import Request, json_response
from asyncdock.api.server import ApiServer, App
from asyncdock.config import DaemonConfig


class _Engine:
    """The app needs an engine object only for handlers that use it (these routes do not) and
    for its configuration (the served API range's floor)."""

    def __init__(self, min_api_version: str = "") -> None:
        self.config = DaemonConfig(min_api_version=min_api_version)


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


def _app(min_api_version: str = "") -> App:
    app = App(_Engine(min_api_version))
    app.release = asyncio.Event()  # type: ignore[attr-defined]
    app.router.add("POST", "/test/hijack", _echo_hijack)
    app.router.add("GET", "/test/stream", _slow_stream)
    return app


async def _serve(tmp_path: Path, min_api_version: str = "") -> tuple[ApiServer, str]:
    server = ApiServer(_app(min_api_version))
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
            for h in (b"Api-Version: 1.54", b"Docker-Experimental: false", b"Ostype: linux",
                      b"Cache-Control: no-cache, no-store, must-revalidate", b"Pragma: no-cache",
                      b"Content-Length: 0"):
                assert h in head
            get = await _request(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert get.endswith(b"\r\n\r\nOK")
            new = await _request(path, b"GET /v1.55/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert new.startswith(b"HTTP/1.1 400 Bad Request")
            assert new.endswith(b'{"message":"client version 1.55 is too new. Maximum supported API version is 1.54"}\n')
            assert b"Docker-Experimental" not in new
            # Docker 29's versionUnsupportedError is an InvalidParameter: JSON, as every other error
            # (dockerd 20.10 answered this one alone in text/plain)
            old = await _request(path, b"GET /v1.23/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert old.startswith(b"HTTP/1.1 400 Bad Request") and b"Content-Type: application/json" in old
            assert old.endswith(b'{"message":"client version 1.23 is too old. Minimum supported API version is 1.24, '
                                b'please upgrade your client to a newer version"}\n')
            missing = await _request(path, b"GET /v1.41/nosuchendpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404") and missing.endswith(b'{"message":"page not found"}\n')
            later = await _request(path, b"POST /v1.41/session HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            assert later.startswith(b"HTTP/1.1 501") and b"build sessions is not implemented" in later
        finally:
            await server.close()

    asyncio.run(main())


def test_configured_floor_refuses_older_versions(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve(tmp_path, min_api_version="1.44")
        try:
            old = await _request(path, b"GET /v1.43/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert old.startswith(b"HTTP/1.1 400") and old.endswith(
                b'"client version 1.43 is too old. Minimum supported API version is 1.44, '
                b'please upgrade your client to a newer version"}\n')
            ok = await _request(path, b"GET /v1.44/_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"OK")
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


# ---- request bodies nobody reads, protocol abuse, many connections (issue 12, items 6 and 7)

class _UnixHTTP(http.client.HTTPConnection):
    """http.client as docker-py uses it: the whole body is written before the answer is read."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _post_then_read(path: str, url: str, body: bytes | Iterator[bytes], headers: dict[str, str] | None = None,
                    then: str | None = None) -> tuple[int, bytes, float, int | None]:
    """(status, body, seconds until the answer, status of a second request on the same
    connection or None when the server closed it)."""
    conn = _UnixHTTP(path)
    start = time.monotonic()
    try:
        try:
            conn.request("POST", url, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed after answering: the answer is still there to read (urllib3 does this)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.monotonic() - start
        second = None
        if then is not None and not resp.will_close:
            conn.request("GET", then)
            second = conn.getresponse().status
        return resp.status, data, elapsed, second
    finally:
        conn.close()


async def _echo_body(req: Request):  # type: ignore[no-untyped-def]
    return json_response({"len": len(await req.body())})


def _app_more() -> App:
    app = _app()
    app.router.add("POST", "/test/echo", _echo_body)
    return app


async def _serve_more(tmp_path: Path) -> tuple[ApiServer, str]:
    server = ApiServer(_app_more())
    path = str(tmp_path / "api.sock")
    await server.listen_unix(path)
    return server, path


@pytest.mark.parametrize("url,status", [("/v1.41/plugins/pull", 501), ("/v1.41/nosuchroute", 404)])
def test_unread_large_body_is_answered_at_once_and_the_connection_closed(tmp_path: Path, url: str, status: int) -> None:
    """A 501 handler (a task) and a 404 from routing (inline) answer before reading a 16 MiB body;
    a client that writes it all before reading must get the answer, not wait for a server that
    stopped reading (it hung until its own 300 s timeout before)."""
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            got, body, elapsed, second = await asyncio.wait_for(
                asyncio.to_thread(_post_then_read, path, url, b"x" * (16 << 20),
                                  {"Content-Type": "application/x-tar"}, "/_ping"), 20)
            assert got == status, body
            assert b'"message"' in body
            assert elapsed < 1.0, elapsed
            assert second is None  # more than 256 KiB left unread: closed, as Go does
        finally:
            await server.close()

    asyncio.run(main())


@pytest.mark.parametrize("url,status", [("/v1.41/plugins/pull", 501), ("/v1.41/nosuchroute", 404)])
def test_unread_small_body_is_drained_and_the_connection_kept(tmp_path: Path, url: str, status: int) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            got, _, elapsed, second = await asyncio.wait_for(
                asyncio.to_thread(_post_then_read, path, url, b"x" * (200 << 10), None, "/_ping"), 20)
            assert got == status and elapsed < 1.0, (got, elapsed)
            assert second == 200  # the next request on the same connection is served
        finally:
            await server.close()

    asyncio.run(main())


def test_unread_chunked_body_past_the_drain_limit_closes(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"y" * (64 << 10)  # 4 MiB in all, length unknown up front

    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            # http.client sends an iterator chunked
            got, _, elapsed, second = await asyncio.wait_for(
                asyncio.to_thread(_post_then_read, path, "/v1.41/plugins/pull", chunks(), None, "/_ping"), 20)
            assert got == 501 and elapsed < 1.0, (got, elapsed)
            assert second is None
            # a small chunked body left unread is drained and the connection kept
            got, _, _, second = await asyncio.wait_for(
                asyncio.to_thread(_post_then_read, path, "/v1.41/plugins/pull", iter([b"z" * 1000] * 3),
                                  None, "/_ping"), 20)
            assert (got, second) == (501, 200)
        finally:
            await server.close()

    asyncio.run(main())


def _exchange_blocking(path: str, raw: bytes, half_close: bool, timeout: float) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: the answer is still readable
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
        return out
    finally:
        sock.close()


async def _exchange(path: str, raw: bytes, *, half_close: bool = False, timeout: float = 5) -> bytes:
    """Send raw bytes as a blocking client does (all of them first), read until the server closes."""
    return await asyncio.to_thread(_exchange_blocking, path, raw, half_close, timeout)


def test_malformed_framing_is_answered_and_closed(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            cases = {
                # a chunk size that is not hex, one that overflows
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n": b"400",
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n": b"400",
                # both framings at once (a smuggling attempt): refused, never guessed
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": b"400",
                # two different lengths, a negative one
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef": b"400",
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n": b"400",
                # a transfer coding other than chunked: Go's 501
                b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc": b"501",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n": b"400",
            }
            for raw, status in cases.items():
                out = await _exchange(path, raw)
                assert out.startswith(b"HTTP/1.1 " + status), (raw, out)
                assert b"Connection: close" in out and out.endswith(b"}\n"), out
                assert out.count(b"HTTP/1.1") == 1, out
        finally:
            await server.close()

    asyncio.run(main())


def test_a_bad_chunk_fails_the_reading_handler_and_a_cut_body_is_not_taken_whole(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            out = await _exchange(path, b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                        b"3\r\nabc\r\nXYZ\r\n")
            assert out.startswith(b"HTTP/1.1 400") and b"Connection: close" in out, out
            # 10 bytes promised, 3 sent, then the write side closed: a 400, not {"len":3}
            out = await _exchange(path, b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                                  half_close=True)
            assert out.startswith(b"HTTP/1.1 400") and b"ended before its declared length" in out, out
        finally:
            await server.close()

    asyncio.run(main())


def test_expect_continue_is_answered_when_the_handler_reads(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"abcd")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readuntil(b"}\n"), 5) == b'{"len":4}\n'
            writer.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_header_limits(tmp_path: Path) -> None:
    """Go's 1 MiB for the request line and headers: past it 431; a flood of small headers
    under it (one name 100,000 times) is answered quickly, not in quadratic time."""
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            huge = b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n"
            out = await _exchange(path, huge)
            assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large") and b"Connection: close" in out
            many = b"".join(b"X-H%d: v\r\n" % i for i in range(200_000))
            out = await _exchange(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
            assert out.startswith(b"HTTP/1.1 431"), out[:100]
            url = b"GET /_ping?" + b"q" * (2 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            assert (await _exchange(path, url)).startswith(b"HTTP/1.1 431")
            flood = b"X-Same: v\r\n" * 80_000  # ~880 KB: under the limit
            start = time.monotonic()
            out = await _exchange(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\n" + flood + b"Connection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"OK"), out[:200]
            assert time.monotonic() - start < 3
        finally:
            await server.close()

    asyncio.run(main())


def test_pipelined_requests_are_answered_in_order_up_to_a_bad_one(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            raw = (b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                   b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"POST /v1.41/plugins/pull HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345"
                   b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"BROKEN\r\n\r\n"
                   b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
            out = await _exchange(path, raw)
            statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
            assert statuses == [b"200", b"200", b"501", b"200", b"400"], out
            assert out.index(b'{"len":3}') < out.index(b"\r\n\r\nOK")
        finally:
            await server.close()

    asyncio.run(main())


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _ping(path: str) -> bytes:
    return await _exchange(path, b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


def test_idle_connections_do_not_slow_requests(tmp_path: Path) -> None:
    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        idle = []
        try:
            for i in range(200):
                reader, writer = await asyncio.open_unix_connection(path)
                if i % 2:
                    writer.write(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")  # half a head, then nothing
                idle.append(writer)
            start = time.monotonic()
            for _ in range(50):
                assert (await asyncio.wait_for(_ping(path), 2)).endswith(b"OK")
            assert time.monotonic() - start < 5
        finally:
            for w in idle:
                w.close()
            await server.close()

    asyncio.run(main())


def test_a_thousand_concurrent_connections(tmp_path: Path) -> None:
    _raise_nofile(4096)  # 1,000 client and 1,000 server sockets in this one process

    async def main() -> None:
        server, path = await _serve_more(tmp_path)
        try:
            async def one(i: int) -> bytes:
                body = b'{"i":%d}' % i
                return await _exchange(path, b"POST /test/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                             b"Content-Length: %d\r\n\r\n%b" % (len(body), body), timeout=30)
            outs = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 60)
            assert all(o.startswith(b"HTTP/1.1 200") for o in outs)
        finally:
            await server.close()

    asyncio.run(main())
