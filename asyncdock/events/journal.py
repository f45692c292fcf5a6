"""The durable events journal: what `--since` and `x-asyncdock-after` replay from.

Layout under <data-root>/events/:
  state.json                 {"epoch": E, "clean": bool, "last": C}  (atomic, fsynced)
  <E:08d>-<C:012d>.seg       segments named by their first sequence number, so they sort in order

A record is `>II` (payload length, crc32 of payload) then the payload: the event's JSON exactly as
/events sends it (it carries `timeNano` and `x-asyncdock-seq`). A record whose length runs past
the end of the file or whose checksum fails is a torn write from a crash: `open()` truncates the
last segment there, and readers stop at it.

Sequence numbers are (epoch, counter), written "E-C". After a clean stop the next start goes on
in the same epoch; after a crash the epoch is bumped (and persisted, fsynced, before the first
event is numbered), so a number that a client saw but that never reached the disk is never
issued again.

Appends never touch the disk on the caller's path: `append()` adds to a buffer and wakes the
flush task, which writes everything buffered during one loop turn in a single write(2) (page
cache: safe against a process crash) and starts at most one fdatasync at a time in a worker
thread (group commit: no fsync per event).
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import msgspec

from ..util.atomic import atomic_write_json
from ..util.tasks import TaskSet

log = logging.getLogger(__name__)

_HDR = struct.Struct(">II")
MAX_RECORD = 1 << 20

Seq = tuple[int, int]


def format_seq(seq: Seq) -> str:
    return f"{seq[0]}-{seq[1]}"


def parse_seq(value: str) -> Seq:
    """'E-C' -> (E, C); ValueError when malformed."""
    e, sep, c = value.strip().partition("-")
    if not sep:
        raise ValueError(f"invalid sequence {value!r} (want EPOCH-COUNTER)")
    epoch, counter = int(e), int(c)
    if epoch < 0 or counter < 0:
        raise ValueError(f"invalid sequence {value!r}")
    return epoch, counter


class _State(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    epoch: int
    clean: bool = False
    last: int = 0


class _Head(msgspec.Struct):
    """The two fields of a record the journal itself needs."""

    time_nano: int = msgspec.field(default=0, name="timeNano")
    seq: str = msgspec.field(default="", name="x-asyncdock-seq")


_head_decoder = msgspec.json.Decoder(_Head)


def encode_record(payload: bytes) -> bytes:
    return _HDR.pack(len(payload), zlib.crc32(payload)) + payload


def scan(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """Valid records in `data` as (offset, length) and the offset where validity ends."""
    out: list[tuple[int, int]] = []
    pos = 0
    n = len(data)
    while pos + _HDR.size <= n:
        length, crc = _HDR.unpack_from(data, pos)
        start = pos + _HDR.size
        if length > MAX_RECORD or start + length > n:
            break
        if zlib.crc32(data[start:start + length]) != crc:
            break
        out.append((start, length))
        pos = start + length
    return out, pos


class Segment(msgspec.Struct):
    path: Path
    first: Seq
    first_time: int
    size: int


class Journal:
    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = 64 << 20,
                 segment_bytes: int = 4 << 20, max_age: float = 7 * 86400, fsync: bool = True) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.max_age = max_age
        self.fsync = fsync
        self.epoch = 0
        self.segments: list[Segment] = []
        self._fd = -1
        self._buf = bytearray()
        self._buf_first: tuple[Seq, int] | None = None
        self._wake: asyncio.Event | None = None
        self._tasks = TaskSet("events journal")
        self._task: asyncio.Task[None] | None = None  # the flush task
        self._syncing: asyncio.Future[None] | None = None
        self.truncated_bytes = 0  # torn tail dropped at open (for logs and tests)
        self.last_written: Seq = (0, 0)
        self._pending_last: Seq = (0, 0)
        self._write_failed = False

    # ---- open / close (sync: called once at engine start, before anything is published)
    def open(self) -> Seq:
        """Recover the journal; returns (epoch, last counter) to number new events after."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        state: _State | None = None
        try:
            state = msgspec.json.decode((self.root / "state.json").read_bytes(), type=_State)
        except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
            state = None
        self.segments = []
        for p in sorted(self.root.glob("*.seg")):
            try:
                first = parse_seq(p.stem)
            except ValueError:
                continue
            self.segments.append(Segment(p, first, 0, p.stat().st_size))
        last: Seq = (0, 0)
        if self.segments:
            # Only the segment being written when we stopped can hold a torn record.
            seg = self.segments[-1]
            data = seg.path.read_bytes()
            recs, end = scan(data)
            if end != len(data):
                self.truncated_bytes = len(data) - end
                log.warning("events journal: dropping a torn record (%d bytes) at the end of %s",
                            self.truncated_bytes, seg.path.name)
                with open(seg.path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                seg.size = end
            if recs:
                off, ln = recs[-1]
                last = parse_seq(_head_decoder.decode(data[off:off + ln]).seq)
            elif len(self.segments) > 1:
                seg.path.unlink()
                self.segments.pop()
            for s in self.segments:
                s.first_time = self._first_time(s.path)
        if state is not None and state.clean and (state.epoch, state.last) >= last:
            epoch, counter = state.epoch, state.last
        else:
            epoch = max(state.epoch if state else 0, last[0]) + 1
            counter = 0
        # Persisted (fsynced) before any number of this epoch is handed out.
        atomic_write_json(self.root / "state.json", msgspec.to_builtins(_State(epoch=epoch)))
        self.epoch = epoch
        self.last_written = last
        self._open_segment_for_append((epoch, counter + 1))
        return epoch, counter

    def _first_time(self, path: Path) -> int:
        with open(path, "rb") as f:
            hdr = f.read(_HDR.size)
            if len(hdr) < _HDR.size:
                return 0
            length, _ = _HDR.unpack(hdr)
            try:
                return _head_decoder.decode(f.read(min(length, MAX_RECORD))).time_nano
            except msgspec.DecodeError:
                return 0

    def _open_segment_for_append(self, next_seq: Seq) -> None:
        if self.segments and self.segments[-1].size < self.segment_bytes:
            seg = self.segments[-1]
        else:
            seg = Segment(self.root / f"{next_seq[0]:08d}-{next_seq[1]:012d}.seg", next_seq, 0, 0)
            self.segments.append(seg)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def start(self) -> None:
        """Start the flush task (needs the running loop)."""
        self._wake = asyncio.Event()
        self._task = self._tasks.spawn(self._flusher(), name="events-journal")

    async def close(self, last_counter: int) -> None:
        await self._tasks.close()
        self._task = None
        self.flush_now()
        if self._syncing is not None:
            try:
                await self._syncing
            except OSError:
                pass
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1
            try:
                atomic_write_json(self.root / "state.json",
                                  msgspec.to_builtins(_State(epoch=self.epoch, clean=True, last=last_counter)))
            except OSError as e:
                # A full disk at shutdown: the old state (not clean) stays, so the next start
                # opens a new epoch, which is always safe.
                log.warning("events journal: cannot record a clean close: %s", e)

    # ---- appending
    def append(self, seq: Seq, time_nano: int, payload: bytes) -> None:
        if self._fd < 0:
            return
        if not self._buf:
            self._buf_first = (seq, time_nano)
        self._buf += encode_record(payload)
        self._pending_last = seq
        if self.segments[-1].size + len(self._buf) >= self.segment_bytes:
            self.flush_now()  # once a segment: keeps a burst from overshooting the size bounds
        elif self._wake is not None:
            self._wake.set()

    def flush_now(self) -> None:
        """Write what is buffered (one write(2)); readers call this before they read."""
        if not self._buf or self._fd < 0:
            return
        buf, self._buf = self._buf, bytearray()
        first, first_time = self._buf_first or ((0, 0), 0)
        seg = self.segments[-1]
        if seg.size == 0:
            seg.first_time = first_time
            if seg.first != first:
                # The segment was named before the first record's seq was known; rename it.
                new = self.root / f"{first[0]:08d}-{first[1]:012d}.seg"
                os.rename(seg.path, new)
                seg.path, seg.first = new, first
        if not self._write_all(buf, seg):
            return
        seg.size += len(buf)
        self.last_written = self._pending_last
        if seg.size >= self.segment_bytes:
            self._rotate()

    def _write_all(self, buf: bytes | bytearray, seg: Segment) -> bool:
        """Append the whole batch or nothing: a full disk writes a batch short, and a torn
        record left in the middle of a segment would hide every record after it (once space
        is back) from the next start's scan. Warns once per failing stretch, not per batch."""
        view = memoryview(buf)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            try:
                os.ftruncate(self._fd, seg.size)
            except OSError as te:  # the next open() drops the torn tail instead
                log.debug("events journal: cannot cut a torn batch: %s", te)
            if not self._write_failed:
                log.warning("events journal: write to %s failed, events stay in memory only: %s",
                            seg.path.name, e)
                self._write_failed = True
            return False
        if self._write_failed:
            log.warning("events journal: writes to %s work again", seg.path.name)
            self._write_failed = False
        return True

    def _rotate(self) -> None:
        if self.fsync:
            os.fdatasync(self._fd)
        nxt = (self.last_written[0], self.last_written[1] + 1)
        seg = Segment(self.root / f"{nxt[0]:08d}-{nxt[1]:012d}.seg", nxt, 0, 0)
        self.segments.append(seg)
        os.close(self._fd)
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._trim()

    def _trim(self) -> None:
        """Drop the oldest segments beyond the size bound, or wholly older than max_age."""
        cutoff = time.time_ns() - int(self.max_age * 1e9)
        while len(self.segments) > 1:
            total = sum(s.size for s in self.segments)
            oldest, nxt = self.segments[0], self.segments[1]
            if total > self.max_bytes or (nxt.first_time and nxt.first_time < cutoff):
                oldest.path.unlink(missing_ok=True)
                self.segments.pop(0)
            else:
                break

    async def _flusher(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One more loop turn: everything published in this turn joins the group.
            await asyncio.sleep(0)
            self.flush_now()
            if self.fsync and self._fd >= 0 and (self._syncing is None or self._syncing.done()):
                self._syncing = loop.run_in_executor(None, _fdatasync, self._fd)

    # ---- reading (sync: run in a worker thread)
    def oldest(self) -> Seq | None:
        return self.segments[0].first if self.segments and self.segments[0].size else None

    def read(self, *, after: Seq | None = None, since: int | None = None, upto: Seq | None = None,
             batch: int = 512) -> Iterator[list[tuple[Seq, int, bytes]]]:
        """Records with seq > after and timeNano >= since, up to `upto`, in batches of
        (seq, timeNano, payload). Call flush_now() on the loop first."""
        segs = list(self.segments)
        out: list[tuple[Seq, int, bytes]] = []
        for i, seg in enumerate(segs):
            nxt = segs[i + 1] if i + 1 < len(segs) else None
            if nxt is not None and nxt.size:
                if after is not None and nxt.first <= (after[0], after[1] + 1):
                    continue
                if since is not None and nxt.first_time and nxt.first_time < since:
                    continue
            try:
                with open(seg.path, "rb") as f:
                    data = f.read(seg.size)
            except FileNotFoundError:
                continue  # trimmed meanwhile
            recs, _ = scan(data)
            for off, ln in recs:
                payload = data[off:off + ln]
                head = _head_decoder.decode(payload)
                try:
                    seq = parse_seq(head.seq)
                except ValueError:
                    continue
                if upto is not None and seq > upto:
                    if out:
                        yield out
                    return
                if after is not None and seq <= after:
                    continue
                if since is not None and head.time_nano < since:
                    continue
                out.append((seq, head.time_nano, payload))
                if len(out) >= batch:
                    yield out
                    out = []
        if out:
            yield out


def _fdatasync(fd: int) -> None:
    try:
        os.fdatasync(fd)
    except OSError:
        pass  # closed by rotation meanwhile: rotation synced it
