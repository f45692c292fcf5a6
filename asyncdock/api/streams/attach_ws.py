"""`GET /containers/{id}/attach/ws`: attach over a websocket. Output is raw (never multiplexed),
one message per chunk, binary frames from API 1.28 on and text frames before (as moby does);
client messages go to the container's stdin."""
from __future__ import annotations

import asyncio
import contextlib
import struct

from ...containers.attachment import Attachment
from ...containers.models import ContainerRecord
from .. import websocket as ws
from ..http import Request


async def serve_attach_ws(req: Request, rec: ContainerRecord) -> None:
    want_stdin = req.arg_bool("stdin")
    want = {1: req.arg_bool("stdout"), 2: req.arg_bool("stderr")}
    head = ws.handshake_response(req.headers)  # a bad handshake is a 400 before anything else
    att = Attachment(req.engine.containers, rec, stream=req.arg_bool("stream"))
    try:
        conn = await req.hijack_with(head)
    except BaseException:
        att.close()  # an untaken share would hold the container's output once it fills
        raise
    att.attached()
    opcode = ws.BINARY if req.api_version >= (1, 28) else ws.TEXT
    stdin = att.stdin() if want_stdin else None
    closed = asyncio.Event()

    async def client_side() -> None:
        decoder = ws.Decoder()
        while True:
            data = await conn.read()
            if not data:
                break
            for op, payload in decoder.feed(data):
                if op in (ws.TEXT, ws.BINARY) and stdin is not None:
                    await stdin.ready()
                    writer = stdin.writer()
                    if writer is not None:
                        writer.write(payload)
                elif op == ws.PING:
                    conn.write_nowait(ws.frame(ws.PONG, payload))
                elif op == ws.CLOSE:
                    closed.set()
                    return
        closed.set()

    reader = asyncio.ensure_future(client_side())
    queue = att.output
    try:
        if req.arg_bool("logs"):
            records = att.replay(req.engine.logdrivers, stdout=want[1], stderr=want[2])
            async with contextlib.aclosing(records):
                async for record in records:
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
        att.close()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await conn.close()
    return None
