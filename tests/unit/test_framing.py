"""Log records as the logs endpoint frames them: the payload, with or without Docker's timestamp."""
from __future__ import annotations

import pytest

from asyncdock.logs.base import LogRecord
from asyncdock.logs.framing import format_log_payload, frame_record

T = 1_795_857_378_848_707_057  # 2026-11-28T09:16:18.848707057Z


@pytest.mark.parametrize(("time_ns", "timestamps", "payload"), [
    (T, False, b"tick2\n"),
    # The transcript: `docker logs --tail 2 -t` -> "2026-11-28T09:16:18.848707057Z tick2\n"
    (T, True, b"2026-11-28T09:16:18.848707057Z tick2\n"),
    # Docker pads to nine digits here (RFC3339NanoFixed), unlike json-file's trimmed time.
    (T - 848_707_057 + 120_000_000, True, b"2026-11-28T09:16:18.120000000Z tick2\n"),
    (T - 848_707_057, True, b"2026-11-28T09:16:18.000000000Z tick2\n"),
])
def test_format_log_payload(time_ns: int, timestamps: bool, payload: bytes) -> None:
    record = LogRecord(stream="stdout", data=b"tick2\n", time_ns=time_ns)
    assert format_log_payload(record, timestamps) == payload


def test_frame_record_is_one_frame_per_line() -> None:
    record = LogRecord(stream="stdout", data=b"tick2\n", time_ns=T)
    # 37-byte payload, as in the transcript: header 01 00 00 00 00 00 00 25.
    assert frame_record(record, True)[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x25"
    err = LogRecord(stream="stderr", data=b"err1\n", time_ns=T)
    assert frame_record(err, False) == b"\x02\x00\x00\x00\x00\x00\x00\x05err1\n"
