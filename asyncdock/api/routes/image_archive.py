"""GET /images/{name}/get, GET /images/get?names=: `docker save`; POST /images/load: `docker load`.

As dockerd: a save's errors before the first byte (no such image) are plain JSON answers; load
always answers 200 and reports a failure as the stream's last message (errorDetail), which is
what the docker CLI prints."""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import msgspec

from ...base.errors import EngineError, InvalidParameter
from ...base.oci import Platform
from ...images import progress as pm
from ...util.errtext import client_text
from ..http import Request, Response, Router, StreamResponse

log = logging.getLogger(__name__)


def register(router: Router) -> None:
    router.add("GET", "/images/get", save_many)
    router.add("GET", "/images/{name:.+}/get", save_one)
    router.add("POST", "/images/load", load)


async def save_one(req: Request) -> StreamResponse:
    return await _save(req, [req.match["name"]])


async def save_many(req: Request) -> StreamResponse:
    return await _save(req, req.query_list("names"))


def _platforms(req: Request) -> list[Platform]:
    """moby's DecodePlatforms: each `platform` is an OCI platform as JSON (API 1.48+)."""
    if req.api_version < (1, 48):
        return []
    values = req.query_list("platform")
    if len(values) > 1 and req.api_version < (1, 52):
        raise InvalidParameter("multiple platform parameters are not supported in this API version; "
                               "use API version 1.52 or later")
    out: list[Platform] = []
    for value in values:
        try:
            p = msgspec.json.decode(value, type=Platform)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise InvalidParameter(f"failed to parse platform: {e}") from None
        if not p.os and not p.architecture and (p.variant or p.os_version or p.os_features):
            raise InvalidParameter("optional platform fields provided, but OS and Architecture are missing")
        if not p.os or not p.architecture:
            raise InvalidParameter("both OS and Architecture must be provided")
        out.append(p)
    return out


async def _save(req: Request, names: list[str]) -> StreamResponse:
    platforms = _platforms(req)
    archive = req.engine.archive
    plan = await archive.plan_save(names, platforms)
    stream = await req.stream(content_type="application/x-tar")
    chunks = archive.save_stream(plan)
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await stream.write(chunk)
    except (ConnectionError, OSError, EngineError, ValueError) as e:
        # The archive is cut: the client must not take what it got for a whole one.
        log.warning("save of %s stopped: %s", names, client_text(e))
        stream.abort()
    return stream


async def load(req: Request) -> Response | StreamResponse:
    platforms = _platforms(req)
    quiet = req.arg_bool("quiet", True)  # dockerd's default when the parameter is absent
    stream: StreamResponse | None = None

    async def out(msg: dict[str, Any]) -> None:
        nonlocal stream
        if stream is None:
            stream = await req.stream(content_type="application/json")
        await stream.write(pm.encode(msg))

    try:
        await req.engine.archive.load(req.body_chunks(), out, quiet=quiet, platforms=platforms)
    except EngineError as e:
        await _discard_body(req)
        await out(pm.error(str(e)))
    except Exception as e:  # noqa: BLE001 - in the stream, every failure is an error message
        log.error("image load failed: %s", client_text(e))
        log.debug("traceback of the failed load", exc_info=e)
        await _discard_body(req)
        await out(pm.error(client_text(e)))
    if stream is None:
        stream = await req.stream(content_type="application/json")
    return stream


async def _discard_body(req: Request) -> None:
    """Read what is left of an archive we gave up on: a client that writes its whole body
    before it reads (the docker CLI, docker-py) then reads our error instead of failing on a
    closed connection (dockerd reads the whole archive before it looks at it)."""
    with contextlib.suppress(Exception):
        async for _ in req.body_chunks():
            pass
