"""Moving a download from the event loop to the worker thread that stores and unpacks it.

`LayerPipe` is a bounded byte queue: the async side (`put`) waits when `limit` bytes are
buffered, so a slow unpack slows the download instead of filling memory; the blocking side
(`read`) runs in the worker thread. `TeeReader` is what `apply_layer` reads: first the prefix a
previous attempt left in the ingest, then the pipe, writing every new byte to the ingest (which
hashes it) on the way. Hashing and writing thus happen in the worker, one thread hop per layer.
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from pathlib import Path

from ..content.store import IngestWriter

DEFAULT_PIPE_LIMIT = 8 << 20
# The worker is woken once this much is buffered (or at the end), not for every network chunk:
# each wake-up is a futex round trip and a context switch, and chunks are often 16-64 KiB.
WAKE_AT = 256 << 10


class PipeClosed(Exception):
    """The reading side is gone (the worker finished or failed); stop producing."""


class LayerPipe:
    def __init__(self, limit: int = DEFAULT_PIPE_LIMIT) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._wake_at = min(WAKE_AT, max(1, limit // 2))
        self._reader_waiting = False
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reader_gone = False
        self._space = asyncio.Event()
        self._producer_waiting = False

    # ---- async producer
    async def put(self, data: bytes) -> None:
        if not data:
            return
        while True:
            with self._cond:
                if self._reader_gone:
                    raise PipeClosed()
                if self._size < self._limit:
                    self._chunks.append(data)
                    self._size += len(data)
                    if self._reader_waiting and self._size >= self._wake_at:
                        self._cond.notify()
                    return
                self._producer_waiting = True
                self._space.clear()
            await self._space.wait()

    def close(self, error: BaseException | None = None) -> None:
        """End of data; with `error`, the reader raises it once the buffer is drained."""
        with self._cond:
            self._eof = True
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    def abort(self, error: BaseException) -> None:
        """Fail the reader now, dropping what is buffered (cancellation)."""
        with self._cond:
            self._chunks.clear()
            self._size = 0
            self._eof = True
            self._error = error
            self._cond.notify_all()

    # ---- blocking consumer
    def read(self, n: int) -> bytes:
        """Up to n bytes (at least 1 unless at EOF); blocks while the pipe is empty. Whole
        chunks are handed over as they came (no copy)."""
        with self._cond:
            if not self._chunks and not self._eof:
                # Sleep until a useful amount is there (see WAKE_AT), or the end.
                self._reader_waiting = True
                try:
                    while self._size < self._wake_at and not self._eof:
                        self._cond.wait()
                finally:
                    self._reader_waiting = False
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return b""
            head = self._chunks[0]
            if len(head) <= n:
                self._chunks.popleft()
                out = head
            else:
                out = head[:n]
                self._chunks[0] = head[n:]
            self._size -= len(out)
            self._wake_producer()
            return out

    def reader_done(self) -> None:
        """The worker stops reading (done or failed): unblock and refuse the producer."""
        with self._cond:
            self._reader_gone = True
            self._chunks.clear()
            self._size = 0
            self._wake_producer(force=True)

    def _wake_producer(self, force: bool = False) -> None:
        # Called with the lock held.
        if self._producer_waiting and (force or self._size < self._limit):
            self._producer_waiting = False
            self._loop.call_soon_threadsafe(self._space.set)


class TeeReader:
    """A forward-only file-like for `apply_layer`: the ingest's kept prefix, then the pipe,
    storing new bytes in the ingest. At EOF the blob is verified; a mismatch is raised from
    `read` (and remembered, since apply_layer may wrap it)."""

    def __init__(self, pipe: LayerPipe, writer: IngestWriter) -> None:
        self._pipe = pipe
        self._writer = writer
        self._prefix_left = writer.offset
        self._prefix = open(writer.data_path, "rb") if writer.offset else None  # noqa: SIM115
        self.consumed = 0  # compressed bytes handed to the unpacker (for "Extracting")
        self.verified = threading.Event()
        self.error: BaseException | None = None
        self._eof = False

    def _read_some(self, n: int) -> bytes:
        if self._prefix is not None:
            data = self._prefix.read(min(n, self._prefix_left))
            self._prefix_left -= len(data)
            if not data or self._prefix_left <= 0:
                self._prefix.close()
                self._prefix = None
            if data:
                return data
        if self._eof:
            return b""
        data = self._pipe.read(n)
        if data:
            self._writer.write(data)
            return data
        self._eof = True
        try:
            self._writer.verify()
        except BaseException as e:
            self.error = e
            raise
        self.verified.set()
        return b""

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes, b"" only at the end: a short read hands over what the pipe has
        instead of copying chunks together (the decoders read in a loop anyway)."""
        if n is None or n < 0:
            n = 1 << 20
        out = self._read_some(n)
        self.consumed += len(out)
        return out

    def drain(self) -> None:
        """Store (and verify) whatever the unpacker did not read: padding after the tar end."""
        while self.read(1 << 20):
            pass

    def close(self) -> None:
        if self._prefix is not None:
            self._prefix.close()
            self._prefix = None


class CountingReader:
    """A file wrapper counting bytes read (unpacking a blob already in the content store)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.consumed += len(data)
        return data

    def close(self) -> None:
        self._f.close()
