"""The output pump on real pipes: one wake-up's reads travel as one piece, a subscriber that does
not take its share stops the reading (the writer blocks on its full pipe, the engine holds at
most HIGH plus one read), and everything arrives once it reads again. And the logs endpoint's
coalescing of many small frames into few writes."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator
from typing import NamedTuple

from asyncdock.api.streams.coalesce import Coalescer
from asyncdock.containers.stdio import STDOUT, OutputHub, OutputQueue, pump_output


def test_one_wakeups_reads_are_one_piece() -> None:
    async def main() -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        for _ in range(3):  # three writes, all in the pipe before the loop first looks
            os.write(w, b"x" * 4096)
        os.close(w)
        hub = OutputHub()
        q = hub.subscribe()
        done = await pump_output({STDOUT: r}, hub, None)
        assert await q.get() == (STDOUT, b"x" * 12288)
        await asyncio.wait_for(done[0], 10)

    asyncio.run(main())


class _Paused(NamedTuple):
    writer: subprocess.Popen[bytes]
    hub: OutputHub
    queue: OutputQueue
    done: asyncio.Future[None]


@contextlib.asynccontextmanager
async def _paused_pump(total: int) -> AsyncIterator[_Paused]:
    """A writer of `total` zeros into a pump whose one subscriber has not read, once the pump
    paused; the writer is killed at the end whatever happened."""
    r, w = os.pipe2(os.O_CLOEXEC)
    writer = subprocess.Popen(["head", "-c", str(total), "/dev/zero"], stdout=w)
    os.close(w)
    try:
        hub = OutputHub()
        paused = asyncio.Event()
        hub.on_pause(lambda p: paused.set() if p else None)
        q = hub.subscribe()
        done = await pump_output({STDOUT: r}, hub, None)
        await asyncio.wait_for(paused.wait(), 30)
        yield _Paused(writer, hub, q, done[0])
    finally:
        writer.kill()
        writer.wait()


def test_a_subscriber_that_does_not_read_stops_the_reading() -> None:
    total = 32 << 20

    async def main() -> None:
        async with _paused_pump(total) as p:
            held = p.queue.unread
            assert OutputHub.HIGH < held <= OutputHub.HIGH + 256 * 1024
            # blocked on its full pipe, not finished: the rest is still in the writer
            assert p.writer.poll() is None
            got = 0
            while (item := await asyncio.wait_for(p.queue.get(), 30)) is not None:
                got += len(item[1])
                if got == total:
                    break
            assert got == total
            await asyncio.wait_for(p.done, 30)
            assert not p.hub.paused

    asyncio.run(main())


def test_leaving_resumes_the_reading() -> None:
    async def main() -> None:
        async with _paused_pump(16 << 20) as p:
            p.hub.unsubscribe(p.queue)  # the client went away: its share no longer holds the process
            await asyncio.wait_for(p.done, 30)
            assert p.writer.wait(30) == 0

    asyncio.run(main())


def test_coalescer_sends_one_turns_pieces_together() -> None:
    async def main() -> None:
        sent: list[bytes] = []
        awaited: list[bytes] = []

        async def write(data: bytes) -> None:
            awaited.append(data)

        out = Coalescer(sent.append, write)
        for i in range(1000):
            assert not out.add(b"%04d" % i)
        assert sent == [] and awaited == []  # nothing yet: the task has not yielded
        await asyncio.sleep(0)
        assert sent == [b"".join(b"%04d" % i for i in range(1000))]
        big = b"y" * (Coalescer.LIMIT + 1)
        assert out.add(big)  # past the limit: the caller writes at once, under the client's flow control
        await out.flush()
        assert awaited == [big]
        await asyncio.sleep(0)
        assert len(sent) == 1  # the flush took the scheduled send's share too

    asyncio.run(main())


def test_line_splitter_hands_on_one_pieces_records_together() -> None:
    from asyncdock.containers.stdio import LineSplitter

    calls: list[tuple[str, list[bytes], int]] = []
    s = LineSplitter("stderr", lambda stream, lines, t: calls.append((stream, lines, t)))
    s.feed(b"a\r\nb\rc\n" + b"x" * 40000 + b"\ntail")  # one 256 KiB read may hold all of this
    assert len(calls) == 1
    stream, lines, _ = calls[0]
    # only \n ends a record; a complete line over 16 KiB is cut as Docker cuts it
    assert stream == "stderr" and lines == [b"a\r\n", b"b\rc\n", b"x" * 16384, b"x" * 16384, b"x" * 7232 + b"\n"]
    s.feed(b"y" * 40000)  # the partial line: whole 16 KiB pieces now, the rest waits
    assert calls[1][1] == [b"tail" + b"y" * 16380, b"y" * 16384]
    s.flush()
    assert calls[2][1] == [b"y" * (40004 - 32768)]


def test_json_encode_lines_is_encode_of_each() -> None:
    from asyncdock.logs.base import LogRecord
    from asyncdock_logdriver_jsonfile.codec import JSONLineCodec

    lines = [b"plain\n", b"<tab>\t\n", b"\x00\xff", "✓\n".encode()]
    codec = JSONLineCodec()
    t = 1_764_321_093_123_456_789
    assert codec.encode_lines("stdout", lines, t) == b"".join(
        JSONLineCodec().encode(LogRecord("stdout", line, t)) for line in lines)
