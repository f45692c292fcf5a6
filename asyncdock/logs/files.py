"""What the file-backed log drivers (json-file, local) share: Docker's option parsing, a
rotating buffered writer, and the reader (rotated files in order, tail read backwards, since /
until / stream selection, follow across rotations).

A driver only supplies a `RecordCodec` (how one record looks on disk) and its option rules;
`FileLogDriver` does the rest.

On-disk chain, newest last: `<file>.N` ... `<file>.2`, `<file>.1`, `<file>` (Docker's naming).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from asyncdock.logs.base import IsRunning, LogRecord, LogWriter, ReadOptions, Stream

log = logging.getLogger(__name__)

T = TypeVar("T")

# ============================================================================ options

# go-units sizeRegex: `(?i)^(\d+(\.\d+)*) ?([kmgtp])?i?b?$`
_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kmgtp])?i?b?", re.IGNORECASE | re.ASCII)
_DECIMAL = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_GO_INT = re.compile(r"[+-]?\d+", re.ASCII)
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_size(s: str) -> int:
    """go-units FromHumanSize, which both Docker file drivers use for max-size: *decimal*
    units, case-insensitive, optional `b`/`ib` (`10k` = 10000, `10m` = 10**7, `1g` = 10**9,
    `1.5MB` = 1500000). Raises ValueError with Go's message."""
    m = _SIZE.fullmatch(s)
    if m is None:
        raise ValueError(f"invalid size: '{s}'")
    number = m.group(1)
    if number.count(".") > 1:  # the regex allows "1.2.3"; ParseFloat does not
        raise ValueError(f'strconv.ParseFloat: parsing "{number}": invalid syntax')
    return int(float(number) * _DECIMAL[(m.group(2) or "").lower()])


def parse_go_int(s: str) -> int:
    """strconv.Atoi: an optional sign and decimal digits, nothing else."""
    if _GO_INT.fullmatch(s) is None:
        raise ValueError(f'strconv.Atoi: parsing "{s}": invalid syntax')
    return int(s)


def parse_go_bool(s: str) -> bool:
    """strconv.ParseBool."""
    if s in _GO_TRUE:
        return True
    if s in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{s}": invalid syntax')


@dataclass(frozen=True)
class FileOptions:
    max_size: int = -1  # bytes; <= 0: never rotate
    max_file: int = 1  # files kept, the live one included
    compress: bool = False  # accepted for compatibility; rotated files are NOT compressed


# Keys Docker's file drivers accept besides their own; we accept and ignore them (they only
# add "attrs" to records, which nothing in our API reads back yet).
COMMON_ATTR_KEYS = frozenset({"labels", "labels-regex", "env", "env-regex", "tag"})
# Every --log-opt key json-file and local accept (Docker's two file drivers take the same set;
# their defaults, rules and messages differ and stay in each driver).
FILE_OPT_KEYS = frozenset({"max-size", "max-file", "compress"}) | COMMON_ATTR_KEYS


