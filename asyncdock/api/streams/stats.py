"""`GET /containers/{id}/stats`: the readings of containers/stats.py as a JSON document per line."""
from __future__ import annotations

import contextlib

import msgspec

from ...containers.models import ContainerRecord
from ...containers.stats import readings
from .. import shapes
from ..http import Request, StreamResponse


async def serve_stats(req: Request, rec: ContainerRecord) -> StreamResponse:
    stream_mode = req.arg_bool("stream", True)
    # one-shot (API 1.41+, stream=0 only): no second reading, precpu stays empty
    one_shot = req.arg_bool("one-shot") and not stream_mode
    docs = readings(req.engine.containers, rec, stream=stream_mode, one_shot=one_shot)
    out = await req.stream(content_type="application/json")
    enc = msgspec.json.Encoder()
    async with contextlib.aclosing(docs):
        async for doc in docs:
            await out.write(enc.encode(shapes.for_version(shapes.STATS, doc, req.api_version)) + b"\n")
    return out
