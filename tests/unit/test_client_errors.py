"""What a client is told about errors: one line a person can act on, never Python's own text
(`[Errno 22] Invalid argument: 17`, aiohttp's `ssl:<ssl.SSLContext object at 0x...>`) and never a
traceback; the traceback goes to the daemon log at debug level only."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from asyncdock.api.http import Request
from asyncdock.config import DaemonConfig
from asyncdock.api.server import ApiServer, App
from asyncdock.util.errtext import client_text, connection_error_text, os_error_text


class _Engine:
    config = DaemonConfig()


async def _errno_bug(req: Request) -> None:
    os.stat(2 ** 20)  # EBADF on an fd number: "[Errno 9] Bad file descriptor: 1048576"


async def _key_bug(req: Request) -> None:
    raise KeyError("line one\nline two")


def test_a_bug_answers_500_with_one_line_and_logs_the_traceback_at_debug(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> list[bytes]:
        app = App(_Engine())
        app.router.add("GET", "/test/errno", _errno_bug)
        app.router.add("GET", "/test/key", _key_bug)
        server = ApiServer(app)
        path = str(tmp_path / "api.sock")
        await server.listen_unix(path)
        out = []
        try:
            for target in ("/test/errno", "/v1.41/test/key"):
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                out.append(await asyncio.wait_for(reader.read(), 5))
                writer.close()
        finally:
            await server.close()
        return out

    with caplog.at_level(logging.DEBUG, logger="asyncdock"):
        errno_answer, key_answer = asyncio.run(main())
    for answer in (errno_answer, key_answer):
        assert answer.startswith(b"HTTP/1.1 500 ")
    errno_msg = json.loads(errno_answer.split(b"\r\n\r\n", 1)[1])["message"]
    key_msg = json.loads(key_answer.split(b"\r\n\r\n", 1)[1])["message"]
    assert errno_msg == "internal error: 1048576: Bad file descriptor"
    assert key_msg == "internal error: KeyError: 'line one\\nline two'"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "error serving GET /test/errno: 1048576: Bad file descriptor",
        "error serving GET /v1.41/test/key: KeyError: 'line one\\nline two'"]
    assert all(r.exc_info is None for r in errors)  # the traceback is not at error level
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(debug) == 2


def test_os_errors_read_operation_path_strerror() -> None:
    try:
        open("/nonexistent-h12/x")
    except OSError as e:
        assert str(e).startswith("[Errno 2]")
        assert os_error_text(e, "open") == "open /nonexistent-h12/x: No such file or directory"
        assert client_text(e) == "/nonexistent-h12/x: No such file or directory"
    # the engine's own sentence is kept, without the errno number
    assert client_text(OSError(22, "mount overlay on /x: Invalid argument")) == \
        "mount overlay on /x: Invalid argument"


def test_a_refused_registry_connection_reads_as_go_writes_it() -> None:
    """A real connection to a closed loopback port over https with our own SSL context (the
    case whose aiohttp text held the context's repr)."""
    async def main() -> list[tuple[str, str]]:
        got = []
        async with aiohttp.ClientSession() as session:
            for url, ctx in (("https://127.0.0.1:1/v2/", ssl.create_default_context()),
                             ("http://127.0.0.1:1/v2/", None)):
                try:
                    async with session.get(url, ssl=ctx if ctx is not None else True):
                        pass
                except aiohttp.ClientError as e:
                    got.append((str(e), connection_error_text(e)))
        return got

    results = asyncio.run(main())
    assert len(results) == 2
    assert "ssl:<ssl.SSLContext object" in results[0][0]  # what aiohttp says
    for _, text in results:
        assert text == "dial tcp 127.0.0.1:1: connect: connection refused"