def rotated_path(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def existing_rotations(path: Path) -> list[Path]:
    """`path.1`, `path.2`, ... that exist, newest first, stopping at the first gap."""
    out: list[Path] = []
    n = 1
    while True:
        p = rotated_path(path, n)
        if not p.exists():
            return out
        out.append(p)
        n += 1


def remove_log_files(path: Path) -> None:
    """Delete a log file and every rotation of it (any `<name>.<digits>`, gaps included)."""
    prefix = path.name + "."
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return
    for name in names:
        if name == path.name or (name.startswith(prefix) and name[len(prefix):].isdigit()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)


# ============================================================================ codec

class Decoded(NamedTuple):
    records: list[LogRecord]
    used: int  # bytes consumed: complete records (and skipped garbage)
    corrupt: bool  # what follows `used` cannot be parsed: skip the rest of the file


class RecordCodec(Protocol):
    """One on-disk record format. Everything is synchronous; the reader decides on which
    thread it runs."""

    def encode(self, record: LogRecord) -> bytes: ...

    def decode(self, data: bytes) -> Decoded:
        """Decode the complete records at the start of `data`; an incomplete last record is
        left unconsumed (the writer has not finished it yet)."""
        ...

    def tail_start(self, fd: int, end: int, n: int) -> tuple[int, int]:
        """Scan backwards from offset `end`: return (offset where the last `n` complete
        records before `end` start, how many were found, which is less than n when the file
        holds fewer). Must not read the whole file for a small n."""
        ...


# ============================================================================ writer

class RotatingFileWriter:
    """A LogWriter for the engine's output pump: encode, buffer, flush once per batch.

    `write` never blocks for long: it appends to a buffer and schedules one flush with
    `loop.call_soon`, so all records produced in one loop iteration (one pipe read of many
    lines) become one write(2) on the file, and `logs -f` sees them within that iteration.
    No fsync: logs are not state, and fsync latency would stall the pump.

    Rotation follows Docker: before a write, if the file has reached max-size, `file.N-1` ->
    `file.N` ... `file` -> `file.1` and a new file is started (so a file may exceed max-size by
    at most one record). With max-file 1 the old file is unlinked rather than truncated, so
    a follower that still holds it open drains it and moves on by inode, never reading a
    file that shrank under it.
    """

    FLUSH_AT = 64 * 1024  # flush inline past this much, do not let one tick hoard memory

    def __init__(self, path: Path, encode: Callable[[LogRecord], bytes],
                 options: FileOptions, mode: int = 0o640,
                 encode_lines: Callable[[Stream, list[bytes], int], bytes] | None = None) -> None:
        self.path = path
        self._encode = encode
        self._encode_lines = encode_lines
        self._max_size = options.max_size
        self._max_file = max(1, options.max_file)
        self._mode = mode
        self._buf = bytearray()
        self._flush_scheduled = False
        self._closed = False
        self._warned = False
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                       self._mode)

    # -- LogWriter

    def write(self, record: LogRecord) -> None:
        if self._closed:
            return
        data = self._encode(record)
        if 0 < self._max_size <= self._size:
            self._rotate()
        self._append(data)

    def write_lines(self, stream: Stream, lines: list[bytes], time_ns: int) -> None:
        if self._encode_lines is None or self._max_size > 0:
            # record by record: rotation is decided before each one
            for data in lines:
                self.write(LogRecord(stream, data, time_ns))
        elif not self._closed:
            self._append(self._encode_lines(stream, lines, time_ns))

    def _append(self, data: bytes) -> None:
        self._buf += data
        self._size += len(data)
        if len(self._buf) >= self.FLUSH_AT:
            self.flush()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # used outside an event loop: behave unbuffered
                self.flush()
                return
            self._flush_scheduled = True
            loop.call_soon(self._scheduled_flush)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the rest

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> None:
        """Write out what is buffered. Readers of the same driver call this before reading so
        a `docker logs` right after output sees it."""
        if not self._buf or self._fd < 0:
            return
        data = bytes(self._buf)
        self._buf.clear()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            # Disk full or similar: drop this batch, keep the container running (Docker
            # also logs and carries on). A full disk first writes the batch short: cut what
            # went out, or a torn record would sit in the middle of the file once space is
            # back, and `docker logs` would stop reading there.
            written = len(data) - len(view)
            if written:
                try:
                    os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                except OSError as te:
                    log.debug("cannot cut a torn log batch from %s: %s", self.path, te)
            if not self._warned:
                # Once per writer: near a full disk, writes that fit in a file's last page
                # still succeed between failures, and re-arming would warn on and off.
                log.warning("log write to %s failed, dropping output while it fails: %s", self.path, e)
                self._warned = True
            self._size = os.fstat(self._fd).st_size

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def _rotate(self) -> None:
        self.flush()
        os.close(self._fd)
        self._fd = -1
        try:
            if self._max_file > 1:
                # Leftovers of an earlier, larger max-file would otherwise live forever.
                n = self._max_file
                while (stale := rotated_path(self.path, n)).exists():
                    stale.unlink()
                    n += 1
                for n in range(self._max_file - 2, 0, -1):
                    src = rotated_path(self.path, n)
                    if src.exists():
                        os.replace(src, rotated_path(self.path, n + 1))
                os.replace(self.path, rotated_path(self.path, 1))
            else:
                os.unlink(self.path)
        except OSError as e:
            log.warning("log rotation of %s failed, appending instead: %s", self.path, e)
        try:
            self._fd = self._open()
        except OSError as e:
            # The directory went away (container being removed): stop logging rather than
            # raise into the output pump, which must keep draining the container's pipes.
            log.warning("cannot reopen %s, discarding further output: %s", self.path, e)
            self._closed = True
            return
        self._size = os.fstat(self._fd).st_size


