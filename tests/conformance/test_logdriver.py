"""The log driver conformance suite: every plugin of the asyncdock.logdrivers group, built by its
factory as the engine builds it, through the LogDriver protocol only.

What a driver supports is asked of the driver, never looked up by its name:
- reading: a driver that keeps nothing refuses `read()` at call time with LogNotReadable and
  Docker's message ("configured logging driver does not support reading"); every reading
  check is skipped for it, and the refusal is checked instead;
- rotation: `validate_options` accepts max-size / max-file.

The file drivers' shared machinery (batching, on-disk names, backward tail, inotify
fallback) and each format's bytes are checked in tests/unit/test_logdrivers.py.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import cast

import anyio
import pytest

from asyncdock.containers.stdio import LineSplitter
from asyncdock.base.errors import InvalidParameter
from asyncdock.logs.base import LogDriver, LogNotReadable, LogRecord, LogWriter, ReadOptions, Stream
from asyncdock.plugins import LOGDRIVERS, InitContext
from tests.support.plugins import registered
from tests.support.logs import CID, DEADLINE, T0, read_all, stopped, write_all

pytestmark = pytest.mark.anyio

NOT_READABLE = "configured logging driver does not support reading"
ROTATION = {"max-size": "1k", "max-file": "3"}


def build(name: str, tmp_path: Path) -> LogDriver:
    d = registered(LOGDRIVERS)[name].factory(InitContext(root=tmp_path / "plugin-root"))
    assert isinstance(d, LogDriver) and d.name == name
    return d


@pytest.fixture(params=list(registered(LOGDRIVERS)))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> LogDriver:
    return build(request.param, tmp_path)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "containers" / CID
    d.mkdir(parents=True)
    return d


def _reads(name: str) -> bool:
    """Whether the driver claims to keep what it is given: one that does not refuses read()
    at call time (an async generator that is never iterated runs nothing)."""
    d = registered(LOGDRIVERS)[name].factory(InitContext(root=Path("/nonexistent")))
    try:
        d.read(Path("/nonexistent"), CID, ReadOptions(), stopped)
    except LogNotReadable:
        return False
    return True


def _rotates(name: str) -> bool:
    d = registered(LOGDRIVERS)[name].factory(InitContext(root=Path("/nonexistent")))
    try:
        d.validate_options(dict(ROTATION))
    except InvalidParameter:
        return False
    return True


READABLE = [n for n in registered(LOGDRIVERS) if _reads(n)]
NOT_KEPT = [n for n in registered(LOGDRIVERS) if n not in READABLE]
ROTATING = [n for n in READABLE if _rotates(n)]


@pytest.fixture(params=READABLE)
def rdriver(request: pytest.FixtureRequest, tmp_path: Path) -> LogDriver:
    """A driver that keeps what it is given (the reading checks)."""
    return build(request.param, tmp_path)


@pytest.fixture(params=ROTATING)
def rotating(request: pytest.FixtureRequest, tmp_path: Path) -> LogDriver:
    return build(request.param, tmp_path)


def rec(i: int, stream: Stream = "stdout", data: bytes | None = None) -> LogRecord:
    return LogRecord(stream=stream, data=data if data is not None else f"line {i}\n".encode(),
                     time_ns=T0 + i * 1_000_000)


class Running:
    """The is_running callable the engine passes, flipped by the test."""

    def __init__(self) -> None:
        self.value = True
        self.polled = asyncio.Event()  # set once the reader is in its follow loop

    def __call__(self) -> bool:
        self.polled.set()
        return self.value


async def next_record(it: AsyncIterator[LogRecord]) -> LogRecord:
    with anyio.fail_after(DEADLINE):
        return await it.__anext__()


async def rest(it: AsyncIterator[LogRecord]) -> list[LogRecord]:
    with anyio.fail_after(DEADLINE):
        return [r async for r in it]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def docker_text(data: bytes) -> bytes:
    """What a JSON-based driver keeps of arbitrary bytes, as Docker's json-file does: each byte
    of invalid UTF-8 becomes U+FFFD."""
    text = data.decode("utf-8", "surrogateescape")
    return "".join("\ufffd" if "\udc80" <= c <= "\udcff" else c for c in text).encode()


# ============================================================ every driver

async def test_writer_protocol(driver: LogDriver, log_dir: Path) -> None:
    assert isinstance(driver.log_path(log_dir, CID), str)
    driver.validate_options({})
    w = driver.open_writer(log_dir, CID, {})
    assert isinstance(w, LogWriter)
    w.write(rec(0))
    w.write(rec(1, "stderr", b"partial"))
    w.close()
    w.close()  # twice: the engine's teardown paths may both close
    w.write(rec(2))  # after close: dropped, never raises into the output pump
    driver.remove(log_dir, CID)
    driver.remove(log_dir, CID)  # idempotent


@pytest.mark.parametrize("name", NOT_KEPT)
async def test_a_driver_that_keeps_nothing_refuses_reading(name: str, log_dir: Path,
                                                           tmp_path: Path) -> None:
    driver = build(name, tmp_path)
    write_all(driver, log_dir, [rec(0)])
    for opts in (ReadOptions(), ReadOptions(follow=True, tail=5)):
        with pytest.raises(LogNotReadable) as e:
            driver.read(log_dir, CID, opts, stopped)  # at call time, before any streaming
        assert str(e.value) == NOT_READABLE
    assert driver.log_path(log_dir, CID) == ""
    driver.remove(log_dir, CID)


# ============================================================ drivers that can be read


async def test_write_then_read_in_order(rdriver: LogDriver, log_dir: Path) -> None:
    records = [rec(0), rec(1, "stderr"), rec(2, data=b"partial, no newline"),
               rec(3, data="héllo wörld ✓\n".encode()), rec(4, data=b"\n")]
    write_all(rdriver, log_dir, records)
    assert await read_all(rdriver, log_dir) == records


async def test_visible_without_close(rdriver: LogDriver, log_dir: Path) -> None:
    w = rdriver.open_writer(log_dir, CID, {})
    w.write(rec(0))
    w.write(rec(1))
    # No close: a `docker logs` in the same loop iteration must still see the output.
    assert await read_all(rdriver, log_dir) == [rec(0), rec(1)]
    w.close()


async def test_close_flushes(rdriver: LogDriver, log_dir: Path, tmp_path: Path) -> None:
    """What was written before close() is kept, even read by another instance of the driver
    (a restarted daemon) that has no live writer to flush."""
    w = rdriver.open_writer(log_dir, CID, {})
    records = [rec(i) for i in range(100)]
    for r in records:
        w.write(r)
    w.close()  # no loop iteration between the writes and the close
    assert await read_all(build(rdriver.name, tmp_path), log_dir) == records


async def test_missing_log_reads_empty(rdriver: LogDriver, log_dir: Path) -> None:
    assert await read_all(rdriver, log_dir) == []
    assert await read_all(rdriver, log_dir, tail=5) == []


async def test_tail(rdriver: LogDriver, log_dir: Path) -> None:
    records = [rec(i, "stderr" if i % 3 == 0 else "stdout") for i in range(50)]
    write_all(rdriver, log_dir, records)
    assert await read_all(rdriver, log_dir, tail=3) == records[-3:]
    assert await read_all(rdriver, log_dir, tail=1) == records[-1:]
    assert await read_all(rdriver, log_dir, tail=50) == records
    assert await read_all(rdriver, log_dir, tail=500) == records
    assert await read_all(rdriver, log_dir, tail=0) == []
    assert await read_all(rdriver, log_dir, tail=-1) == records


async def test_tail_counts_both_streams_before_selection(rdriver: LogDriver, log_dir: Path) -> None:
    # Docker's order: the last N lines of the file, then the stream filter.
    records = [rec(0, "stdout"), rec(1, "stderr"), rec(2, "stdout"), rec(3, "stderr")]
    write_all(rdriver, log_dir, records)
    assert await read_all(rdriver, log_dir, tail=2, stderr=False) == [records[2]]


async def test_since_until(rdriver: LogDriver, log_dir: Path) -> None:
    records = [rec(i) for i in range(10)]
    write_all(rdriver, log_dir, records)

    def t(i: int) -> int:
        return T0 + i * 1_000_000

    assert await read_all(rdriver, log_dir, since_ns=t(7)) == records[7:]  # inclusive
    assert await read_all(rdriver, log_dir, until_ns=t(2)) == records[:3]  # inclusive
    assert await read_all(rdriver, log_dir, since_ns=t(3), until_ns=t(5)) == records[3:6]
    assert await read_all(rdriver, log_dir, since_ns=t(3), tail=2) == records[8:]
    assert await read_all(rdriver, log_dir, since_ns=t(9) + 1) == []


async def test_timestamps_kept_to_the_nanosecond(rdriver: LogDriver, log_dir: Path) -> None:
    records = [LogRecord("stdout", b"a\n", T0 + 123_456_789), LogRecord("stderr", b"b\n", T0 + 1),
               LogRecord("stdout", b"c\n", T0 + 1_000_000_000)]
    write_all(rdriver, log_dir, records)
    assert [r.time_ns for r in await read_all(rdriver, log_dir)] == [r.time_ns for r in records]


async def test_stream_selection(rdriver: LogDriver, log_dir: Path) -> None:
    records = [rec(i, "stderr" if i % 2 else "stdout") for i in range(6)]
    write_all(rdriver, log_dir, records)
    assert await read_all(rdriver, log_dir, stderr=False) == records[0::2]
    assert await read_all(rdriver, log_dir, stdout=False) == records[1::2]
    assert await read_all(rdriver, log_dir, stdout=False, stderr=False) == []


async def test_reopen_appends(rdriver: LogDriver, log_dir: Path) -> None:
    # A restarted container keeps its earlier output.
    write_all(rdriver, log_dir, [rec(0)])
    write_all(rdriver, log_dir, [rec(1)])
    assert await read_all(rdriver, log_dir) == [rec(0), rec(1)]


async def test_remove(rdriver: LogDriver, log_dir: Path) -> None:
    w = rdriver.open_writer(log_dir, CID, {})
    for i in range(300):
        w.write(rec(i))
    rdriver.remove(log_dir, CID)  # with its writer still open: the container's removal
    assert await read_all(rdriver, log_dir) == []
    assert [p for p in log_dir.rglob("*") if p.is_file()] == []


async def test_binary_and_invalid_utf8(rdriver: LogDriver, log_dir: Path) -> None:
    """Every byte value a program can print. Valid UTF-8 (control characters, NUL, `<>&`,
    U+2028) comes back exactly; invalid UTF-8 exactly, or as Docker's json-file keeps it (one
    U+FFFD per bad byte)."""
    valid = bytes(range(0, 0x80)).replace(b"\n", b"") + "<>& \u2028\u2029 ✓ \U0001f600".encode() + b"\n"
    invalid = [bytes(range(0x80, 0x100)) + b"\n", b"\xff\xfe\xfd", b"ok \xe2\x82 cut \xc3\n",
               b"\xed\xa0\x80 surrogate\n", b"\xc0\xaf overlong\n"]
    records = [rec(0, data=valid), *(rec(i + 1, "stderr", d) for i, d in enumerate(invalid))]
    write_all(rdriver, log_dir, records)
    got = await read_all(rdriver, log_dir)
    assert [(r.stream, r.time_ns) for r in got] == [(r.stream, r.time_ns) for r in records]
    assert got[0].data == valid
    for want, r in zip(invalid, got[1:]):
        assert r.data in (want, docker_text(want)), (want, r.data)


async def test_long_lines_split_at_16k_with_partial_records(rdriver: LogDriver, log_dir: Path) -> None:
    """The engine cuts output as Docker does (LineSplitter: 16 KiB pieces without their newline,
    Docker's partial messages); each piece is its own record and comes back as such, and the
    pieces join to the line."""
    line = b"".join(b"%07d," % i for i in range(20_000)) + b"\n"  # 160 KB
    w = rdriver.open_writer(log_dir, CID, {})
    emitted: list[LogRecord] = []

    def emit(stream: str, lines: list[bytes], t: int) -> None:
        emitted.extend(LogRecord(stream=cast(Stream, stream), data=data, time_ns=t) for data in lines)
        w.write_lines(cast(Stream, stream), lines, t)

    splitter = LineSplitter("stdout", emit)
    for i in range(0, len(line), 4096):  # as pipe reads deliver it
        splitter.feed(line[i:i + 4096])
    splitter.feed(b"short\nno newline at exit")
    splitter.flush()
    w.close()
    got = await read_all(rdriver, log_dir)
    assert got == emitted
    pieces = [r.data for r in got]
    assert all(len(p) == LineSplitter.MAX and not p.endswith(b"\n") for p in pieces[:9])
    assert b"".join(pieces[:10]) == line and pieces[9].endswith(b"\n")
    assert pieces[10:] == [b"short\n", b"no newline at exit"]
    assert await read_all(rdriver, log_dir, tail=3) == got[-3:]


async def test_large_output(rdriver: LogDriver, log_dir: Path) -> None:
    # Several MiB: must come back whole and in order, and a tail of it quickly.
    records = [rec(i, data=b"x" * 200 + f" {i}\n".encode()) for i in range(20_000)]
    write_all(rdriver, log_dir, records)
    assert await read_all(rdriver, log_dir) == records
    assert await read_all(rdriver, log_dir, tail=7) == records[-7:]


async def test_rotation_keeps_a_bounded_suffix(rotating: LogDriver, log_dir: Path) -> None:
    records = [rec(i) for i in range(400)]
    write_all(rotating, log_dir, records, dict(ROTATION))
    got = await read_all(rotating, log_dir)
    assert got == records[-len(got):]  # the newest, nothing lost in between
    assert 20 < len(got) < 400
    on_disk = sum(p.stat().st_size for p in log_dir.rglob("*") if p.is_file())
    assert on_disk < 3 * (1000 + 200)  # max-file x max-size (a file may overshoot by a record)
    assert await read_all(rotating, log_dir, tail=len(got) - 2) == got[2:]  # tail spans files


# ============================================================ follow


async def test_follow_sees_new_lines_and_ends_when_stopped(rdriver: LogDriver, log_dir: Path) -> None:
    running = Running()
    w = rdriver.open_writer(log_dir, CID, {})
    w.write(rec(0))
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True), running)
    assert await next_record(it) == rec(0)
    for i in range(1, 4):
        w.write(rec(i, "stderr"))
        assert await next_record(it) == rec(i, "stderr")
    # Output written in the same iteration as the stop is still delivered, then the end.
    w.write(rec(4))
    w.write(rec(5))
    running.value = False
    assert await rest(it) == [rec(4), rec(5)]
    w.close()


async def test_follow_with_tail_zero_only_new(rdriver: LogDriver, log_dir: Path) -> None:
    running = Running()
    w = rdriver.open_writer(log_dir, CID, {})
    for i in range(5):
        w.write(rec(i))
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True, tail=0), running)
    task = asyncio.ensure_future(next_record(it))
    with anyio.fail_after(DEADLINE):
        await running.polled.wait()  # past the tail snapshot, now following
    w.write(rec(5))
    assert await task == rec(5)
    running.value = False
    assert await rest(it) == []
    w.close()


async def test_follow_before_first_output(rdriver: LogDriver, log_dir: Path) -> None:
    running = Running()
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True), running)
    task = asyncio.ensure_future(next_record(it))
    await asyncio.sleep(0)
    w = rdriver.open_writer(log_dir, CID, {})  # nothing was written before the follow began
    w.write(rec(0))
    assert await task == rec(0)
    running.value = False
    assert await rest(it) == []
    w.close()


async def test_follow_until_stops(rdriver: LogDriver, log_dir: Path) -> None:
    running = Running()
    w = rdriver.open_writer(log_dir, CID, {})
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True, until_ns=T0 + 2 * 1_000_000), running)
    for i in range(5):
        w.write(rec(i))
    assert await rest(it) == [rec(0), rec(1), rec(2)]  # ends at the first record past until
    w.close()


async def test_concurrent_writer_and_followers(rdriver: LogDriver, log_dir: Path) -> None:
    """A container writing in bursts (rotating, where the driver rotates) while two followers
    read: each gets every record, in order, once."""
    opts: dict[str, str] = {}
    try:
        rdriver.validate_options({"max-size": "10k", "max-file": "50"})
        opts = {"max-size": "10k", "max-file": "50"}  # large enough to keep it all
    except InvalidParameter:
        pass
    records = [rec(i, "stderr" if i % 5 == 0 else "stdout") for i in range(3000)]
    running = Running()
    w = rdriver.open_writer(log_dir, CID, opts)

    async def writer() -> None:
        for start in range(0, len(records), 37):
            for r in records[start:start + 37]:
                w.write(r)
            await asyncio.sleep(0)
        running.value = False

    async def follower(out: list[LogRecord]) -> None:
        async for r in rdriver.read(log_dir, CID, ReadOptions(follow=True), running):
            out.append(r)

    got: tuple[list[LogRecord], list[LogRecord]] = ([], [])
    with anyio.fail_after(DEADLINE * 3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower, got[0])
            tg.start_soon(follower, got[1])
            tg.start_soon(writer)
    w.close()
    assert got[0] == records
    assert got[1] == records


async def test_abandoned_follow_releases_fds(rdriver: LogDriver, log_dir: Path) -> None:
    w = rdriver.open_writer(log_dir, CID, {})
    for i in range(100):
        w.write(rec(i))
    await asyncio.sleep(0)
    before = open_fds()
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True), Running())
    await next_record(it)
    await cast(AsyncGenerator[LogRecord, None], it).aclose()  # the client went away
    assert open_fds() == before
    w.close()


async def test_follow_of_a_removed_log_ends(rdriver: LogDriver, log_dir: Path) -> None:
    """`docker rm -f` while `docker logs -f` runs: the follower gets what was written, then ends
    once the container is reported stopped, without an error."""
    running = Running()
    w = rdriver.open_writer(log_dir, CID, {})
    w.write(rec(0))
    it = rdriver.read(log_dir, CID, ReadOptions(follow=True), running)
    assert await next_record(it) == rec(0)
    w.write(rec(1))
    rdriver.remove(log_dir, CID)  # closes the live writer first: what it buffered is written
    running.value = False
    got = await rest(it)
    assert got == [rec(1)]  # buffered, flushed by the removal, read from the open file
    w.close()
