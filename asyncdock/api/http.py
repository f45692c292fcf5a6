"""Our own HTTP/1.1 server on asyncio + httptools (llhttp).

Why not aiohttp's server: Docker's attach and exec hijack the connection (`Upgrade: tcp`, which
aiohttp's C parser rejects), and the docker CLI half-closes its write side at stdin EOF while it
still expects all output (aiohttp closes the transport on EOF). Owning the protocol also keeps the
hot paths (ping, list, inspect) at one small allocation per request.

One connection runs one request at a time (HTTP/1.1 pipelining is served in order). The handler
of a request runs as a task; a streaming handler (`req.stream()`) is cancelled when the client goes
away, a plain one is left to finish so that state changes are never cut in half.

Limits, as Go's net/http (Docker's server) has them: request line and headers together at most
1 MiB (431 past that); a body the handler did not read is drained up to 256 KiB after the answer
so the connection can serve the next request, and past that the connection is closed (a client
that writes its whole body before reading, as docker-py and http.client do, then gets an error on
its write and reads the answer instead of waiting for a server that stopped reading).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import httptools
import msgspec

from ..base import errors

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[["Request"], Awaitable["Response | StreamResponse | Hijack"]]

_REASONS = {
    101: "UPGRADED", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}
_FALSE = frozenset(("", "0", "no", "false", "none"))
_json_encoder = msgspec.json.Encoder()
_MAX_BODY_BUFFER = 1 << 20  # pause reading past this much unread request body
# Go's DefaultMaxHeaderBytes plus the 4 KiB it allows for its read buffer.
_MAX_HEADER_BYTES = (1 << 20) + 4096
# Go's maxPostHandlerReadBytes: what is drained of an unread body to keep the connection.
_MAX_DISCARD = 256 << 10
# How long the drain waits for the rest of such a body before closing instead (a client that
# stalls mid-body holds only its own connection, and only this long).
_DISCARD_WAIT = 2.0
# Pipelined requests parsed ahead of the one being served: past this, reading pauses.
_MAX_PIPELINE = 32


class DateCache:
    """`Date:` changes once a second; formatting it per request costs more than a ping."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status: int = 200, body: bytes = b"", *, content_type: str | None = "application/json",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_response(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, _json_encoder.encode(obj) + b"\n", headers=headers)


def raw_json_response(body: bytes, status: int = 200) -> Response:
    """For bodies already encoded (kept-ready structs on hot paths)."""
    return Response(status, body)


def empty_response(status: int = 204) -> Response:
    return Response(status, b"", content_type=None)


