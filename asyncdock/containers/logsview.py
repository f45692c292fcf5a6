"""`GET /containers/{id}/logs`: what the log driver kept, framed as Docker frames it."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ..base import errors
from ..util.errtext import os_error_text
from ..logs.base import LogNotReadable, ReadOptions
from ..logs.framing import format_log_payload, frame_record
from ..base.stdcopy import SYSTEMERR, frame
from .models import ContainerRecord
from ..base.timefmt import parse_timestamp_filter

if TYPE_CHECKING:
    from ..api.http import Request


async def serve_logs(req: Request, rec: ContainerRecord) -> Any:
    out = req.arg_bool("stdout")
    err = req.arg_bool("stderr")
    if not out and not err:
        raise errors.InvalidParameter("Bad parameters: you must choose at least one stream")
    driver = req.engine.logdrivers.get(rec.host_config.log_config.type)
    if driver is None or driver.name == "none":
        raise LogNotReadable("configured logging driver does not support reading")
    tail_raw = req.query.get("tail", "all")
    try:
        tail = -1 if tail_raw in ("all", "") else max(int(tail_raw), 0)
    except ValueError:
        tail = -1
    since = req.query.get("since", "")
    until = req.query.get("until", "")
    opts = ReadOptions(stdout=out, stderr=err, follow=req.arg_bool("follow"), tail=tail,
                       since_ns=parse_timestamp_filter(since) if since and since != "0" else 0,
                       until_ns=parse_timestamp_filter(until) if until and until != "0" else 0)
    timestamps = req.arg_bool("timestamps")
    tty = rec.config.tty
    mgr = req.engine.containers
    # API 1.41 sends logs with no Content-Type at all (see the transcripts).
    stream = await req.stream(content_type=None)
    records = driver.read(mgr.store.dir(rec.id), rec.id, opts, lambda: rec.state.running)
    try:
        # aclosing: a client that hangs up releases the file handles and inotify watch at once
        async with contextlib.aclosing(records):
            async for record in records:
                if tty:
                    await stream.write(format_log_payload(record, timestamps))
                else:
                    await stream.write(frame_record(record, timestamps))
    except (OSError, ValueError) as e:
        await stream.write(frame(SYSTEMERR, f"Error grabbing logs: {os_error_text(e) if isinstance(e, OSError) else e}\n".encode()))
    return stream
