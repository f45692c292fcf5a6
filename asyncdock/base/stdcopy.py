"""Docker's stdcopy multiplexing, sans-IO.

Non-TTY attach, exec and logs streams carry each write as a frame: an 8-byte header
`[stream, 0, 0, 0, size as big-endian uint32]` then `size` bytes of payload. Stream 0 is stdin,
1 stdout, 2 stderr, 3 "systemerr" (the daemon's own error text in the middle of a stream, e.g.
`Error grabbing logs: ...`). TTY streams are raw bytes and never framed.

Pure functions and a buffering decoder: the HTTP layer and the client do the I/O, and tests
feed byte strings.
"""
from __future__ import annotations

import struct

STDIN = 0
STDOUT = 1
STDERR = 2
SYSTEMERR = 3

HEADER = struct.Struct(">BxxxI")
HEADER_SIZE = HEADER.size  # 8
_MAX_PAYLOAD = 0xFFFF_FFFF

_STREAM_IDS: dict[str, int] = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR}


def stream_id(stream: str) -> int:
    """The header byte for a named stream ("stdout" -> 1, "stderr" -> 2)."""
    return _STREAM_IDS[stream]


def frame(stream: int, data: bytes) -> bytes:
    """One frame (several, in order, in the theoretical case of a payload over 4 GiB)."""
    if len(data) <= _MAX_PAYLOAD:
        return HEADER.pack(stream, len(data)) + data
    view = memoryview(data)
    return b"".join(HEADER.pack(stream, len(chunk)) + chunk
                    for chunk in (bytes(view[i:i + _MAX_PAYLOAD])
                                  for i in range(0, len(data), _MAX_PAYLOAD)))


class DeframeError(ValueError):
    """The byte stream is not stdcopy-framed (e.g. a TTY stream read as multiplexed)."""


class Deframer:
    """Incremental decoder: feed bytes as they arrive, get complete frames back.

    A frame split across reads is kept until its last byte arrives; zero-length frames are
    returned as such.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back as the start of an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            stream, size = HEADER.unpack_from(buf, pos)
            if stream > SYSTEMERR:
                # moby's stdcopy rejects this the same way; no resync is possible.
                raise DeframeError(f"Unrecognized input header: {stream}")
            stop = pos + HEADER_SIZE + size
            if stop > end:
                break
            out.append((stream, bytes(buf[pos + HEADER_SIZE:stop])))
            pos = stop
        if pos:
            del buf[:pos]  # one compaction per feed, not per frame
        return out

    def close(self) -> None:
        """Declare end of stream; a partial frame left over means the stream was cut."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise DeframeError(f"stream ended inside a frame ({n} bytes pending)")
