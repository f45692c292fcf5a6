"""/exec and POST /containers/{id}/exec: docker exec."""
from __future__ import annotations

from typing import Any

from ...containers.exec import ExecConfig, ExecStartConfig, create_exec, resize_exec
from ..http import Request, Response, Router, empty_response, json_response
from ..streams.exec_start import serve_exec_start


async def exec_create(req: Request) -> Response:
    mgr = req.engine.containers
    rec = mgr.get(req.match["id"])
    cfg = await req.json(ExecConfig)
    ex = create_exec(mgr, rec, cfg)
    return json_response({"Id": ex.id}, status=201)


async def exec_start(req: Request) -> Any:
    ex = req.engine.containers.execs.get(req.match["id"])
    body = await req.json(ExecStartConfig)
    return await serve_exec_start(req, ex, body)


async def exec_resize(req: Request) -> Response:
    ex = req.engine.containers.execs.get(req.match["id"])
    await resize_exec(ex, req.query)
    return empty_response(200)


async def exec_inspect(req: Request) -> Response:
    ex = req.engine.containers.execs.get(req.match["id"])
    return json_response(ex.inspect())


def register(router: Router) -> None:
    router.add("POST", "/containers/{id}/exec", exec_create)
    router.add("POST", "/exec/{id}/start", exec_start)
    router.add("POST", "/exec/{id}/resize", exec_resize)
    router.add("GET", "/exec/{id}/json", exec_inspect)
