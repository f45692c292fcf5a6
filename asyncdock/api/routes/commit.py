"""`POST /commit` and the import half of `POST /images/create` (`fromSrc=-|URL`)."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from ...base.errors import Conflict, EngineError, InvalidParameter
from ...images import progress as pm
from ...images.commit import CommitSource, Committer, as_image_config, commit_reference
from ...images.importer import Importer
from ...registry.platforms import host_platform, parse_platform
from ...util.errtext import client_text
from ..http import Request, Response, Router, StreamResponse, json_response

log = logging.getLogger(__name__)

# How often a URL import reports its progress (moby's progress reader: about every 100 ms)
_PROGRESS_EVERY = 0.1


def register(router: Router) -> None:
    router.add("POST", "/commit", commit)


# ---------------------------------------------------------------------------------------------
# POST /commit

async def commit(req: Request) -> Response:
    q = req.query
    engine = req.engine
    name = q.get("container", "")
    cm = engine.containers
    rec = cm.get(name)
    # Before the body and the changes are looked at, as moby: the container's errors win.
    if rec.state.dead:
        raise Conflict(f"You cannot commit container {rec.id} which is Dead")
    raw = await req.json(Any)
    if raw is not None and not isinstance(raw, dict):
        raise InvalidParameter("invalid JSON: the body must be a container config object")
    override = as_image_config(raw) if raw else None
    ref = commit_reference(q.get("repo", ""), q.get("tag", ""))
    src = CommitSource(id=rec.id, image_id=rec.image_id, config=as_image_config(rec.config), snapshot=rec.id)
    committer = Committer(engine.images, engine.content, engine.snapshotter)
    paused_here = False
    if req.arg_bool("pause", True) and rec.state.running and not rec.state.paused:
        await cm.pause(rec)
        paused_here = True
    try:
        image = await committer.commit(src, override=override, changes=req.query_list("changes"),
                                       author=q.get("author", ""), comment=q.get("comment", ""), ref=ref)
    finally:
        if paused_here and rec.state.paused:
            with contextlib.suppress(EngineError):
                await cm.unpause(rec)
    cm.publish(rec, "commit", comment=q.get("comment", ""), imageID=image.id,
               imageRef=ref.familiar if ref is not None else "")
    return json_response({"Id": image.id}, status=201)


# ---------------------------------------------------------------------------------------------
# POST /images/create?fromSrc=

async def _download(url: str, progress: Any) -> AsyncIterator[bytes]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            resp = await session.get(url)
        except aiohttp.ClientError as e:
            raise InvalidParameter(f"error downloading {url}: {e}") from None
        async with resp:
            if resp.status >= 400:
                body = (await resp.text(errors="replace"))[:200].strip()
                raise InvalidParameter(f"failed to GET {url} with status {resp.status} {resp.reason}: {body}")
            total = resp.content_length or 0
            await progress(pm.status(f"Downloading from {url}"))
            done, last = 0, 0.0
            async for chunk in resp.content.iter_chunked(1 << 20):
                done += len(chunk)
                now = time.monotonic()
                if now - last >= _PROGRESS_EVERY:
                    last = now
                    msg: dict[str, Any] = {"status": "Importing",
                                           "progressDetail": {"current": done, **({"total": total} if total else {})}}
                    bar = pm.progress_bar(done, total)
                    if bar:
                        msg["progress"] = bar
                    await progress(msg)
                yield chunk


async def import_image(req: Request) -> Response | StreamResponse:
    q = req.query
    src = q.get("fromSrc", "")
    platform = parse_platform(q["platform"]) if q.get("platform") else host_platform()
    ref = commit_reference(q.get("repo", ""), q.get("tag", ""))
    engine = req.engine
    importer = Importer(engine.images, engine.content, engine.snapshotter,
                        max_layer_size=getattr(engine.config, "max_layer_size", 0) or 0)
    config = importer.config_of(req.query_list("changes"))
    stream: StreamResponse | None = None

    async def progress(msg: dict[str, Any]) -> None:
        nonlocal stream
        if stream is None:
            stream = await req.stream(content_type="application/json")
        await stream.write(pm.encode(msg))

    if src == "-":
        chunks: AsyncIterator[bytes] = req.body_chunks()
    else:
        url = src if "://" in src else "http://" + src
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameter(f"invalid URL {src!r}: only http and https sources can be imported")
        chunks = _download(url, progress)
    try:
        image = await importer.import_tar(
            chunks, config=config, message=q.get("message", "") or q.get("comment", ""),
            architecture=platform.architecture, os=platform.os or "linux", variant=platform.variant, ref=ref)
    except EngineError as e:
        if stream is None:
            raise
        await stream.write(pm.encode(pm.error(str(e))))
        return stream
    except Exception as e:  # noqa: BLE001 - in-stream, every failure is an error message
        if stream is None:
            raise
        log.error("import from %s failed: %s", src, client_text(e))
        await stream.write(pm.encode(pm.error(client_text(e))))
        return stream
    engine.bus.event("image", "import", image.id, {"name": image.id})
    await progress(pm.status(image.id))
    assert stream is not None
    return stream
