"""A running process's output: read from its pipes, fanned out to attached clients and to the
log driver, line by line with the arrival time (Docker's json-file records are lines); and the
way an attached client reaches its stdin."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..util import heap

STDIN, STDOUT, STDERR = 0, 1, 2
_NAMES = {STDOUT: "stdout", STDERR: "stderr"}


class OutputQueue(asyncio.Queue[tuple[int, bytes] | None]):
    """One subscriber's share of the output, counting the bytes it has not taken yet."""

    def __init__(self, hub: OutputHub) -> None:
        super().__init__()
        self._hub = hub
        self.unread = 0

    def _put(self, item: tuple[int, bytes] | None) -> None:
        if item is not None:
            self.unread += len(item[1])
        super()._put(item)

    def _get(self) -> tuple[int, bytes] | None:
        item = super()._get()
        if item is not None:
            self.unread -= len(item[1])
            if self.unread <= OutputHub.LOW:
                self._hub.taken()
        return item


class OutputHub:
    """Fan-out of (stream, bytes); `None` marks the end of output. Subscribers registered before
    the process starts (docker run attaches first) see everything.

    Flow control as Docker has it: while a subscriber (an attached client) leaves more than
    HIGH bytes untaken, the pumps stop reading, so the process blocks on its full pipe instead of
    the engine holding its output in memory; they resume below LOW."""

    HIGH = 4 << 20
    LOW = 1 << 20
    TRIM_AFTER = 8 << 20  # output moved before the hub's end gives freed buffers back

    def __init__(self) -> None:
        self._subs: set[OutputQueue] = set()
        self.closed = False
        self._pauses: list[Callable[[bool], None]] = []  # each pump's pause(True)/resume(False)
        self.paused = False
        self._moved = 0
        self._left: set[OutputQueue] = set()  # subscribers still taking their share after close

    def subscribe(self) -> OutputQueue:
        q = OutputQueue(self)
        if self.closed:
            q.put_nowait(None)
        else:
            self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        self._subs.discard(q)  # type: ignore[arg-type]
        self.taken()
        if self.closed and self._left:
            self._left.discard(q)  # type: ignore[arg-type]
            if not self._left:
                self._trim()

    def _trim(self) -> None:
        # once the last client has its share (the buffers are garbage by then)
        if self._moved >= self.TRIM_AFTER:
            self._moved = 0
            heap.trim()

    def on_pause(self, pause: Callable[[bool], None]) -> None:
        self._pauses.append(pause)

    def publish(self, stream: int, data: bytes) -> None:
        self._moved += len(data)
        high = False
        for q in self._subs:
            q.put_nowait((stream, data))
            high = high or q.unread > self.HIGH
        if high and not self.paused:
            self._set_paused(True)

    def taken(self) -> None:
        """A subscriber took output (or left): resume once every one is below LOW."""
        if self.paused and all(q.unread <= self.LOW for q in self._subs):
            self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        for pause in self._pauses:
            pause(paused)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for q in self._subs:
                q.put_nowait(None)
            self._left = set(self._subs)
            self._subs.clear()
            if not self._left:
                self._trim()
            if self.paused:  # a pump still open reads on to its EOF, now for nobody
                self._set_paused(False)
            self._pauses.clear()


class StdinSide:
    """Where a session's stdin goes: `ready` waits for the process, `writer()` is its stdin (None
    once closed), `close()` what a client EOF does without a TTY."""

    def __init__(self, ready: Callable[[], Awaitable[Any]], writer: Callable[[], Any],
                 close: Callable[[], None]) -> None:
        self.ready = ready
        self.writer = writer
        self.close = close


LogEmit = Callable[[str, list[bytes], int], None]  # (stream, records' bytes, arrival time)


class LineSplitter:
    """Cuts a stream into lines for the log driver; a partial line waits for its end (or for
    16 KiB, Docker's buffer size, or EOF). The records of one piece of output go out together,
    with the piece's arrival time."""

    MAX = 16 * 1024

    def __init__(self, stream: str, emit: LogEmit) -> None:
        self._stream = stream
        self._emit = emit
        self._buf = b""

    def feed(self, data: bytes) -> None:
        parts = (self._buf + data if self._buf else data).split(b"\n")
        rest = parts.pop()  # after the last newline: a line still being written
        lines = [p + b"\n" for p in parts]
        if lines and max(map(len, lines)) > self.MAX:
            lines = [piece for line in lines for piece in self._cut(line)]
        if len(rest) >= self.MAX:  # whole 16 KiB pieces of it go now, as Docker's partials
            cut = len(rest) - len(rest) % self.MAX
            lines += self._cut(rest[:cut])
            rest = rest[cut:]
        self._buf = rest
        if lines:
            self._emit(self._stream, lines, time.time_ns())

    def _cut(self, line: bytes) -> list[bytes]:
        return [line[i:i + self.MAX] for i in range(0, len(line), self.MAX)]

    def flush(self) -> None:
        if self._buf:
            self._emit(self._stream, [self._buf], time.time_ns())
            self._buf = b""


