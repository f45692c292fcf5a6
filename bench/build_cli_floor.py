#!/usr/bin/env python3
"""The docker CLI's own share of a cached `docker build`: the same `DOCKER_BUILDKIT=0 docker build
-q` of bench/build.py's 2,000-file context against a server that reads the body and discards it
(answering `/_ping` and `POST /build` with one image ID), interleaved with the real engine.

    python bench/build_cli_floor.py --host /run/asyncdock.sock [--runs N]

The engine's cached rebuild minus this floor is what the engine adds (context upload included).
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import docker_build, make_context  # noqa: E402
from common import ensure_image, parser, report  # noqa: E402

_ID = "sha256:" + "0" * 64


async def _ping(_req: web.Request) -> web.Response:
    return web.Response(text="OK", headers={"Api-Version": "1.47"})


async def _build(req: web.Request) -> web.Response:
    async for _chunk in req.content.iter_any():
        pass
    return web.Response(text='{"stream":"%s\\n"}\n' % _ID, content_type="application/json")


def serve(path: str, ready: threading.Event) -> None:
    async def run() -> None:
        app = web.Application()
        app.router.add_route("*", "/_ping", _ping)
        app.router.add_post("/{version}/build", _build)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, path).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


def main() -> int:
    a = parser(__doc__.splitlines()[0]).parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-build-floor-"))
    try:
        sock = str(work / "discard.sock")
        ready = threading.Event()
        threading.Thread(target=serve, args=(sock, ready), daemon=True).start()
        if not ready.wait(10):
            raise SystemExit("the discarding server did not start")
        asyncio.run(ensure_image(a.host, a.image))
        ctx = make_context(work / "ctx", a.image)
        docker_build(a.host, ctx)  # the engine has it cached from here on
        samples: dict[str, list[float]] = {"asyncdock": [], "cli-floor": []}
        for _ in range(a.runs):
            samples["asyncdock"].append(docker_build(a.host, ctx) * 1000)
            samples["cli-floor"].append(docker_build(sock, ctx) * 1000)
        report("build-cached-vs-cli-floor", "ms", samples, extra={"files": 2000})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
