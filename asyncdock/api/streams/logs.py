"""`GET /containers/{id}/logs`: what the log driver kept, framed as Docker frames it."""
from __future__ import annotations

import contextlib

from ...base.stdcopy import SYSTEMERR, frame
from ...containers.logread import container_logs
from ...containers.models import ContainerRecord
from ...logs.framing import format_log_payload, frame_record
from ...util.errtext import os_error_text
from ..http import Request, StreamResponse
from .coalesce import Coalescer


async def serve_logs(req: Request, rec: ContainerRecord) -> StreamResponse:
    records = container_logs(req.engine.logdrivers, req.engine.containers.store.dir(rec.id), rec,
                             stdout=req.arg_bool("stdout"), stderr=req.arg_bool("stderr"),
                             follow=req.arg_bool("follow"), tail=req.query.get("tail", "all"),
                             since=req.query.get("since", ""), until=req.query.get("until", ""))
    timestamps = req.arg_bool("timestamps")
    tty = rec.config.tty
    # API 1.41 sends logs with no Content-Type at all (see the transcripts).
    stream = await req.stream(content_type=None)
    out = Coalescer(stream.write_nowait, stream.write)
    try:
        # aclosing: a client that hangs up releases the file handles and inotify watch at once
        async with contextlib.aclosing(records):
            async for record in records:
                if out.add(format_log_payload(record, timestamps) if tty else frame_record(record, timestamps)):
                    await out.flush()
        await out.flush()
    except (OSError, ValueError) as e:
        await out.flush()
        await stream.write(frame(SYSTEMERR, f"Error grabbing logs: {os_error_text(e) if isinstance(e, OSError) else e}\n".encode()))
    finally:
        out.discard()  # cancelled (the client went away): nothing is left scheduled
    return stream
