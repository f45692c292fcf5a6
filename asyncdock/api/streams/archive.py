"""docker cp and docker export on the wire: `GET/HEAD/PUT /containers/{id}/archive` and
`GET /containers/{id}/export`. The path's stat goes in the X-Docker-Container-Path-Stat header
(the whole answer to HEAD); tars go out as a chunked body. What is read from and written into
the container is containers/archive.py's."""
from __future__ import annotations

import base64
import json
from typing import Any

from ...containers.archive import TarChunks, TarCut, exported, path_archive, put_archive
from ...containers.models import ContainerRecord
from ..http import Request, Response, StreamResponse, empty_response

PATH_STAT_HEADER = "X-Docker-Container-Path-Stat"


def stat_header(info: dict[str, Any]) -> str:
    """The header's value: the stat as compact JSON, base64-encoded (what the docker CLI decodes)."""
    return base64.b64encode(json.dumps(info, separators=(",", ":")).encode()).decode()


async def _send(chunks: TarChunks, out: StreamResponse) -> None:
    """The tar as the body; a failure once the head is out can only drop the connection."""
    try:
        async for chunk in chunks:
            await out.write(chunk)
    except TarCut:
        out.abort()


async def serve_archive_get(req: Request, rec: ContainerRecord) -> Response | StreamResponse:
    async with path_archive(req.engine.containers, rec, req.query.get("path", ""), req.match["id"]) as target:
        header = (PATH_STAT_HEADER, stat_header(target.stat))
        if req.method == "HEAD":
            return Response(200, b"", content_type="application/json", headers=[header])
        async with target.tar() as chunks:
            out = await req.stream(content_type="application/x-tar", headers=[header])
            await _send(chunks, out)
    return out


async def serve_archive_put(req: Request, rec: ContainerRecord) -> Response:
    await put_archive(req.engine.containers, rec, req.query.get("path", ""), req.match["id"], req.body_chunks(),
                      no_overwrite=req.arg_bool("noOverwriteDirNonDir"))
    return empty_response(200)


async def serve_export(req: Request, rec: ContainerRecord) -> StreamResponse:
    async with exported(req.engine.containers, rec) as chunks:
        out = await req.stream(content_type="application/octet-stream")
        await _send(chunks, out)
    return out
