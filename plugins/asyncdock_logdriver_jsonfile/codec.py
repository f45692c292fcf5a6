"""json-file's on-disk record, byte for byte as Docker writes it:

    {"log":"hi\\n","stream":"stdout","time":"2026-11-28T10:48:13.123456789Z"}\\n

Key order log, stream, time; "log" left out when empty; time in Go's RFC3339Nano (trailing
zeros trimmed); and the string escaping of moby's hand-written marshaller (jsonlogbytes.go),
which differs from Python's json and from msgspec: `<`, `>`, `&` become \\u003c \\u003e
\\u0026, control characters other than \\n and \\r become \\u00XX (so a tab is \\u0009),
U+2028/U+2029 are escaped, and each byte of invalid UTF-8 becomes \\ufffd. Tools that parse
Docker's files (and people diffing them) see the same bytes from us.
"""
from __future__ import annotations

import logging
import os
import re

import msgspec

from asyncdock.base.timefmt import parse_docker_time, rfc3339nano
from asyncdock.logs.base import LogRecord
from asyncdock.logs.files import Decoded

log = logging.getLogger(__name__)

# Bytes Go copies through unescaped: printable ASCII (and DEL) except `"` `&` `<` `>` `\`.
_SAFE = re.compile(rb"[\x20\x21\x23-\x25\x27-\x3b\x3d\x3f-\x5b\x5d-\x7f]*")
# For text decoded with surrogateescape, where each invalid byte is one U+DC80..U+DCFF: one
# str.translate pass (C, no call per escaped character as a regex callback would make).
_ESCAPES: dict[int, str] = {c: f"\\u00{c:02x}" for c in (*range(0x20), ord("<"), ord(">"), ord("&"))}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPES.update({c: "\\ufffd" for c in range(0xDC80, 0xDD00)})


def py_go_json_string(data: bytes) -> bytes:
    """`data` as a JSON string literal, escaped exactly as moby's json-file marshaller does
    (the reference; goescape.c is the same in C, built at set-up)."""
    # Fast paths: nearly every log line is plain ASCII ending in its newline.
    if data[-1:] == b"\n":
        if _SAFE.fullmatch(data, 0, len(data) - 1):
            return b'"' + data[:-1] + b'\\n"'
    elif _SAFE.fullmatch(data):
        return b'"' + data + b'"'
    # surrogateescape maps each byte of an invalid sequence to its own lone surrogate, which
    # matches Go's DecodeRune giving (RuneError, 1) per bad byte.
    text = data.decode("utf-8", "surrogateescape")
    return b'"' + text.translate(_ESCAPES).encode("utf-8") + b'"'


try:
    from ._goescape import go_json_string as c_go_json_string
except ImportError:  # not built (a checkout without set-up): the Python one, 10-20x slower on binary
    c_go_json_string = None

go_json_string = c_go_json_string or py_go_json_string


class _Line(msgspec.Struct):
    log: str = ""
    stream: str = ""
    time: str = ""  # "attrs" (labels/env/tag options) is ignored on read, as `docker logs` does


_LINE = msgspec.json.Decoder(_Line)
_STREAM_FIELD = {"stdout": b',"stream":"stdout","time":"', "stderr": b',"stream":"stderr","time":"'}
_TAIL_BLOCK = 64 * 1024


def _to_record(line: _Line) -> LogRecord | None:
    try:
        t = parse_docker_time(line.time)
    except ValueError:
        return None
    return LogRecord(stream="stderr" if line.stream == "stderr" else "stdout",
                     data=line.log.encode("utf-8", "replace"), time_ns=t)


class JSONLineCodec:
    """RecordCodec for json-file."""

    def __init__(self) -> None:
        # The lines of one pipe read share their arrival time: their stream-and-time tail is
        # formatted once (it was a third of the encoding's cost for short lines).
        self._last: tuple[str, int, bytes] = ("", -1, b"")

    def _tail(self, stream: str, time_ns: int) -> bytes:
        """`,"stream":...,"time":"..."}` and the newline."""
        last_stream, last_t, tail = self._last
        if last_t != time_ns or last_stream != stream:
            tail = _STREAM_FIELD[stream] + rfc3339nano(time_ns).encode("ascii") + b'"}\n'
            self._last = (stream, time_ns, tail)
        return tail

    def encode(self, record: LogRecord) -> bytes:
        tail = self._tail(record.stream, record.time_ns)
        if not record.data:
            return b"{" + tail[1:]
        return b'{"log":' + go_json_string(record.data) + tail

    def encode_lines(self, stream: str, lines: list[bytes], time_ns: int) -> bytes:
        """encode() of each line with this stream and time, joined."""
        tail = self._tail(stream, time_ns)
        esc = go_json_string
        return b"".join([b'{"log":' + esc(line) + tail if line else b"{" + tail[1:] for line in lines])

    def decode(self, data: bytes) -> Decoded:
        end = data.rfind(b"\n") + 1
        if end == 0:
            return Decoded([], 0, False)
        body = memoryview(data)[:end]
        try:
            lines = _LINE.decode_lines(body)
        except msgspec.DecodeError:
            lines = self._decode_each(bytes(body))
        records = [r for r in map(_to_record, lines) if r is not None]
        if len(records) != len(lines):
            log.warning("skipped %d json-file lines with a bad time", len(lines) - len(records))
        return Decoded(records, end, False)

    @staticmethod
    def _decode_each(body: bytes) -> list[_Line]:
        # A damaged line (a crash mid-write, an editor) costs that line only.
        out: list[_Line] = []
        bad = 0
        for raw in body.split(b"\n"):
            if not raw:
                continue
            try:
                out.append(_LINE.decode(raw))
            except msgspec.DecodeError:
                bad += 1
        if bad:
            log.warning("skipped %d unparseable json-file lines", bad)
        return out

    def tail_start(self, fd: int, end: int, n: int) -> tuple[int, int]:
        # Record k from the end spans (newline k+1, newline k]; bytes after the last newline
        # are a record still being written and do not count.
        if n <= 0:
            return end, 0
        need = n + 1
        found = 0
        pos = end
        while pos > 0:
            start = max(0, pos - _TAIL_BLOCK)
            block = os.pread(fd, pos - start, start)
            count = block.count(b"\n")
            if found + count < need:
                found += count
                pos = start
                continue
            idx = len(block)
            for _ in range(need - found):
                idx = block.rfind(b"\n", 0, idx)
            return start + idx + 1, n
        return 0, found
