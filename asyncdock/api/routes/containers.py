"""/containers: create, list, inspect, lifecycle, wait, attach, logs, prune."""
from __future__ import annotations

import asyncio
import logging
import signal as signal_mod
import time
from typing import Any

import msgspec

from ...base import errors
from ...containers import render
from ...containers.links import create_warnings, inspect_links
from ...containers.manager import parse_signal
from ...containers.models import ContainerRecord, CreateRequest
from ...base.filters import match_label, parse_filters
from .. import shapes
from ..http import Request, Response, Router, StreamResponse, empty_response, json_response

log = logging.getLogger(__name__)


def _mgr(req: Request) -> Any:
    return req.engine.containers


def _get(req: Request) -> ContainerRecord:
    return _mgr(req).get(req.match["id"])


async def create(req: Request) -> Response:
    body = await req.json(CreateRequest)
    if body is None:
        raise errors.InvalidParameter("config cannot be empty in order to create a container")
    warnings = shapes.accepts(shapes.CONTAINER_CREATE, body, req.api_version)
    rec = await _mgr(req).create(body, req.query.get("name") or None,
                                 readonly_non_recursive=shapes.readonly_non_recursive(req.api_version))
    return json_response({"Id": rec.id, "Warnings": [*warnings, *create_warnings(rec)]}, status=201)


_LIST_FILTERS = ("id", "name", "label", "label!", "status", "ancestor", "exited", "before", "since", "health",
                 "network", "volume", "publish", "expose", "is-task")
_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


async def list_containers(req: Request) -> Response:
    mgr = _mgr(req)
    show_all = req.arg_bool("all")
    limit = req.arg_int("limit", -1) or -1
    want_size = req.arg_bool("size")
    filters = parse_filters(req.query.get("filters"), _LIST_FILTERS)
    for st in filters.get("status", []):
        if st not in _STATUSES:
            raise errors.InvalidParameter(f"Invalid filter 'status={st}'")
    records = sorted(mgr.store, key=lambda r: r.created_ns, reverse=True)
    before = since = None
    if "before" in filters:
        before = mgr.get(filters["before"][-1]).created_ns
    if "since" in filters:
        since = mgr.get(filters["since"][-1]).created_ns
    if limit > 0 or before is not None or since is not None:
        show_all = True
    ancestors: set[str] | None = None
    if "ancestor" in filters:
        ancestors = set()
        for a in filters["ancestor"]:
            try:
                ancestors.add(req.engine.images.resolve(a).id)
            except errors.NotFound:
                continue
    out = []
    now = time.time_ns()  # one "now" for every STATUS text of the answer
    for rec in records:
        if not show_all and not (rec.state.running or rec.state.restarting) and "status" not in filters:
            continue
        if filters and not _match(rec, filters, ancestors, before, since):
            continue
        size = await _size(req, rec) if want_size else None
        out.append(shapes.for_version(shapes.CONTAINER_SUMMARY, summary_of(req, rec, size=size, now=now),
                                      req.api_version))
        if 0 < limit <= len(out):
            break
    return json_response(out)


def summary_of(req: Request, rec: ContainerRecord, size: tuple[int, int] | None = None,
               now: int | None = None) -> render.ListItem:
    net = req.engine.networks
    return render.summary(rec, size=size, ports=net.ports_list(rec.id, rec.config.exposed_ports),
                          networks=net.networks_json(rec.id, rec.host_config.network_mode), now=now,
                          link_names=_mgr(req).store.link_names_of(rec.id))


def _match(rec: ContainerRecord, f: dict[str, list[str]], ancestors: set[str] | None,
           before: int | None, since: int | None) -> bool:
    if "id" in f and not any(rec.id.startswith(v) for v in f["id"]):
        return False
    if "name" in f:
        import re

        name = rec.name.lstrip("/")
        if not any(re.search(v.lstrip("/"), name) for v in f["name"]):
            return False
    if "label" in f and not match_label(rec.config.labels or {}, f["label"]):
        return False
    if "label!" in f and any(match_label(rec.config.labels or {}, [v]) for v in f["label!"]):
        return False
    if "status" in f and rec.state.status not in f["status"]:
        return False
    if "exited" in f:
        if rec.state.running or not rec.has_been_started or str(rec.state.exit_code) not in f["exited"]:
            return False
    if ancestors is not None and rec.image_id not in ancestors and rec.image not in f["ancestor"]:
        return False
    if before is not None and rec.created_ns >= before:
        return False
    if since is not None and rec.created_ns <= since:
        return False
    if "health" in f:
        h = rec.state.health.status if rec.state.health is not None else "none"
        if h not in f["health"]:
            return False
    return True


async def _size(req: Request, rec: ContainerRecord) -> tuple[int, int]:
    rw = 0
    try:
        rw = await req.engine.snapshotter.usage(rec.id, apparent=True)  # dockerd's SizeRw
    except Exception:
        pass
    try:
        image = req.engine.images.resolve(rec.image_id)
        base = int(getattr(image, "size", 0) or 0)
    except errors.NotFound:
        base = 0
    return rw, rw + base


