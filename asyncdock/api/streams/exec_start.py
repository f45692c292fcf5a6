"""`POST /exec/{id}/start`: a detached start answers 200 once the process runs (or its error);
an attached one hijacks the connection first (so no output is lost), then starts the process
and runs the session, a start error going to the client as output."""
from __future__ import annotations

import contextlib

from ...base import errors
from ...base.stdcopy import STDOUT, frame
from ...containers.exec import (ExecInstance, ExecStartConfig, ExecStartError, claim_start, exec_stdin,
                                start_detached, start_exec)
from ...containers.tty import parse_detach_keys
from ..http import Request, Response, empty_response
from .session import run_session


async def serve_exec_start(req: Request, ex: ExecInstance, body: ExecStartConfig) -> Response | None:
    mgr = req.engine.containers
    claim_start(mgr, ex, body)
    if body.detach:
        await start_detached(mgr, ex)
        return empty_response(200)
    tty = ex.config.tty
    queue = ex.hub.subscribe()
    try:
        conn = await req.hijack(multiplexed=not tty)
    except BaseException:
        ex.hub.unsubscribe(queue)  # an untaken share would hold the process's output once it fills
        raise
    try:
        try:
            await start_exec(mgr, ex)
        except (ExecStartError, errors.EngineError) as e:
            err = e.error if isinstance(e, ExecStartError) else e
            text = (err.message + "\r\n").encode()
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                await conn.write(text if tty else frame(STDOUT, text))
            return None

        stdin = exec_stdin(ex)
        keys = parse_detach_keys(ex.config.detach_keys or req.engine.config.detach_keys)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await run_session(conn, queue, tty=tty, out=ex.config.attach_stdout, err=ex.config.attach_stderr,
                              stdin=stdin, detach_keys=keys)
    finally:
        ex.hub.unsubscribe(queue)
        await conn.close()
    return None
