"""The events journal and bus: numbering, torn records, epochs, rotation, slow subscribers."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec
import pytest

from asyncdock.events import Event, EventBus, SubscriberLagged
from asyncdock.events.journal import Journal, parse_seq


def _run(coro):  # noqa: ANN001, ANN202
    return asyncio.run(coro)


async def _publish(root: Path, n: int, *, close: bool = True, **opts: object) -> EventBus:
    bus = EventBus()
    bus.open_journal(root, fsync=False, **opts)
    for i in range(n):
        bus.event("container", "start", f"c{i}", {"name": f"n{i}"})
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    if close:
        await bus.close_journal()
    else:  # a crash: whatever was written stays, no clean mark
        bus.journal.flush_now()
        bus.journal._task.cancel()
    return bus


def _all(root: Path) -> list[tuple[tuple[int, int], bytes]]:
    j = Journal(root, fsync=False)
    j.open()
    return [(s, p) for batch in j.read() for s, _, p in batch]


def test_clean_restart_continues_numbering(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 3))
    bus = _run(_publish(tmp_path, 2))
    assert bus.epoch == 1
    seqs = [s for s, _ in _all(tmp_path)]
    assert seqs == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)]


def test_crash_bumps_epoch_and_never_reuses_a_number(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 3, close=False))
    bus = _run(_publish(tmp_path, 1))
    assert bus.epoch == 2
    recs = _all(tmp_path)
    assert [s for s, _ in recs] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    ev = msgspec.json.decode(recs[-1][1], type=Event)
    assert ev.x_seq == "2-1" and ev.scope == "local"


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 5, close=False))
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    size = seg.stat().st_size
    os.truncate(seg, size - 7)  # a crash in the middle of the last record
    j = Journal(tmp_path, fsync=False)
    epoch, _ = j.open()
    assert j.truncated_bytes > 0 and epoch == 2
    seqs = [s for b in j.read() for s, _, _ in b]
    assert seqs == [(1, 1), (1, 2), (1, 3), (1, 4)]


def test_corrupt_checksum_stops_reading(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 3, close=False))
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert [s for s, _ in _all(tmp_path)] == [(1, 1), (1, 2)]


def test_rotation_and_size_bound(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 2000, segment_bytes=20_000, max_bytes=100_000))
    segs = sorted(tmp_path.glob("*.seg"))
    assert 3 <= len(segs) <= 7
    assert sum(p.stat().st_size for p in segs) <= 100_000 + 20_000 + 400
    seqs = [s for s, _ in _all(tmp_path)]
    assert seqs[-1] == (1, 2000) and seqs == sorted(seqs) and seqs[0] > (1, 1)
    # segment names are the first sequence number they hold
    j = Journal(tmp_path, fsync=False)
    j.open()
    for seg in j.segments[:-1]:
        first = next(iter(j.read(after=(seg.first[0], seg.first[1] - 1))))[0][0]
        assert first == parse_seq(seg.path.stem)


def test_read_after_and_since(tmp_path: Path) -> None:
    _run(_publish(tmp_path, 10))
    j = Journal(tmp_path, fsync=False)
    j.open()
    assert [s for b in j.read(after=(1, 7)) for s, _, _ in b] == [(1, 8), (1, 9), (1, 10)]
    times = [t for b in j.read() for _, t, _ in b]
    assert [t for b in j.read(since=times[5]) for _, t, _ in b] == times[5:]


def test_age_bound(tmp_path: Path) -> None:
    clock = [time.time_ns() - 30 * 86400 * 10**9]

    async def go() -> None:
        bus = EventBus(clock=lambda: clock[0])
        bus.open_journal(tmp_path, fsync=False, segment_bytes=5_000, max_age=86400)
        for i in range(200):
            bus.event("container", "create", f"old{i}")
        bus.journal.flush_now()
        clock[0] = time.time_ns()
        for i in range(200):
            bus.event("container", "create", f"new{i}")
        await bus.close_journal()

    _run(go())
    ids = [msgspec.json.decode(p, type=Event).actor.id for _, p in _all(tmp_path)]
    assert ids[-1] == "new199"
    assert sum(i.startswith("old") for i in ids) < 200


def test_stuck_subscriber_never_slows_publishers() -> None:
    async def go() -> None:
        bus = EventBus()
        lagged = []
        stuck = bus.subscribe(maxsize=1000, on_lag=lambda: lagged.append(bus.seq))
        live = bus.subscribe()
        t0 = time.perf_counter()
        for i in range(10_000):
            bus.event("container", "start", f"c{i}")
        elapsed = time.perf_counter() - t0
        assert elapsed < 1.0, elapsed  # ~10 µs an event: nobody waited on the stuck reader
        assert lagged == [1001]
        got = 0
        with pytest.raises(SubscriberLagged) as e:
            while True:
                await stuck.get()
                got += 1
        assert got == 1000 and e.value.last_seq == 1000
        assert len(live._queue) == 4096 or live._lagged  # the default bound holds too
    _run(go())