class _FdPump:
    """Reads one output fd (a pipe, or a pty master) straight off the loop's readiness callback.
    After a wake-up it reads again until the fd is empty or READ_MAX is gathered, and hands the
    lot on as one piece: a pty gives 4 KiB per read and a pipe what its writer wrote, and each
    piece costs a queue hop, a frame and a send(2) per attached client, so one wake-up's reads
    travel together (latency is unchanged: nothing waits for more than the fd already holds)."""

    READ_MAX = 256 * 1024

    def __init__(self, fd: int, on_data: Callable[[bytes], None], done: asyncio.Future[None]) -> None:
        self._fd = fd
        self._on_data = on_data
        self._done = done
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._reading = False
        self._resume()

    def pause(self, paused: bool) -> None:
        if self._fd < 0:
            return
        if paused and self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        elif not paused:
            self._resume()

    def _resume(self) -> None:
        if not self._reading and self._fd >= 0:
            self._loop.add_reader(self._fd, self._ready)
            self._reading = True

    def _ready(self) -> None:
        parts: list[bytes] = []
        size = 0
        eof = False
        while size < self.READ_MAX:
            try:
                data = os.read(self._fd, self.READ_MAX - size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # EIO: a pty whose other side is gone
                eof = True
                break
            if not data:
                eof = True
                break
            parts.append(data)
            size += len(data)
        if parts:
            self._on_data(parts[0] if len(parts) == 1 else b"".join(parts))
        if eof:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            if self._reading:
                self._loop.remove_reader(self._fd)
                self._reading = False
            os.close(self._fd)
            self._fd = -1
        if not self._done.done():
            self._done.set_result(None)


async def pump_output(fds: dict[int, int], hub: OutputHub,
                      log_emit: LogEmit | None) -> list[asyncio.Future[None]]:
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
        pump = _FdPump(fd, on_data, fut)
        hub.on_pause(pump.pause)
        if hub.paused:
            pump.pause(True)
        done.append(fut)
    return done


class StdioPipes(NamedTuple):
    """A process's stdio as pipes: our ends (read by the pumps, stdin written by attach) and the
    process's ends (given to the runtime). Without stdin the process reads /dev/null."""

    in_r: int
    in_w: int  # -1 without stdin
    out_r: int
    out_w: int
    err_r: int
    err_w: int

    @property
    def child(self) -> tuple[int, int, int]:
        return self.in_r, self.out_w, self.err_w


def open_stdio_pipes(with_stdin: bool, opened: list[int]) -> StdioPipes:
    """Make the pipes; every fd goes into `opened` (the caller closes what is left on failure)."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    opened += [out_r, out_w, err_r, err_w]
    if with_stdin:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
        opened += [in_r, in_w]
    else:
        in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        in_w = -1
        opened.append(in_r)
    return StdioPipes(in_r, in_w, out_r, out_w, err_r, err_w)


async def start_stdio_pipes(pipes: StdioPipes, opened: list[int], hub: OutputHub,
                            log_emit: LogEmit | None,
                            ) -> tuple[list[asyncio.Future[None]], asyncio.WriteTransport | None]:
    """Once the runtime holds the process's ends: close ours of those, start the output pumps and
    wrap stdin. Returns the pumps' EOF futures and the stdin transport (None without stdin); the
    fds taken over leave `opened`."""
    for fd in pipes.child:
        os.close(fd)
        opened.remove(fd)
    output_done = await pump_output({STDOUT: pipes.out_r, STDERR: pipes.err_r}, hub, log_emit)
    opened.remove(pipes.out_r)
    opened.remove(pipes.err_r)
    stdin: asyncio.WriteTransport | None = None
    if pipes.in_w >= 0:
        loop = asyncio.get_running_loop()
        stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(pipes.in_w, "wb", buffering=0))
        opened.remove(pipes.in_w)
    return output_done, stdin
