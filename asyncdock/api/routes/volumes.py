"""/volumes: list (filters), create, inspect, remove (409 in use), prune (API 1.41)."""
from __future__ import annotations

from typing import Any

import msgspec

from ...base.errors import InvalidParameter, Unavailable
from ..bodies import VolumeCreate, checked
from ...base.filters import parse_filters
from ..http import Request, Response, Router, empty_response, json_response


def _mgr(req: Request) -> Any:
    mgr = getattr(req.engine, "volumes", None)
    if mgr is None:
        raise Unavailable("volumes are not available")
    return mgr


async def list_volumes(req: Request) -> Response:
    mgr = _mgr(req)
    f = parse_filters(req.query.get("filters"), ("dangling", "name", "label", "label!", "driver"))
    return json_response({"Volumes": [mgr.volume_json(v) for v in mgr.list(f)], "Warnings": None})


async def create_volume(req: Request) -> Response:
    mgr = _mgr(req)
    raw = await req.body()
    try:
        body: dict[str, Any] = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as e:
        raise InvalidParameter(f"invalid JSON: {e}") from None
    body = checked(body, VolumeCreate)
    v, _ = await mgr.create(str(body.get("Name") or ""), str(body.get("Driver") or "local"),
                            body.get("DriverOpts") or {}, body.get("Labels") or {})
    return json_response(mgr.volume_json(v), status=201)


async def inspect_volume(req: Request) -> Response:
    mgr = _mgr(req)
    return json_response(mgr.volume_json(mgr.get(req.match["name"])))


async def remove_volume(req: Request) -> Response:
    await _mgr(req).remove(req.match["name"], force=req.arg_bool("force"))
    return empty_response(204)


async def prune(req: Request) -> Response:
    f = parse_filters(req.query.get("filters"), ("label", "label!", "all"))
    deleted, reclaimed = await _mgr(req).prune(f)
    return json_response({"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def register(router: Router) -> None:
    router.add("GET", "/volumes", list_volumes)
    router.add("POST", "/volumes/create", create_volume)
    router.add("POST", "/volumes/prune", prune)
    router.add("GET", "/volumes/{name:.+}", inspect_volume)
    router.add("DELETE", "/volumes/{name:.+}", remove_volume)
