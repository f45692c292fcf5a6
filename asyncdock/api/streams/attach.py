"""`POST /containers/{id}/attach`: the hijacked stream between a client and a container.

Every check happens before the 101 (errors must reach the client as JSON, and attach has no side
effects: start errors belong to /start). Client EOF is stdin EOF, not a hang-up: output keeps
flowing until the container's output ends.
"""
from __future__ import annotations

import contextlib

from ...containers.attachment import Attachment
from ...containers.models import ContainerRecord
from ...containers.tty import parse_detach_keys
from ...logs.framing import frame_record
from ..http import Request
from .session import run_session


async def serve_attach(req: Request, rec: ContainerRecord) -> None:
    want_stdin = req.arg_bool("stdin")
    want_stdout = req.arg_bool("stdout")
    want_stderr = req.arg_bool("stderr")
    stream = req.arg_bool("stream")
    replay = req.arg_bool("logs")
    tty = rec.config.tty
    detach_keys = parse_detach_keys(req.query.get("detachKeys") or req.engine.config.detach_keys)
    att = Attachment(req.engine.containers, rec, stream=stream)
    try:
        conn = await req.hijack(multiplexed=not tty)
    except BaseException:
        att.close()  # an untaken share would hold the container's output once it fills
        raise
    att.attached()
    try:
        if replay:
            records = att.replay(req.engine.logdrivers, stdout=want_stdout, stderr=want_stderr)
            async with contextlib.aclosing(records):
                async for record in records:
                    await conn.write(record.data if tty else frame_record(record, False))
        if att.output is not None:
            stdin = att.stdin() if want_stdin else None
            detached = await run_session(conn, att.output, tty=tty, out=want_stdout, err=want_stderr,
                                         stdin=stdin, detach_keys=detach_keys)
            if detached:
                att.detached()
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        att.close()
        await conn.close()
    return None
