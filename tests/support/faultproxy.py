"""A fault-injecting HTTP proxy in front of a registry, for tests of pull robustness.

It forwards everything (keeping the client's Host header, so the registry's Location headers
point back at the proxy) and, on blob GETs (`/v2/<name>/blobs/sha256:...`), can inject:

    corrupt-blob   flip one byte in the middle of the body (same length, wrong digest)
    cut-after=N    send N bytes of the body, then close the connection
    ignore-range   forward without the Range header: 200 with the whole blob, no Content-Range
    stall[=N]      send N bytes (default half the body), then send nothing more until the client
                   hangs up, release_stalls() or stop()
    drop-patch[=N] (uploads) let N requests carrying blob data through (chunk PATCHes, and PUTs
                   with a body: a monolithic upload), default 0, then read part of the next one
                   and close the connection without forwarding it; the registry keeps what
                   came before, as after a connection lost mid-chunk

to every blob or only to some digests, each time or only the first `times` requests per digest
(so that a retry can succeed). Counters (requests, blob GETs per digest, Range headers seen,
faults injected) let a test assert that a client retried or resumed.

The proxy runs its own asyncio loop (aiohttp server + client) in a thread, so synchronous
fixtures and tests drive it with plain method calls.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .address import LoopbackRegistryAddress

FaultMode = Literal["corrupt-blob", "cut-after", "ignore-range", "stall", "drop-patch"]
_MODES: tuple[str, ...] = ("corrupt-blob", "cut-after", "ignore-range", "stall", "drop-patch")
UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$")

BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business on each side.
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade",
))
CHUNK = 64 * 1024
# A stalled response gives up by itself after this long, so a forgotten stall cannot hang a run.
MAX_STALL = 300.0


@dataclass(frozen=True)
class Fault:
    mode: FaultMode
    after: int | None = None  # bytes sent before cutting / stalling
    digests: frozenset[str] | None = None  # None = every blob
    times: int | None = None  # per digest; None = always

    @classmethod
    def parse(cls, spec: str, *, digests: set[str] | frozenset[str] | list[str] | None = None,
              times: int | None = None) -> Fault:
        """"cut-after=1048576", "stall", "stall=4096", "corrupt-blob", "ignore-range"."""
        mode, _, arg = spec.partition("=")
        if mode not in _MODES:
            raise ValueError(f"unknown fault mode {spec!r}; known: {', '.join(_MODES)}")
        if mode == "cut-after" and not arg:
            raise ValueError("cut-after needs a byte count: cut-after=N")
        if arg and mode not in ("cut-after", "stall", "drop-patch"):
            raise ValueError(f"{mode} takes no argument")
        return cls(mode, int(arg) if arg else None, frozenset(digests) if digests is not None else None, times)  # type: ignore[arg-type]


@dataclass
class ProxyStats:
    requests: int = 0
    by_method: collections.Counter[str] = field(default_factory=collections.Counter)
    blob_gets: collections.Counter[str] = field(default_factory=collections.Counter)  # digest -> GETs
    range_requests: list[tuple[str, str]] = field(default_factory=list)  # (digest, Range header)
    faults: collections.Counter[str] = field(default_factory=collections.Counter)  # digest -> injected
    patches: int = 0  # upload requests carrying data seen (drop-patch counts them)
    paths: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)

    def copy(self) -> ProxyStats:
        return ProxyStats(self.requests, collections.Counter(self.by_method), collections.Counter(self.blob_gets),
                          list(self.range_requests), collections.Counter(self.faults), patches=self.patches,
                          paths=list(self.paths))


class FaultProxy(LoopbackRegistryAddress):
    def __init__(self, upstream: str, *, name: str = "fault-proxy") -> None:
        """`upstream`: "HOST:PORT" of the registry behind the proxy."""
        self.upstream = upstream
        self.name = name
        self.port = 0
        self._fault: Fault | None = None
        self._stats = ProxyStats()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._release: asyncio.Event | None = None

    # -- control (any thread) ----------------------------------------------------------------
    def set_fault(self, spec: str | Fault | None, *, digests: set[str] | frozenset[str] | list[str] | None = None,
                  times: int | None = None) -> None:
        fault = Fault.parse(spec, digests=digests, times=times) if isinstance(spec, str) else spec
        with self._lock:
            self._fault = fault

    def clear(self) -> None:
        self.set_fault(None)

    @property
    def fault(self) -> Fault | None:
        with self._lock:
            return self._fault

    @property
    def stats(self) -> ProxyStats:
        """A snapshot: later requests do not change the returned object."""
        with self._lock:
            return self._stats.copy()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = ProxyStats()

    def release_stalls(self) -> None:
        """End every stalled response now (their connections are closed)."""
        if self._loop is not None and self._release is not None:
            release = self._release
            self._loop.call_soon_threadsafe(release.set)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self.name} did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._error
        return self

    def stop(self, timeout: float = 15) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            stop, release = self._stop, self._release
            assert release is not None

            def stop_now() -> None:
                release.set()  # stalled responses first, or runner.cleanup() waits for them
                stop.set()

            self._loop.call_soon_threadsafe(stop_now)
            self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.host} -> {self.upstream} fault={self.fault}>"

    # -- the proxy (its own loop) ------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced to start(); nothing else can report it
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._release = asyncio.Event()
        # auto_decompress off: bytes are relayed exactly as the registry sent them.
        session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=0),
        )
        app = web.Application(client_max_size=0)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, session)

        app.router.add_route("*", "/{tail:.*}", handle)
        # handler_cancellation: when a client gives up on a stalled response, its handler ends.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await session.close()

    def _pick_fault(self, digest: str, has_range: bool) -> Fault | None:
        with self._lock:
            self._stats.blob_gets[digest] += 1
            fault = self._fault
            if fault is None or (fault.digests is not None and digest not in fault.digests):
                return None
            if fault.mode == "ignore-range" and not has_range:
                return None
            if fault.times is not None and self._stats.faults[digest] >= fault.times:
                return None
            self._stats.faults[digest] += 1
            return fault

    def _drop_patch(self) -> bool:
        """Whether this upload PATCH is the one to drop (faults["patch"] counts the drops)."""
        with self._lock:
            self._stats.patches += 1
            fault = self._fault
            if fault is None or fault.mode != "drop-patch":
                return False
            if self._stats.patches <= (fault.after or 0):
                return False
            if fault.times is not None and self._stats.faults["patch"] >= fault.times:
                return False
            self._stats.faults["patch"] += 1
            return True

    def _count(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.by_method[method] += 1
            self._stats.paths.append((method, path, status))

    async def _handle(self, request: web.Request, session: aiohttp.ClientSession) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        m = BLOB_PATH.match(request.path)
        fault: Fault | None = None
        if m and request.method == "GET":
            digest = m.group("digest")
            rng = request.headers.get("Range")
            if rng is not None:
                with self._lock:
                    self._stats.range_requests.append((digest, rng))
            fault = self._pick_fault(digest, rng is not None)
            if fault is not None and fault.mode == "ignore-range":
                headers.popall("Range", None)
                headers.popall("If-Range", None)
        carries_data = request.method == "PATCH" or (
            request.method == "PUT" and request.headers.get("Content-Length", "0") not in ("", "0"))
        if carries_data and UPLOAD_PATH.match(request.path) and self._drop_patch():
            with contextlib.suppress(Exception):
                await request.content.read(CHUNK)
            self._count(request.method, request.path, 0)
            transport = request.transport
            if transport is not None:
                transport.close()
            return web.Response(status=502)
        body = request.content if request.body_exists else None
        url = URL(f"http://{self.upstream}{request.raw_path}", encoded=True)
        try:
            upstream = await session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False,
                # Relay the client's own headers only: no aiohttp defaults added.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        except aiohttp.ClientError as e:
            self._count(request.method, request.path, 502)
            return web.json_response({"errors": [{"code": "UNKNOWN", "message": f"proxy: {e}"}]}, status=502)
        async with upstream:
            self._count(request.method, request.path, upstream.status)
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers.add(k, v)
            length = upstream.content_length
            if length is None or request.method == "HEAD" or upstream.status not in (200, 206):
                fault = None  # only blob bodies of known length are faulted
            await resp.prepare(request)
            if request.method == "HEAD":
                await resp.write_eof()
                return resp
            if fault is None:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            assert length is not None
            return await self._faulty_body(request, resp, upstream, fault, length)

    async def _faulty_body(self, request: web.Request, resp: web.StreamResponse,
                           upstream: aiohttp.ClientResponse, fault: Fault, length: int) -> web.StreamResponse:
        sent = 0
        limit = length
        if fault.mode == "cut-after":
            limit = min(length, fault.after or 0)
        elif fault.mode == "stall":
            limit = min(length, fault.after if fault.after is not None else length // 2)
        flip_at = length // 2 if fault.mode == "corrupt-blob" else -1
        chunks: AsyncIterator[bytes] = upstream.content.iter_chunked(CHUNK)
        if fault.mode == "stall":
            # The registry's own pace must not look like a stall to a client with a short stall
            # timeout (a cold disk on a fresh machine delayed the first 300 kB by over 0.3 s and
            # the client resumed at an offset the test did not expect): read all of what this
            # response will send first, then send it at once, so that the only gap is the stall.
            chunks = _prefetched(await upstream.content.readexactly(limit) if limit else b"")
        async for chunk in chunks:
            if sent + len(chunk) > limit:
                chunk = chunk[: limit - sent]
            if 0 <= flip_at - sent < len(chunk):
                i = flip_at - sent
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
            if chunk:
                await resp.write(chunk)
                sent += len(chunk)
            if sent >= limit:
                break
        if fault.mode in ("cut-after", "stall"):
            if fault.mode == "stall":
                assert self._release is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), MAX_STALL)
            # Flush what was written, then drop the connection: the client sees a short body.
            # aiohttp's own write_eof on the closed transport then fails with a ConnectionError,
            # which it treats as a client disconnect (no error logged).
            transport = request.transport
            if transport is not None:
                transport.close()
            return resp
        await resp.write_eof()
        return resp


async def _prefetched(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i:i + CHUNK]