async def inspect(req: Request) -> Response:
    rec = _get(req)
    mgr = _mgr(req)
    size = await _size(req, rec) if req.arg_bool("size") else None
    graph: dict[str, str] = {}
    try:
        mounts = await req.engine.snapshotter.mounts(rec.id)
        for m in mounts:
            for opt in m.options:
                k, _, v = opt.partition("=")
                key = {"lowerdir": "LowerDir", "upperdir": "UpperDir", "workdir": "WorkDir"}.get(k)
                if key:
                    graph[key] = v
        graph["MergedDir"] = str(mgr.bundles / rec.id / "rootfs")
    except Exception:
        graph = {}
    net = req.engine.networks
    settings = net.settings_json(rec.id, rec.config.exposed_ports, rec.host_config.network_mode)
    doc = render.inspect(rec, files_dir=str(mgr.store.dir(rec.id)), size=size, network_settings=settings,
                         exec_ids=mgr.exec_ids(rec), graph=graph, links=inspect_links(rec, mgr.store.find))
    return json_response(shapes.for_version(shapes.CONTAINER, doc, req.api_version))


async def start(req: Request) -> Response:
    rec = _get(req)
    await _mgr(req).start(rec)
    return empty_response(204)


def _stop_signal(req: Request) -> str | None:
    params = {"signal": req.query.get("signal") or ""}
    shapes.accepts(shapes.CONTAINER_STOP, params, req.api_version)
    sig = params.get("signal") or None
    if sig is not None:
        parse_signal(sig)  # a bad one is a 400 before anything is stopped
    return sig


async def stop(req: Request) -> Response:
    rec = _get(req)
    sig = _stop_signal(req)
    await _mgr(req).stop(rec, req.arg_int("t"), sig)
    return empty_response(204)


async def restart(req: Request) -> Response:
    rec = _get(req)
    sig = _stop_signal(req)
    await _mgr(req).restart(rec, req.arg_int("t"), sig)
    return empty_response(204)


async def kill(req: Request) -> Response:
    rec = _get(req)
    sig = parse_signal(req.query.get("signal"), signal_mod.SIGKILL)
    await _mgr(req).kill(rec, sig, req.match["id"])
    return empty_response(204)


async def pause(req: Request) -> Response:
    await _mgr(req).pause(_get(req))
    return empty_response(204)


async def unpause(req: Request) -> Response:
    await _mgr(req).unpause(_get(req))
    return empty_response(204)


async def rename(req: Request) -> Response:
    rec = _get(req)
    await _mgr(req).rename(rec, req.query.get("name", ""))
    return empty_response(204)


async def remove(req: Request) -> Response:
    if req.arg_bool("link"):
        await _mgr(req).remove_link(req.match["id"])
        return empty_response(204)
    rec = _get(req)
    await _mgr(req).remove(rec, force=req.arg_bool("force"), volumes=req.arg_bool("v"))
    return empty_response(204)


async def wait(req: Request) -> Any:
    rec = _get(req)
    condition = req.query.get("condition", "not-running") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise errors.InvalidParameter(f'invalid condition: "{condition}"')
    # Register before answering, then flush the head: `docker run` sends /start only after it
    # has the head of this response.
    waiter = asyncio.ensure_future(_mgr(req).wait(rec, condition))
    await asyncio.sleep(0)
    stream = await req.stream(content_type="application/json")
    try:
        code = await waiter
    except asyncio.CancelledError:
        waiter.cancel()
        raise
    await stream.write(msgspec.json.encode({"Error": None, "StatusCode": code}) + b"\n")
    return stream


async def prune(req: Request) -> Response:
    filters = parse_filters(req.query.get("filters"), ("until", "label", "label!"))
    deleted, reclaimed = await _mgr(req).prune(filters)
    return json_response({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


async def attach(req: Request) -> None:
    from ..streams.attach import serve_attach

    rec = _get(req)
    return await serve_attach(req, rec)


async def attach_ws(req: Request) -> None:
    from ..streams.attach_ws import serve_attach_ws

    return await serve_attach_ws(req, _get(req))


async def logs(req: Request) -> StreamResponse:
    from ..streams.logs import serve_logs

    rec = _get(req)
    return await serve_logs(req, rec)


async def update(req: Request) -> Response:
    rec = _get(req)
    body = await req.json(dict[str, Any]) or {}
    shapes.accepts(shapes.CONTAINER_UPDATE, body, req.api_version)
    warnings = await _mgr(req).update(rec, body)
    return json_response({"Warnings": warnings})


def register(router: Router) -> None:
    router.add("POST", "/containers/create", create)
    router.add("GET", "/containers/json", list_containers)
    router.add("POST", "/containers/prune", prune)
    router.add("GET", "/containers/{id:.+}/json", inspect)
    router.add("POST", "/containers/{id}/start", start)
    router.add("POST", "/containers/{id}/stop", stop)
    router.add("POST", "/containers/{id}/restart", restart)
    router.add("POST", "/containers/{id}/kill", kill)
    router.add("POST", "/containers/{id}/pause", pause)
    router.add("POST", "/containers/{id}/unpause", unpause)
    router.add("POST", "/containers/{id}/rename", rename)
    router.add("POST", "/containers/{id}/wait", wait)
    router.add("POST", "/containers/{id}/attach", attach)
    router.add("GET", "/containers/{id}/attach/ws", attach_ws)
    router.add("POST", "/containers/{id}/update", update)
    router.add("GET", "/containers/{id}/logs", logs)
    router.add("DELETE", "/containers/{id:.+}", remove)  # `rm --link` names /<parent>/<alias>
