"""Our own HTTP/1.1 server on asyncio + httptools (llhttp).

Why not aiohttp's server: Docker's attach and exec hijack the connection (`Upgrade: tcp`, which
aiohttp's C parser rejects), and the docker CLI half-closes its write side at stdin EOF while it
still expects all output (aiohttp closes the transport on EOF). Owning the protocol also keeps the
hot paths (ping, list, inspect) at one small allocation per request.

One connection runs one request at a time (HTTP/1.1 pipelining is served in order). The handler
of a request runs as a task; a streaming handler (`req.stream()`) is cancelled when the client goes
away, a plain one is left to finish so that state changes are never cut in half.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

import httptools
import msgspec

from .. import errors

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[["Request"], Awaitable["Response | StreamResponse | Hijack"]]

_REASONS = {
    101: "UPGRADED", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}
_FALSE = frozenset(("", "0", "no", "false", "none"))
_json_encoder = msgspec.json.Encoder()
_MAX_BODY_BUFFER = 1 << 20  # pause reading past this much unread request body


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


def error_response(message: str, status: int) -> Response:
    return Response(status, _json_encoder.encode({"message": message}) + b"\n")


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
                 "keep_alive", "upgrade", "version_rejected")

    def __init__(self, conn: HttpConnection, method: str, path: str, raw_query: str,
                 headers: dict[str, str], keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.raw_query = raw_query
        self.headers = headers
        self.keep_alive = keep_alive
        self.match: dict[str, str] = {}
        self.api_version: tuple[int, int] = (1, 41)
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
        self._wake_body()
        if len(self._body) > _MAX_BODY_BUFFER:
            self._conn._pause_reading()

    def _end_body(self) -> None:
        self._body_done = True
        self._wake_body()

    def _wake_body(self) -> None:
        w = self._body_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def body(self) -> bytes:
        while not self._body_done:
            await self._wait_body()
        return bytes(self._body)

    async def body_chunks(self) -> Any:
        """Yield the request body as it arrives (uploads: PUT archive, image load)."""
        while True:
            if self._body:
                chunk = bytes(self._body)
                self._body.clear()
                self._conn._resume_reading()
                yield chunk
            elif self._body_done:
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
            return msgspec.json.decode(raw, type=type_, strict=False)
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
        h = Hijack(self._conn)
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


class Hijack:
    """The raw two-way stream after a 101 (or a 200 raw-stream). EOF from the client is a
    half-close: reading returns b"" but writing goes on until `close()`."""

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn
        self._buf: deque[bytes] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

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
        self._last_field = ""
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
        if self._upgrade_body or self._raw_pending:
            self._take_upgrade_bytes(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._take_upgrade_bytes(data[e.args[0]:])
        except httptools.HttpParserError as e:
            self._bad_request(str(e))

    def eof_received(self) -> bool:
        # A half-close: tell the hijacked stream (stdin EOF) and keep the transport open so
        # output can still be written. A plain request that is still running may also answer.
        if self._raw is not None:
            self._raw._feed_eof()
            return True
        self._eof = True
        if self._current is not None:
            self._current._end_body()
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
            self._current._end_body()
        if self._task is not None and not self._task.done() and self._cancellable:
            self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        if key in self._headers:
            self._headers[key] += ", " + val
        else:
            self._headers[key] = val

    def on_headers_complete(self) -> None:
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
        self._resume_reading()

    # ---- request dispatch
    def _start_next(self) -> None:
        while self._queue:
            req = self._queue.popleft()
            self._cancellable = False
            handler = self._app.prepare(req)
            if isinstance(handler, Response) or self._app.is_inline(handler):
                # answered from memory: no task, no extra loop iteration
                resp = handler if isinstance(handler, Response) else self._app.call_inline(req, handler)
                self._send(req, resp)
                if not req.keep_alive or self._eof:
                    self._task = None
                    self._close()
                    return
                if self._current is req and not req._body_done:
                    # its body is still arriving: let a task consume it before the next request
                    self._task = asyncio.get_running_loop().create_task(self._drain_then_next(req))
                    return
                continue
            self._task = asyncio.get_running_loop().create_task(self._run(req, handler))
            return
        self._task = None

    async def _drain_then_next(self, req: Request) -> None:
        await req.body()
        if self._current is req:
            self._current = None
        self._start_next()

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
            self._send(req, result)
        if self.closed.done() or self._transport is None or self._transport.is_closing():
            return
        if not req.keep_alive or (self._eof and not self._queue):
            self._close()
            return
        # a body the handler never read must be consumed before the next request
        if not req._body_done:
            await req.body()
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

    def _bad_request(self, message: str) -> None:
        body = _json_encoder.encode({"message": f"bad request: {message}"}) + b"\n"
        self._write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
        self._close()

    # ---- transport helpers
    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def _drain(self) -> None:
        if self._write_paused and not self.closed.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def _pause_reading(self) -> None:
        if not self._paused_reading and self._transport is not None:
            self._paused_reading = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
