"""`POST /containers/{id}/attach`: the hijacked stream between a client and a container.

Every check happens before the 101 (errors must reach the client as JSON, and attach has no side
effects: start errors belong to /start). Client EOF is stdin EOF, not a hang-up: output keeps
flowing until the container's output ends.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ..logs.framing import frame, frame_record
from .models import ContainerRecord
from .stdio import OutputHub

if TYPE_CHECKING:
    from ..api.http import Request


async def serve_attach(req: Request, rec: ContainerRecord) -> Any:
    mgr = req.engine.containers
    want_stdin = req.arg_bool("stdin")
    want_stdout = req.arg_bool("stdout")
    want_stderr = req.arg_bool("stderr")
    stream = req.arg_bool("stream")
    replay = req.arg_bool("logs")
    tty = rec.config.tty
    lv = mgr.live(rec)
    if lv.hub.closed and not rec.state.running:
        lv.hub = OutputHub()  # output of the next start (`docker start -a`)
    queue = lv.hub.subscribe() if stream else None
    conn = await req.hijack(multiplexed=not tty)
    mgr._event(rec, "attach")

    def encode(stream_no: int, data: bytes) -> bytes:
        return data if tty else frame(stream_no, data)

    stdin_task: asyncio.Task[None] | None = None
    if want_stdin and rec.config.open_stdin:
        stdin_task = asyncio.ensure_future(_pump_stdin(conn, mgr, rec, lv))
    try:
        if replay:
            await _replay_logs(req, rec, conn, tty, want_stdout, want_stderr)
        if queue is not None:
            while True:
                item = await queue.get()
                if item is None:
                    break
                stream_no, data = item
                if (stream_no == 1 and want_stdout) or (stream_no == 2 and want_stderr):
                    await conn.write(encode(stream_no, data))
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        if queue is not None:
            lv.hub.unsubscribe(queue)
        if stdin_task is not None:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stdin_task
        await conn.close()
    return None


async def _pump_stdin(conn: Any, mgr: Any, rec: ContainerRecord, lv: Any) -> None:
    await lv.started.wait()
    while True:
        data = await conn.read()
        writer = lv.stdin_w
        if writer is None:
            return
        if not data:
            # Client closed its side: with StdinOnce (docker run -i), the container's stdin
            # closes too, so `cat` sees EOF and exits.
            if rec.config.stdin_once:
                lv.stdin_w = None
                writer.close()
            return
        writer.write(data)


async def _replay_logs(req: Request, rec: ContainerRecord, conn: Any, tty: bool, out: bool, err: bool) -> None:
    from ..logs.base import LogNotReadable, ReadOptions

    driver = req.engine.logdrivers.get(rec.host_config.log_config.type)
    if driver is None:
        return
    opts = ReadOptions(stdout=out, stderr=err, follow=False)
    try:
        async for record in driver.read(req.engine.containers.store.dir(rec.id), rec.id, opts, lambda: False):
            await conn.write(record.data if tty else frame_record(record, False))
    except LogNotReadable:
        return