def _one_line(message: str) -> str:
    """Control characters echoed from a request (a name with a newline in it) escaped: an
    error a client shows is one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)


def error_response(message: str, status: int) -> Response:
    return Response(status, _json_encoder.encode({"message": _one_line(message)}) + b"\n")


class Router:
    """Routes by method, then by literal first segment, then by regex, in registration order."""

    def __init__(self) -> None:
        import re

        self._re = re
        self._routes: dict[str, dict[str, list[tuple[Any, Handler]]]] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = "^"
        pos = 0
        for m in self._re.finditer(r"\{(\w+)(?::([^}]+))?\}", pattern):
            regex += self._re.escape(pattern[pos:m.start()])
            regex += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
            pos = m.end()
        regex += self._re.escape(pattern[pos:]) + "$"
        first = pattern.split("/")[1]
        key = "*" if first.startswith("{") else first
        self._routes.setdefault(method, {}).setdefault(key, []).append((self._re.compile(regex), handler))
        if method == "GET":
            self._routes.setdefault("HEAD", {}).setdefault(key, [])

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None | bool:
        """(handler, params); None when no route has the path; False when the path exists for
        another method only."""
        first = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        found = self._match(self._routes.get(method), first, path)
        if found is not None:
            return found
        for other, table in self._routes.items():
            if other != method and self._match(table, first, path) is not None:
                return False
        return None

    @staticmethod
    def _match(table: dict[str, list[tuple[Any, Handler]]] | None, first: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        if not table:
            return None
        for key in (first, "*"):
            for regex, handler in table.get(key, ()):
                m = regex.match(path)
                if m is not None:
                    return handler, {k: unquote(v) for k, v in m.groupdict().items()}
        return None


class Request:
    __slots__ = ("method", "path", "raw_query", "headers", "match", "api_version", "engine", "_conn",
                 "_body", "_body_done", "_body_waiter", "_query", "_stream", "_hijack", "app",
                 "keep_alive", "upgrade", "version_rejected", "_body_seen", "_body_error",
                 "content_length", "_expect_continue")

    def __init__(self, conn: HttpConnection, method: str, path: str, raw_query: str,
                 headers: dict[str, str], keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.raw_query = raw_query
        self.headers = headers
        self.keep_alive = keep_alive
        self.match: dict[str, str] = {}
        # set by App.prepare: the path's version, or the newest for an unversioned path
        self.api_version: tuple[int, int] = (1, 54)
        self.engine: Any = None
        self.app: Any = None
        self._body = bytearray()
        self._body_done = False
        self._body_waiter: asyncio.Future[None] | None = None
        self._query: dict[str, str] | None = None
        self._stream: StreamResponse | None = None
        self._hijack: Hijack | None = None
        self.upgrade = False
        self.version_rejected = False
        self._body_seen = 0
        # why the body will never be whole (cut short, malformed chunks): reading it raises
        self._body_error: BaseException | None = None
        cl = headers.get("content-length")
        self.content_length = int(cl) if cl and "transfer-encoding" not in headers else None
        # a 100 Continue is owed before the client sends the body (sent on the first read)
        self._expect_continue = headers.get("expect", "").strip().lower() == "100-continue"

    # ---- query
    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            self._query = dict(parse_qsl(self.raw_query, keep_blank_values=True))
        return self._query

    def query_list(self, key: str) -> list[str]:
        return [v for k, v in parse_qsl(self.raw_query, keep_blank_values=True) if k == key]

    def arg_bool(self, key: str, default: bool = False) -> bool:
        value = self.query.get(key)
        if value is None:
            return default
        return value.strip().lower() not in _FALSE

    def arg_int(self, key: str, default: int | None = None) -> int | None:
        value = self.query.get(key)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                raise errors.InvalidParameter(f"invalid value for {key}: {value!r}") from None

    # ---- body
    def _feed_body(self, data: bytes) -> None:
        self._body += data
        self._body_seen += len(data)
        self._wake_body()
        if len(self._body) > _MAX_BODY_BUFFER:
            self._conn._sync_reading()

    def _end_body(self) -> None:
        self._body_done = True
        self._wake_body()

    def _fail_body(self, exc: BaseException) -> None:
        if not self._body_done:
            self._body_error = exc
            self._end_body()

    def _start_body(self) -> None:
        """The handler wants the body: send the 100 Continue the client may be waiting for."""
        if self._expect_continue:
            self._expect_continue = False
            if not self._body_done:
                self._conn._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _raise_body_error(self) -> None:
        if self._body_error is not None:
            raise self._body_error

    def _wake_body(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def body(self) -> bytes:
        self._start_body()
        while not self._body_done:
            await self._wait_body()
        self._raise_body_error()
        return bytes(self._body)

    async def body_chunks(self) -> Any:
        """Yield the request body as it arrives (uploads: PUT archive, image load)."""
        self._start_body()
        while True:
            if self._body:
                chunk = bytes(self._body)
                self._body.clear()
                self._conn._sync_reading()
                yield chunk
            elif self._body_done:
                self._raise_body_error()
                return
            else:
                await self._wait_body()

    async def _wait_body(self) -> None:
        self._body_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._body_waiter
        finally:
            self._body_waiter = None

    async def json(self, type_: type[T] | Any = Any, *, allow_empty: bool = True) -> T:
        raw = await self.body()
        ct = self.headers.get("content-type", "")
        if not raw.strip():
            if allow_empty:
                return msgspec.convert({}, type_) if type_ is not Any else None  # type: ignore[return-value]
            raise errors.InvalidParameter("request body is empty")
        if ct and ct.split(";", 1)[0].strip().lower() != "application/json":
            raise errors.InvalidParameter(f"Content-Type specified ({ct}) must be 'application/json'")
        try:
            if b"null" not in raw:
                return msgspec.json.decode(raw, type=type_, strict=False)
            # Go's decoder leaves a field sent as null at its zero value, as if it were absent
            # (docker-py sends {"Healthcheck": {"Interval": null, ...}}); so does ours.
            plain = drop_nulls(msgspec.json.decode(raw))
            if type_ is Any:
                return plain  # type: ignore[no-any-return]
            return msgspec.convert({} if plain is None else plain, type_, strict=False)
        except msgspec.ValidationError as e:
            raise errors.InvalidParameter(f"invalid request: {e}") from None
        except msgspec.DecodeError as e:
            raise errors.InvalidParameter(f"invalid JSON: {e}") from None

    # ---- streaming and hijack
    async def stream(self, status: int = 200, content_type: str | None = "application/json",
                     headers: list[tuple[str, str]] | None = None) -> StreamResponse:
        """Send the head now (clients wait for it) and return a writer of chunked body data."""
        s = StreamResponse(self._conn, self)
        self._stream = s
        self._conn._cancellable = True
        s._send_head(status, content_type, headers)
        return s

    async def hijack(self, multiplexed: bool = False) -> Hijack:
        """Take the connection over for raw bytes both ways (attach, exec start)."""
        await self.body()
        h = Hijack(self._conn, hold_until_head_read=True)
        self._hijack = h
        ct = b"application/vnd.docker.raw-stream"
        if multiplexed and self.api_version >= (1, 42):
            ct = b"application/vnd.docker.multiplexed-stream"
        if self.upgrade:
            head = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: " + ct + b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: " + ct + b"\r\n\r\n"
        self._conn._enter_raw(h)
        self._conn._write(head)
        return h

    async def hijack_with(self, head: bytes) -> Hijack:
        """Take the connection over after answering with `head` (the websocket handshake)."""
        await self.body()
        h = Hijack(self._conn)
        self._hijack = h
        self._conn._enter_raw(h)
        self._conn._write(head)
        return h

    @property
    def disconnected(self) -> asyncio.Future[None]:
        return self._conn.closed


class StreamResponse:
    """A chunked response whose head is already on the wire."""

    def __init__(self, conn: HttpConnection, req: Request) -> None:
        self._conn = conn
        self._req = req
        self.finished = False
        self.chunked = True

    def _send_head(self, status: int, content_type: str | None, headers: list[tuple[str, str]] | None) -> None:
        extra = list(headers or [])
        if content_type is not None:
            extra.append(("Content-Type", content_type))
        extra.append(("Transfer-Encoding", "chunked"))
        self._conn._write(self._conn._head(status, extra, self._req))

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._conn.closed.done():
            raise ConnectionResetError("client went away")
        self._conn._write(b"%x\r\n%b\r\n" % (len(data), data))
        await self._conn._drain()

    def write_nowait(self, data: bytes) -> None:
        if data and not self._conn.closed.done():
            self._conn._write(b"%x\r\n%b\r\n" % (len(data), data))

    def close(self) -> None:
        """End the body and close the connection (a reader that must reconnect)."""
        self.finish()
        self._conn._close()

    def abort(self) -> None:
        """Drop the connection at once, unsent data included (Docker drops readers that fall
        behind instead of buffering for them)."""
        self.finished = True
        if self._conn._transport is not None:
            self._conn._transport.abort()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            if not self._conn.closed.done():
                self._conn._write(b"0\r\n\r\n")


def drop_nulls(value: Any) -> Any:
    """Decoded JSON without the object members whose value is null, at any depth (Go's view of
    them: absent). Nulls in arrays stay, for the shape check to refuse."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def _unread_by_peer(sock: Any) -> int | None:
    """Bytes sent on a Unix stream socket that its peer has not read yet; None where the kernel
    does not know (TCP counts unacknowledged bytes, not unread ones)."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    except OSError:
        return None
    unread: int = struct.unpack("i", out)[0]
    return unread


class Hijack:
    """The raw two-way stream after a 101 (or a 200 raw-stream). EOF from the client is a
    half-close: reading returns b"" but writing goes on until `close()`."""

    def __init__(self, conn: HttpConnection, *, hold_until_head_read: bool = False) -> None:
        self._conn = conn
        self._buf: deque[bytes] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self._hold = hold_until_head_read

    def _feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._wake()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """Next bytes from the client; b"" once it half-closed or went away."""
        while True:
            if self._buf:
                return self._buf.popleft()
            if self._eof or self._conn.closed.done():
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write_nowait(self, data: bytes) -> None:
        if data and not self._conn.closed.done():
            self._conn._write(data)

    async def write(self, data: bytes) -> None:
        if self._hold:
            # docker-py reads the 101 head through http.client's buffered reader and the stream
            # from the raw socket after it (APIClient._get_raw_response_socket): whatever
            # reached its socket together with the head is lost to it. A process's first
            # output is often there before a busy client read the head.
            await self._conn._peer_read_all()
            self._hold = False
        if self._conn.closed.done():
            raise ConnectionResetError("client went away")
        self._conn._write(data)
        await self._conn._drain()

    @property
    def client_gone(self) -> asyncio.Future[None]:
        return self._conn.closed

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._conn._close()


class HttpConnection(asyncio.Protocol):
    """One client connection. Parsing happens in data_received; handlers run as tasks."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._repeated: dict[str, list[str]] | None = None  # header names seen more than once
        self._last_field = ""
        self._in_head = False  # between the first byte of a request and the end of its headers
        self._head_bytes = 0  # of the current head as llhttp hands it over (url, header lines)
        self._head_raw = 0  # raw bytes received while a head was still incomplete
        self._head_error: tuple[int, str] | None = None  # found by a parser callback
        self._broken = False  # the byte stream can no longer be parsed: nothing more is read
        self._deferred_error: tuple[int, str] | None = None  # answered after the requests before it
        self._current: Request | None = None
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._raw: Hijack | None = None
        self._raw_pending = b""
        self._upgrade_body = 0
        self._eof = False
        self._cancellable = False
        self._paused_reading = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw._feed(data)
            return
        if self._broken:
            return
        if self._upgrade_body or self._raw_pending:
            self._take_upgrade_bytes(data)
            return
        if self._in_head:
            # llhttp keeps a header that is still arriving to itself: count the raw bytes too
            self._head_raw += len(data)
            if self._head_raw > _MAX_HEADER_BYTES:
                self._protocol_error(431, "request header fields too large")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._take_upgrade_bytes(data[e.args[0]:])
        except httptools.HttpParserError as e:
            if self._head_error is not None:
                self._protocol_error(*self._head_error)
            else:
                self._protocol_error(400, f"bad request: {e}")

    def eof_received(self) -> bool:
        # A half-close: tell the hijacked stream (stdin EOF) and keep the transport open so
        # output can still be written. A plain request that is still running may also answer.
        if self._raw is not None:
            self._raw._feed_eof()
            return True
        self._eof = True
        cur = self._current
        if cur is not None:
            # a body still owed is cut short: the handler must not take it as whole
            cur._fail_body(errors.InvalidParameter("request body ended before its declared length"))
            if cur._body_done and cur._stream is not None and not cur._stream.finished:
                # EOF while a streamed answer is under way: the client is gone (Go's server
                # cancels the request's context on it: a build, a pull, `logs -f` stop)
                return False
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if self._raw is not None:
            self._raw._feed_eof()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._current is not None:
            self._current._fail_body(ConnectionResetError("client went away"))
        if self._task is not None and not self._task.done() and self._cancellable:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._sync_reading()  # a client that sends requests but reads no answers is held back

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        self._sync_reading()

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._repeated = None
        self._in_head = True
        self._head_bytes = 0
        self._head_raw = 0

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > _MAX_HEADER_BYTES:
            self._head_error = (431, "request header fields too large")
            raise ValueError(self._head_error[1])  # stops llhttp; answered in data_received

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        if key in self._headers:
            # joined once at the end: repeated `+=` on a flood of one name is quadratic
            if self._repeated is None:
                self._repeated = {}
            self._repeated.setdefault(key, [self._headers[key]]).append(val)
        else:
            self._headers[key] = val

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._repeated:
            for key, values in self._repeated.items():
                self._headers[key] = ", ".join(values)
            self._repeated = None
        te = self._headers.get("transfer-encoding")
        if te is not None and te.strip().lower() != "chunked":
            # as Go: one coding, chunked, or 501 (llhttp would take "gzip, chunked")
            self._head_error = (501, f"unsupported transfer encoding: {te!r}")
            raise ValueError(self._head_error[1])
        parsed = httptools.parse_url(self._url)
        path = parsed.path.decode("latin-1")
        query = parsed.query.decode("latin-1") if parsed.query else ""
        req = Request(self, self._parser.get_method().decode(), path, query, self._headers,
                      self._parser.should_keep_alive())
        if self._parser.should_upgrade():
            req.upgrade = True
            self._upgrade_body = int(self._headers.get("content-length", "0") or 0)
            if not self._upgrade_body:
                req._end_body()
        elif "content-length" not in self._headers and "transfer-encoding" not in self._headers:
            req._end_body()  # no body will come: inline handlers need not wait for it
        self._current = req
        self._queue.append(req)
        if self._task is None:
            self._start_next()
        else:
            self._sync_reading()

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current._feed_body(body)

    def on_message_complete(self) -> None:
        if self._current is not None and not self._current.upgrade:
            self._current._end_body()

    # ---- upgrade body (llhttp leaves it in the raw bytes)
    def _take_upgrade_bytes(self, data: bytes) -> None:
        req = self._current
        if req is None:
            return
        if self._upgrade_body:
            part = data[: self._upgrade_body]
            self._upgrade_body -= len(part)
            req._feed_body(part)
            data = data[len(part):]
            if not self._upgrade_body:
                req._end_body()
        if data:
            # stdin that came before the handler took the connection over: keep it for it
            self._raw_pending += data

    def _enter_raw(self, hijack: Hijack) -> None:
        self._raw = hijack
        self._cancellable = False
        if self._raw_pending:
            hijack._feed(self._raw_pending)
            self._raw_pending = b""
        self._sync_reading()

    # ---- request dispatch
    def _start_next(self) -> None:
        while self._queue:
            req = self._queue.popleft()
            self._sync_reading()
            self._cancellable = False
            handler = self._app.prepare(req)
            if isinstance(handler, Response) or self._app.is_inline(handler):
                # answered from memory: no task, no extra loop iteration
                resp = handler if isinstance(handler, Response) else self._app.call_inline(req, handler)
                if not req._body_done:
                    # its body is still arriving: drop it (bounded) before answering
                    self._task = asyncio.get_running_loop().create_task(self._answer_after_drain(req, resp))
                    return
                self._send(req, resp)
                if not req.keep_alive or self._eof:
                    self._task = None
                    self._close()
                    return
                if self._current is req:
                    self._current = None
                continue
            self._task = asyncio.get_running_loop().create_task(self._run(req, handler))
            return
        self._task = None
        if self._deferred_error is not None:
            self._answer_error(*self._deferred_error)

    async def _answer_after_drain(self, req: Request, resp: Response) -> None:
        await self._settle_unread_body(req)
        self._send(req, resp)
        if not req.keep_alive or self._eof or self.closed.done():
            self._task = None
            self._close()
            return
        if self._current is req:
            self._current = None
        self._start_next()

    async def _settle_unread_body(self, req: Request) -> None:
        """Before the answer to a request whose body is not all read (as Go's server does):
        drop up to 256 KiB of what is left so the connection can serve the next request; when
        more is left (known from Content-Length, or found by draining a chunked body), or the
        client waits for a 100 Continue never sent, or it stalls, the answer says Connection:
        close and the connection is closed after it, unread bytes and all."""
        if req._body_done:
            if req._body_error is not None:
                req.keep_alive = False
            return
        left = None if req.content_length is None else req.content_length - req._body_seen + len(req._body)
        if req._expect_continue or (left is not None and left > _MAX_DISCARD):
            req.keep_alive = False
        elif not await self._drain_unread_body(req):
            req.keep_alive = False

    async def _drain_unread_body(self, req: Request) -> bool:
        """Read and drop the rest of a body nobody read, up to 256 KiB and for a bounded time;
        True when it ended in that (the next request can be parsed), False to close."""
        budget = _MAX_DISCARD
        try:
            async with asyncio.timeout(_DISCARD_WAIT):
                while True:
                    budget -= len(req._body)
                    req._body.clear()
                    if budget < 0:
                        return False
                    if req._body_done:
                        return req._body_error is None
                    self._sync_reading()
                    await req._wait_body()
        except TimeoutError:
            return False

    async def _run(self, req: Request, handler: Any = None) -> None:
        try:
            result = await self._app.dispatch(req, handler)
        except asyncio.CancelledError:
            self._close()
            return
        except Exception:  # the app already maps errors; this is a last resort
            log.exception("unhandled error for %s %s", req.method, req.path)
            result = error_response("internal error", 500)
        if req._hijack is not None:
            # the handler owned the raw connection; it has closed it (or the client is gone)
            self._close()
            return
        if req._stream is not None:
            req._stream.finish()
            if not req.keep_alive:
                self._close()
        elif isinstance(result, Response):
            await self._settle_unread_body(req)
            self._send(req, result)
        if self.closed.done() or self._transport is None or self._transport.is_closing():
            return
        if not req.keep_alive or (self._eof and not self._queue):
            self._close()
            return
        # a body the handler never read must be consumed before the next request
        if not req._body_done and not await self._drain_unread_body(req):
            self._close()
            return
        if self._current is req:
            self._current = None
        self._start_next()

    def _send(self, req: Request, resp: Response) -> None:
        extra = list(resp.headers)
        if resp.status == 304 or resp.status == 204:
            if resp.content_type and resp.status != 204:
                extra.append(("Content-Type", resp.content_type))
            head = self._head(resp.status, extra, req)
            self._write(head)
            return
        if resp.content_type is not None:
            extra.append(("Content-Type", resp.content_type))
        extra.append(("Content-Length", str(len(resp.body))))
        head = self._head(resp.status, extra, req)
        if req.method == "HEAD":
            self._write(head)
        else:
            self._write(head + resp.body)

    def _head(self, status: int, headers: list[tuple[str, str]], req: Request | None) -> bytes:
        reason = _REASONS.get(status, "Unknown")
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())]
        lines.append(self._app.common_headers(req))
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        lines.append(b"Date: " + self._app.date.get() + b"\r\n")
        if req is not None and not req.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _protocol_error(self, status: int, message: str) -> None:
        """The bytes from the client are not HTTP we can go on parsing: answer `status` once
        the requests before it are answered (in order), then close."""
        self._broken = True
        self._in_head = False
        req = self._current
        if req is not None and not req._body_done:
            # its body is what broke (a bad chunk): the handler reading it gets the 400, and its
            # answer is the last on this connection
            req.keep_alive = False
            req._fail_body(errors.InvalidParameter(message))
            if self._task is None:
                self._close()
            return
        if self._task is None and not self._queue:
            self._answer_error(status, message)
        else:
            self._deferred_error = (status, message)

    def _answer_error(self, status: int, message: str) -> None:
        body = _json_encoder.encode({"message": message}) + b"\n"
        self._write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (status, _REASONS[status].encode(), len(body), body))
        self._close()

    # ---- transport helpers
    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _peer_read_all(self) -> None:
        """Until the client has read every byte written so far. Only a Unix socket tells (the
        kernel charges what the peer has not read to our send queue, SIOCOUTQ); elsewhere, and
        once the client is gone, at once. The kernel has no wake-up for it: polled, briefly."""
        delay = 0.0005
        while not self.closed.done() and self._transport is not None:
            if self._transport.get_write_buffer_size() == 0:
                unread = _unread_by_peer(self._transport.get_extra_info("socket"))
                if not unread:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def _drain(self) -> None:
        if self._write_paused and not self.closed.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def _sync_reading(self) -> None:
        """Read from the client unless that would only pile up memory: a request body nobody
        consumes, answers the client does not read, requests parsed far ahead of the one served.
        A hijacked stream is never held back here (its pumps have their own flow control)."""
        req = self._current
        hold = self._raw is None and (
            self._write_paused or len(self._queue) > _MAX_PIPELINE
            or (req is not None and len(req._body) > _MAX_BODY_BUFFER))
        if self._transport is None or self._transport.is_closing():
            return
        if hold and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()
        elif not hold and self._paused_reading:
            self._paused_reading = False
            self._transport.resume_reading()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
