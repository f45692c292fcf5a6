"""A log record on the logs endpoint's stream: its payload (the line, with Docker's timestamp in
front when asked) in one stdcopy frame (asyncdock.base.stdcopy) for non-TTY containers."""
from __future__ import annotations

from asyncdock.base.stdcopy import HEADER, stream_id
from asyncdock.base.timefmt import rfc3339nano_fixed
from asyncdock.logs.base import LogRecord


def format_log_payload(record: LogRecord, timestamps: bool) -> bytes:
    """The payload `GET /containers/{id}/logs` sends for one record.

    With timestamps=1 Docker puts the time *inside* the payload, in its fixed-width
    RFC3339NanoFixed form (always nine fraction digits, unlike the trimmed RFC3339Nano that
    json-file stores): `2026-11-28T09:16:18.848707057Z tick2\\n`.
    """
    if not timestamps:
        return record.data
    return rfc3339nano_fixed(record.time_ns).encode("ascii") + b" " + record.data


def frame_record(record: LogRecord, timestamps: bool) -> bytes:
    """One log record as one frame, as the logs endpoint writes it for non-TTY containers (a
    record is a line of at most 16 KiB: one header, never frame()'s split of a 4 GiB payload;
    packed here because the logs route calls this once per line)."""
    payload = format_log_payload(record, timestamps)
    return HEADER.pack(stream_id(record.stream), len(payload)) + payload
