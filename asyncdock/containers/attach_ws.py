"""`GET /containers/{id}/attach/ws`: attach over a websocket. Output is raw (never multiplexed),
one message per chunk, binary frames from API 1.28 on and text frames before (as moby does);
client messages go to the container's stdin."""
from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import TYPE_CHECKING, Any

from ..api import websocket as ws
from ..logs.base import LogNotReadable, ReadOptions
from .models import ContainerRecord
from .stdio import OutputHub

if TYPE_CHECKING:
    from ..api.http import Request


async def serve_attach_ws(req: Request, rec: ContainerRecord) -> Any:
    mgr = req.engine.containers
    want_stdin = req.arg_bool("stdin")
    want = {1: req.arg_bool("stdout"), 2: req.arg_bool("stderr")}
    head = ws.handshake_response(req.headers)  # a bad handshake is a 400 before anything else
    lv = mgr.live(rec)
    if lv.hub.closed and not rec.state.running:
        lv.hub = OutputHub()
    queue = lv.hub.subscribe() if req.arg_bool("stream") else None
    conn = await req.hijack_with(head)
    mgr.publish(rec, "attach")
    opcode = ws.BINARY if req.api_version >= (1, 28) else ws.TEXT
    closed = asyncio.Event()

    async def client_side() -> None:
        decoder = ws.Decoder()
        while True:
            data = await conn.read()
            if not data:
                break
            for op, payload in decoder.feed(data):
                if op in (ws.TEXT, ws.BINARY) and want_stdin and rec.config.open_stdin:
                    await lv.started.wait()
                    if lv.stdin_w is not None:
                        lv.stdin_w.write(payload)
                elif op == ws.PING:
                    conn.write_nowait(ws.frame(ws.PONG, payload))
                elif op == ws.CLOSE:
                    closed.set()
                    return
        closed.set()

    reader = asyncio.ensure_future(client_side())
    try:
        if req.arg_bool("logs"):
            driver = req.engine.logdrivers.get(rec.host_config.log_config.type)
            with contextlib.suppress(LogNotReadable):
                opts = ReadOptions(stdout=want[1], stderr=want[2])
                async for record in driver.read(mgr.store.dir(rec.id), rec.id, opts, lambda: False):
                    await conn.write(ws.frame(opcode, record.data))
        while queue is not None and not closed.is_set():
            getter = asyncio.ensure_future(queue.get())
            closer = asyncio.ensure_future(closed.wait())
            done, _ = await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            closer.cancel()
            if getter not in done:
                getter.cancel()
                break
            item = getter.result()
            if item is None:
                break
            stream_no, data = item
            if want.get(stream_no):
                await conn.write(ws.frame(opcode, data))
        conn.write_nowait(ws.frame(ws.CLOSE, struct.pack("!H", 1000)))
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        if queue is not None:
            lv.hub.unsubscribe(queue)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await conn.close()
    return None
