"""A hijacked session (attach, exec start): a process's output to the client, the client's
bytes to its stdin."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ...base.stdcopy import frame
from ...containers.stdio import StdinSide
from ...containers.tty import EscapeScanner
from ..http import Hijack


async def run_session(conn: Hijack, queue: asyncio.Queue[tuple[int, bytes] | None], *, tty: bool, out: bool,
                      err: bool, stdin: StdinSide | None, detach_keys: bytes) -> bool:
    """Output from `queue` to the client (raw with a TTY, stdcopy frames without) until it ends,
    stdin from the client to the process. With a TTY, as moby: the detach keys end the session
    (the process keeps running) and so does the client's EOF; without one, EOF closes stdin.
    Returns whether the client detached."""
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