# ============================================================================ reader

_CHUNK = 1 << 20  # bytes decoded per step (and per worker-thread hop)
_INLINE_READ = 256 * 1024  # smaller reads are cheaper inline than a thread hop
_FOLLOW_WAKEUP = 0.1  # follow re-checks is_running() at least this often
_POLL_INTERVAL = 0.05  # without inotify


class _FdLease:
    """A dup of a file descriptor lent to one worker-thread job.

    If the awaiting task is cancelled (the client went away) its generator closes its own
    fds at once, while the job may still be reading; the dup keeps the job's fd valid, and
    the lock decides who closes the dup: the job when it ran, the canceller when it never
    started.
    """

    __slots__ = ("_fd", "_lock", "_state")
    _PENDING, _RUNNING, _CLOSED = range(3)

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._lock = threading.Lock()
        self._state = self._PENDING

    def take(self) -> int | None:
        with self._lock:
            if self._state != self._PENDING:
                return None
            self._state = self._RUNNING
            return self._fd

    def release(self) -> None:
        with self._lock:
            if self._state != self._CLOSED:
                self._state = self._CLOSED
                os.close(self._fd)

    def abandon(self) -> None:
        with self._lock:
            if self._state == self._PENDING:
                self._state = self._CLOSED
                os.close(self._fd)


async def _on_fd_in_thread(fd: int, fn: Callable[..., T], *args: object) -> T:
    lease = _FdLease(fd)

    def job() -> T:
        dfd = lease.take()
        if dfd is None:
            raise asyncio.CancelledError
        try:
            return fn(dfd, *args)
        finally:
            lease.release()

    try:
        return await asyncio.to_thread(job)
    finally:
        lease.abandon()


def _read_decode(fd: int, pos: int, length: int, codec: RecordCodec) -> tuple[Decoded, int]:
    data = os.pread(fd, length, pos)
    return codec.decode(data), len(data)


class _Source:
    """One open file of the chain and how far it has been decoded."""

    __slots__ = ("fd", "ino", "path", "pos", "size")

    def __init__(self, path: Path, fd: int) -> None:
        st = os.fstat(fd)
        self.path = path
        self.fd = fd
        self.ino = st.st_ino
        self.size = st.st_size  # at open: the snapshot tail counts back from
        self.pos = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_source(path: Path) -> _Source | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    return _Source(path, fd)


def _open_chain(path: Path) -> tuple[list[_Source], _Source | None]:
    """Open the rotated files (oldest first) and the live file as one consistent snapshot.

    Live first, then .1, .2, ...; a rotation in between shows up as the live inode appearing
    among the rotated ones, and we simply try again.
    """
    attempts = 5
    for attempt in range(attempts):
        live = _open_source(path)
        rotated: list[_Source] = []
        for p in existing_rotations(path):
            src = _open_source(p)
            if src is not None:
                rotated.append(src)
        consistent = live is None or all(s.ino != live.ino for s in rotated)
        if consistent or attempt == attempts - 1:
            # After repeated races (a writer rotating nonstop), a duplicated file beats none.
            rotated.reverse()
            return rotated, live
        for s in [live, *rotated]:
            if s is not None:
                s.close()
    raise AssertionError("unreachable")


def _newer_rotations(path: Path, old_ino: int) -> list[Path]:
    """After a rotation moved the file we follow (inode `old_ino`) away: the rotated files
    written after it, oldest first. If it is gone entirely (max-file reached, or max-file 1),
    every rotated file is newer."""
    rotations = existing_rotations(path)  # newest first
    for i, p in enumerate(rotations):
        try:
            if p.stat().st_ino == old_ino:
                return list(reversed(rotations[:i]))
        except FileNotFoundError:
            continue
    return list(reversed(rotations))


class _Filter:
    """Docker's read semantics: tail counts raw records (both streams), then since / until
    drop by time, then the stream selection applies. until ends the read."""

    __slots__ = ("done", "since", "stderr", "stdout", "until")

    def __init__(self, options: ReadOptions) -> None:
        self.stdout = options.stdout
        self.stderr = options.stderr
        self.since = options.since_ns
        self.until = options.until_ns
        self.done = False

    def apply(self, records: list[LogRecord]) -> list[LogRecord]:
        out: list[LogRecord] = []
        for r in records:
            if self.until and r.time_ns > self.until:
                self.done = True
                break
            if r.time_ns < self.since:
                continue
            if self.stdout if r.stream == "stdout" else self.stderr:
                out.append(r)
        return out


