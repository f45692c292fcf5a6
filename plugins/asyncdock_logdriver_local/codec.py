"""The local driver's on-disk record: our own compact binary format.

    [u32 big-endian n][n bytes: msgpack array [stream, time_ns, data]][u32 big-endian n]

The length is written on both sides (as Docker's own local driver does with protobuf) so the
file can be walked backwards: `tail N` costs O(N) records, not O(file). The two copies must
agree, which also catches a torn or foreign file. Fields are positional (array_like): new ones
may only be appended, with defaults, never reordered.
"""
from __future__ import annotations

import os
import struct

import msgspec

from asyncdock.logs.base import LogRecord
from asyncdock.logs.files import Decoded

_LEN = struct.Struct(">I")
_FRAME_OVERHEAD = 2 * _LEN.size
# Far above any real record (the engine splits lines at 16 KiB); a larger length is damage.
MAX_ENTRY = 64 * 1024 * 1024
_TAIL_BLOCK = 64 * 1024

_STDOUT, _STDERR = 1, 2  # stdcopy's numbering


class Entry(msgspec.Struct, array_like=True):
    stream: int
    time_ns: int
    data: bytes


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Entry)


class LocalCodec:
    """RecordCodec for the local driver."""

    def encode(self, record: LogRecord) -> bytes:
        payload = _ENCODER.encode(Entry(_STDERR if record.stream == "stderr" else _STDOUT,
                                        record.time_ns, record.data))
        n = _LEN.pack(len(payload))
        return n + payload + n

    def decode(self, data: bytes) -> Decoded:
        view = memoryview(data)
        records: list[LogRecord] = []
        off = 0
        end = len(data)
        while end - off >= _FRAME_OVERHEAD:
            (n,) = _LEN.unpack_from(data, off)
            if n > MAX_ENTRY:
                return Decoded(records, off, True)
            stop = off + _FRAME_OVERHEAD + n
            if stop > end:
                break  # the rest of this record is not written yet
            if _LEN.unpack_from(data, stop - _LEN.size)[0] != n:
                return Decoded(records, off, True)
            try:
                e = _DECODER.decode(view[off + _LEN.size:stop - _LEN.size])
            except msgspec.DecodeError:
                return Decoded(records, off, True)
            records.append(LogRecord(stream="stderr" if e.stream == _STDERR else "stdout",
                                     data=e.data, time_ns=e.time_ns))
            off = stop
        return Decoded(records, off, False)

    def tail_start(self, fd: int, end: int, n: int) -> tuple[int, int]:
        back = _BackReader(fd, end)
        pos = end
        found = 0
        while found < n and pos >= _FRAME_OVERHEAD:
            (size,) = _LEN.unpack(back.get(pos - _LEN.size, pos))
            start = pos - _FRAME_OVERHEAD - size
            if size > MAX_ENTRY or start < 0:
                break  # damaged (or a record still being written): keep what was found
            if _LEN.unpack(back.get(start, start + _LEN.size))[0] != size:
                break
            found += 1
            pos = start
        return pos, found


class _BackReader:
    """Reads a file backwards in blocks; keeps only the part below the walk's position."""

    __slots__ = ("_buf", "_fd", "_lo")

    def __init__(self, fd: int, end: int) -> None:
        self._fd = fd
        self._lo = end  # self._buf holds file[self._lo : self._lo + len(self._buf)]
        self._buf = b""

    def get(self, start: int, stop: int) -> bytes:
        if start < self._lo:
            keep = self._buf[:max(0, stop - self._lo)]
            lo = max(0, min(start, stop - _TAIL_BLOCK))
            self._buf = os.pread(self._fd, self._lo - lo, lo) + keep
            self._lo = lo
        return self._buf[start - self._lo:stop - self._lo]
