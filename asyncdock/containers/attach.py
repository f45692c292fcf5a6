"""`POST /containers/{id}/attach`: the hijacked stream between a client and a container.

Every check happens before the 101 (errors must reach the client as JSON, and attach has no side
effects: start errors belong to /start). Client EOF is stdin EOF, not a hang-up: output keeps
flowing until the container's output ends.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..logs.framing import frame_record
from ..base.stdcopy import frame
from .models import ContainerRecord
from .stdio import OutputHub

if TYPE_CHECKING:
    from ..api.http import Request


async def serve_attach(req: Request, rec: ContainerRecord) -> Any:
    from .tty import parse_detach_keys

    mgr = req.engine.containers
    want_stdin = req.arg_bool("stdin")
    want_stdout = req.arg_bool("stdout")
    want_stderr = req.arg_bool("stderr")
    stream = req.arg_bool("stream")
    replay = req.arg_bool("logs")
    tty = rec.config.tty
    detach_keys = parse_detach_keys(req.query.get("detachKeys") or req.engine.config.detach_keys)
    lv = mgr.live(rec)
    if lv.hub.closed and not rec.state.running:
        lv.hub = OutputHub()  # output of the next start (`docker start -a`)
    queue = lv.hub.subscribe() if stream else None
    conn = await req.hijack(multiplexed=not tty)
    mgr.publish(rec, "attach")

    def close_stdin() -> None:
        # Client closed its side: with StdinOnce (docker run -i), the container's stdin
        # closes too, so `cat` sees EOF and exits.
        writer = lv.stdin_w
        if rec.config.stdin_once and writer is not None:
            lv.stdin_w = None
            writer.close()

    try:
        if replay:
            await _replay_logs(req, rec, conn, tty, want_stdout, want_stderr)
        if queue is not None:
            stdin = None
            if want_stdin and rec.config.open_stdin:
                stdin = StdinSide(lv.started.wait, lambda: lv.stdin_w, close_stdin)
            detached = await run_session(conn, queue, tty=tty, out=want_stdout, err=want_stderr,
                                         stdin=stdin, detach_keys=detach_keys)
            if detached:
                mgr.publish(rec, "detach")
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        if queue is not None:
            lv.hub.unsubscribe(queue)
        await conn.close()
    return None


class StdinSide:
    """Where a session's stdin goes: `ready` waits for the process, `writer()` is its stdin (None
    once closed), `close()` what a client EOF does without a TTY."""

    def __init__(self, ready: Callable[[], Awaitable[Any]], writer: Callable[[], Any],
                 close: Callable[[], None]) -> None:
        self.ready = ready
        self.writer = writer
        self.close = close


async def run_session(conn: Any, queue: asyncio.Queue[tuple[int, bytes] | None], *, tty: bool, out: bool,
                      err: bool, stdin: StdinSide | None, detach_keys: bytes) -> bool:
    """Output from `queue` to the client (raw with a TTY, stdcopy frames without) until it ends,
    stdin from the client to the process. With a TTY, as moby: the detach keys end the session
    (the process keeps running) and so does the client's EOF; without one, EOF closes stdin.
    Returns whether the client detached."""
    from .tty import EscapeScanner

    state = {"detached": False}

    def stop() -> None:
        queue.put_nowait(None)

    def on_gone(_: Any) -> None:
        stop()

    gone = conn.client_gone
    gone.add_done_callback(on_gone)

    async def pump_stdin() -> None:
        assert stdin is not None
        await stdin.ready()
        scanner = EscapeScanner(detach_keys) if tty and detach_keys else None
        while True:
            data = await conn.read()
            if not data:
                if tty:
                    stop()
                else:
                    stdin.close()
                return
            hit = False
            if scanner is not None:
                data, hit = scanner.feed(data)
            writer = stdin.writer()
            if data and writer is not None and not writer.is_closing():
                writer.write(data)
            if hit:
                state["detached"] = True
                stop()
                return

    task = asyncio.ensure_future(pump_stdin()) if stdin is not None else None
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            stream_no, data = item
            if (stream_no == 1 and out) or (stream_no == 2 and err):
                await conn.write(data if tty else frame(stream_no, data))
    finally:
        gone.remove_done_callback(on_gone)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return state["detached"]


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
