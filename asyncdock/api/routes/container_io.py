"""Inside a container: top, stats, resize, files (archive, export) and changes."""
from __future__ import annotations

from typing import Any

from ...base import errors
from ..http import Request, Response, Router, empty_response, json_response


def _get(req: Request) -> Any:
    return req.engine.containers.get(req.match["id"])


async def top(req: Request) -> Response:
    from ...containers.top import top as run_top

    rec = _get(req)
    return json_response(await run_top(rec, req.query.get("ps_args", "")))


async def stats(req: Request) -> Any:
    from ..streams.stats import serve_stats

    return await serve_stats(req, _get(req))


async def resize(req: Request) -> Response:
    from ...containers.tty import resize as do_resize

    rec = _get(req)
    if not rec.state.running:
        raise errors.Conflict(f"Container {rec.id} is not running")
    lv = req.engine.containers.live(rec)
    do_resize(lv.console if rec.config.tty else None, req.query)
    return empty_response(200)


async def archive_get(req: Request) -> Any:
    from ..streams.archive import serve_archive_get

    return await serve_archive_get(req, _get(req))


async def archive_put(req: Request) -> Any:
    from ..streams.archive import serve_archive_put

    return await serve_archive_put(req, _get(req))


async def export(req: Request) -> Any:
    from ..streams.archive import serve_export

    return await serve_export(req, _get(req))


async def changes(req: Request) -> Response:
    from ...containers.changes import container_changes

    rec = _get(req)
    return json_response(await container_changes(req.engine.snapshotter, rec) or None)


def register(router: Router) -> None:
    router.add("GET", "/containers/{id}/top", top)
    router.add("GET", "/containers/{id}/stats", stats)
    router.add("POST", "/containers/{id}/resize", resize)
    router.add("GET", "/containers/{id}/archive", archive_get)
    router.add("PUT", "/containers/{id}/archive", archive_put)
    router.add("GET", "/containers/{id}/export", export)
    router.add("GET", "/containers/{id}/changes", changes)