async def _drain(src: _Source, codec: RecordCodec) -> AsyncIterator[list[LogRecord]]:
    """Decode `src` from its position to its current end, a chunk at a time."""
    chunk = _CHUNK
    while True:
        size = os.fstat(src.fd).st_size
        if size < src.pos:
            # Truncated under us (not by our writer, which unlinks): start over.
            src.pos = 0
        avail = size - src.pos
        if avail <= 0:
            return
        length = min(avail, chunk)
        if length > _INLINE_READ:
            decoded, got = await _on_fd_in_thread(src.fd, _read_decode, src.pos, length, codec)
        else:
            decoded, got = _read_decode(src.fd, src.pos, length, codec)
        if decoded.corrupt:
            log.warning("unreadable log data in %s at offset %d, skipping the rest",
                        src.path, src.pos + decoded.used)
            src.pos = size
        else:
            src.pos += decoded.used
        if decoded.records:
            yield decoded.records
        if decoded.used == 0 and not decoded.corrupt:
            if got >= avail:
                return  # an incomplete record at the end: the writer is mid-batch
            chunk *= 2  # a record larger than the chunk: read more at once
        else:
            chunk = _CHUNK


async def _tail_position(chain: list[_Source], codec: RecordCodec, n: int) -> int:
    """Set `pos` on the file where the last n records start; return its index in chain."""
    if n == 0:
        last = chain[-1]
        last.pos = last.size
        return len(chain) - 1
    remaining = n
    for i in range(len(chain) - 1, -1, -1):
        src = chain[i]
        offset, found = await _on_fd_in_thread(src.fd, codec.tail_start, src.size, remaining)
        remaining -= found
        if remaining <= 0:
            src.pos = offset
            return i
    return 0


async def read_log_files(path: Path, codec: RecordCodec, options: ReadOptions,
                         is_running: IsRunning,
                         flush: Callable[[], None] = lambda: None) -> AsyncIterator[LogRecord]:
    """The LogDriver.read behaviour for a rotating file chain. `flush` pushes out the live
    writer's buffer (same process) so a read right after output sees it."""
    # A writer's flush scheduled with call_soon before we were called runs first.
    await asyncio.sleep(0)
    flush()
    filt = _Filter(options)
    opened: list[_Source] = []  # everything we open, closed in `finally` whatever happens

    def track(src: _Source | None) -> _Source | None:
        if src is not None:
            # Drop closed ones so a follow across thousands of rotations stays small.
            opened[:] = [s for s in opened if s.fd >= 0]
            opened.append(src)
        return src

    watcher: _Watcher | None = None
    live: _Source | None = None
    try:
        rotated, live = _open_chain(path)
        opened.extend(rotated)
        track(live)
        chain = rotated + ([live] if live is not None else [])
        if chain and not (options.tail == 0 and not options.follow):
            first = await _tail_position(chain, codec, options.tail) if options.tail >= 0 else 0
            for src in chain[first:]:
                async for batch in _drain(src, codec):
                    for r in filt.apply(batch):
                        yield r
                    if filt.done:
                        return
        for src in rotated:
            src.close()
        if not options.follow:
            return

        watcher = _Watcher.open(path.parent)
        while True:
            running = is_running()
            flush()
            if live is None:
                live = track(_open_source(path))  # created, nothing written yet
            if live is not None:
                async for batch in _drain(live, codec):
                    for r in filt.apply(batch):
                        yield r
                    if filt.done:
                        return
                try:
                    current: int | None = os.stat(path).st_ino
                except FileNotFoundError:
                    current = None  # between unlink and re-create, or removed
                if current is not None and current != live.ino:
                    # Rotated. Open what exists now before draining (draining may await a
                    # thread and the writer may rotate again meanwhile), then read the old
                    # file's last records and any rotations written after it, and switch.
                    nxt = track(_open_source(path))
                    between = [track(_open_source(p)) for p in _newer_rotations(path, live.ino)]
                    for old in [live, *between]:
                        if old is None:
                            continue
                        async for batch in _drain(old, codec):
                            for r in filt.apply(batch):
                                yield r
                            if filt.done:
                                return
                        old.close()
                    live = nxt
                    continue
            if not running:
                return  # drained after is_running() said stopped: nothing more will come
            if options.until_ns and time.time_ns() > options.until_ns:
                return
            await watcher.wait(_FOLLOW_WAKEUP)
    finally:
        if watcher is not None:
            watcher.close()
        for src in opened:
            src.close()


