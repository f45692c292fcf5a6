"""stdcopy framing, sans-IO: bytes in, frames out."""
from __future__ import annotations

import pytest

from asyncdock.base.stdcopy import STDERR, STDIN, STDOUT, SYSTEMERR, DeframeError, Deframer, frame, stream_id


def test_frame_header_layout() -> None:
    # Exactly what the logs transcript shows: `01 00 00 00 00 00 00 05` + "out1\n".
    assert frame(STDOUT, b"out1\n") == b"\x01\x00\x00\x00\x00\x00\x00\x05out1\n"
    assert frame(STDERR, b"err1\n") == b"\x02\x00\x00\x00\x00\x00\x00\x05err1\n"
    assert frame(STDIN, b"") == b"\x00" * 8
    big = b"x" * 0x1_0203
    assert frame(SYSTEMERR, big) == b"\x03\x00\x00\x00\x00\x01\x02\x03" + big


def test_stream_ids() -> None:
    assert (stream_id("stdin"), stream_id("stdout"), stream_id("stderr")) == (0, 1, 2)


def test_deframe_whole_frames() -> None:
    data = frame(STDOUT, b"out1\n") + frame(STDERR, b"err1\n") + frame(STDOUT, b"")
    d = Deframer()
    assert d.feed(data) == [(1, b"out1\n"), (2, b"err1\n"), (1, b"")]
    assert d.pending == 0
    d.close()


def test_deframe_byte_by_byte() -> None:
    frames = [(STDOUT, b"tick1\n"), (STDERR, b"e" * 300), (STDOUT, b"tick2\n")]
    data = b"".join(frame(s, p) for s, p in frames)
    d = Deframer()
    got: list[tuple[int, bytes]] = []
    for i in range(len(data)):
        got += d.feed(data[i:i + 1])
    assert got == frames
    assert d.pending == 0


@pytest.mark.parametrize("split", [1, 7, 8, 9, 12, 13, 20])
def test_deframe_any_split_point(split: int) -> None:
    data = frame(STDOUT, b"hello") + frame(STDERR, b"world!")
    d = Deframer()
    first = d.feed(data[:split])
    second = d.feed(data[split:])
    assert first + second == [(1, b"hello"), (2, b"world!")]


def test_deframe_keeps_partial_frame() -> None:
    d = Deframer()
    assert d.feed(frame(STDOUT, b"abcdef")[:-2]) == []
    assert d.pending == 12
    with pytest.raises(DeframeError, match="12 bytes pending"):
        d.close()


def test_deframe_rejects_unframed_input() -> None:
    # A TTY stream (raw bytes) read as multiplexed: moby's stdcopy gives the same error.
    with pytest.raises(DeframeError, match=r"^Unrecognized input header: 116$"):
        Deframer().feed(b"tty-out\r\ntty-err\r\n")


def test_roundtrip_many() -> None:
    frames = [(i % 3, bytes([i % 256]) * (i * 7 % 50)) for i in range(200)]
    blob = b"".join(frame(s, p) for s, p in frames)
    d = Deframer()
    got = []
    for i in range(0, len(blob), 37):
        got += d.feed(blob[i:i + 37])
    assert got == frames
