"""A running process's output: read from its pipes, fanned out to attached clients and to the
log driver, line by line with the arrival time (Docker's json-file records are lines)."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

STDIN, STDOUT, STDERR = 0, 1, 2
_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


class OutputHub:
    """Fan-out of (stream, bytes); `None` marks the end of output. Subscribers registered before
    the process starts (docker run attaches first) see everything."""

    def __init__(self) -> None:
        self._subs: set[asyncio.Queue[tuple[int, bytes] | None]] = set()
        self.closed = False

    def subscribe(self) -> asyncio.Queue[tuple[int, bytes] | None]:
        q: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        if self.closed:
            q.put_nowait(None)
        else:
            self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        self._subs.discard(q)

    def publish(self, stream: int, data: bytes) -> None:
        for q in self._subs:
            q.put_nowait((stream, data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for q in self._subs:
                q.put_nowait(None)
            self._subs.clear()


class LineSplitter:
    """Cuts a stream into lines for the log driver; a partial line waits for its end (or for
    16 KiB, Docker's buffer size, or EOF)."""

    MAX = 16 * 1024

    def __init__(self, stream: str, emit: Callable[[str, bytes, int], None]) -> None:
        self._stream = stream
        self._emit = emit
        self._buf = b""

    def feed(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self._buf + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            self._emit(self._stream, buf[start:nl + 1], now)
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= self.MAX:
            self._emit(self._stream, rest[: self.MAX], now)
            rest = rest[self.MAX:]
        self._buf = rest

    def flush(self) -> None:
        if self._buf:
            self._emit(self._stream, self._buf, time.time_ns())
            self._buf = b""


class _PipeReader(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None], done: asyncio.Future[None]) -> None:
        self._on_data = on_data
        self._done = done

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


async def pump_output(fds: dict[int, int], hub: OutputHub,
                      log_emit: Callable[[str, bytes, int], None] | None) -> list[asyncio.Future[None]]:
    """Start reading each (stream -> fd); returns futures that resolve at each pipe's EOF.
    The fds are owned by the pump from now on (closed at EOF)."""
    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[None]] = []
    for stream, fd in fds.items():
        fut: asyncio.Future[None] = loop.create_future()
        splitter = LineSplitter(_NAMES.get(stream, "stdout"), log_emit) if log_emit else None

        def on_data(data: bytes, stream: int = stream, splitter: LineSplitter | None = splitter) -> None:
            hub.publish(stream, data)
            if splitter is not None:
                splitter.feed(data)

        def on_done(_: asyncio.Future[None], splitter: LineSplitter | None = splitter) -> None:
            if splitter is not None:
                splitter.flush()

        fut.add_done_callback(on_done)
        pipe = os.fdopen(fd, "rb", buffering=0)
        await loop.connect_read_pipe(lambda on_data=on_data, fut=fut: _PipeReader(on_data, fut), pipe)
        done.append(fut)
    return done