# ============================================================================ follow wakeups

_IN_MODIFY = 0x2
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_WATCH_MASK = (_IN_MODIFY | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
               | _IN_DELETE)


@lru_cache(maxsize=1)
def _inotify_api() -> tuple[Callable[[int], int], Callable[[int, bytes, int], int]] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init1.argtypes = [ctypes.c_int]
    init1.restype = ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    return init1, add_watch


class _Watcher:
    """Wakes a follower when something changes in the log directory: inotify (through
    ctypes, no dependency) on the directory, so writes, rotations and re-creation all wake
    it; short polling when inotify is unavailable (no libc symbol, or the per-user instance
    limit, 128 by default, is used up by many followers)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if fd is not None:
            self._loop.add_reader(fd, self._readable)

    @classmethod
    def open(cls, directory: Path) -> _Watcher:
        api = _inotify_api()
        if api is None:
            return cls(None)
        init1, add_watch = api
        fd = init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            log.debug("inotify_init1: %s; polling", os.strerror(ctypes.get_errno()))
            return cls(None)
        if add_watch(fd, os.fsencode(directory), _WATCH_MASK) < 0:
            log.debug("inotify_add_watch %s: %s; polling", directory,
                      os.strerror(ctypes.get_errno()))
            os.close(fd)
            return cls(None)
        return cls(fd)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            while os.read(self._fd, 65536):
                pass  # the events' content does not matter: any change means "look again"
        except BlockingIOError:
            pass
        self._event.set()

    async def wait(self, timeout: float) -> None:
        if self._fd is None:
            await asyncio.sleep(min(timeout, _POLL_INTERVAL))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        # Cleared before the caller reads the file: a write after this sets it again.
        self._event.clear()

    def close(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None


# ============================================================================ driver base

class FileLogDriver:
    """LogDriver over a rotating file chain. Subclasses set `name` and `codec` and define
    `file_path` and `parse_options` (Docker's per-driver option rules and messages)."""

    name: str
    codec: RecordCodec
    dir_mode = 0o700
    file_mode = 0o640

    def __init__(self) -> None:
        # Live writers by file, so a read can flush the buffer first. Weak: the engine owns
        # writers; a dropped one simply disappears from here.
        self._live: weakref.WeakValueDictionary[str, RotatingFileWriter] = (
            weakref.WeakValueDictionary())

    def file_path(self, log_dir: Path, container_id: str) -> Path:
        raise NotImplementedError

    def parse_options(self, opts: dict[str, str]) -> FileOptions:
        """Validate log opts; raise InvalidParameter with Docker's message."""
        raise NotImplementedError

    def validate_options(self, opts: dict[str, str]) -> None:
        self.parse_options(opts)

    def log_path(self, log_dir: Path, container_id: str) -> str:
        return str(self.file_path(log_dir, container_id))

    def open_writer(self, log_dir: Path, container_id: str, opts: dict[str, str]) -> LogWriter:
        options = self.parse_options(opts)
        path = self.file_path(log_dir, container_id)
        path.parent.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
        # a codec of its own: an encoder may keep per-stream state (json-file's time cache)
        codec = type(self.codec)()
        writer = RotatingFileWriter(path, codec.encode, options, self.file_mode,
                                    getattr(codec, "encode_lines", None))
        self._live[str(path)] = writer
        return writer

    def read(self, log_dir: Path, container_id: str, options: ReadOptions,
             is_running: IsRunning) -> AsyncIterator[LogRecord]:
        path = self.file_path(log_dir, container_id)
        key = str(path)

        def flush() -> None:
            writer = self._live.get(key)
            if writer is not None:
                writer.flush()

        return read_log_files(path, self.codec, options, is_running, flush)

    def remove(self, log_dir: Path, container_id: str) -> None:
        path = self.file_path(log_dir, container_id)
        writer = self._live.pop(str(path), None)
        if writer is not None:
            writer.close()
        remove_log_files(path)
