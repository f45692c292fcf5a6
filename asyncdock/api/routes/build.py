"""/build: the classic builder (build/builder.py) with dockerd's progress stream; /build/prune."""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from ...base.errors import EngineError, InvalidParameter
from ...build.options import BuildOptions
from ...registry.auth import AuthConfig
from ...util.errtext import client_text
from ..http import Request, Response, Router, StreamResponse, json_response

log = logging.getLogger(__name__)


def _json_arg(req: Request, key: str, type_: Any, what: str) -> Any:
    raw = req.query.get(key, "")
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw.encode(), type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidParameter(f"error reading {what} JSON: {e}") from None


def _registry_config(header: str | None) -> dict[str, AuthConfig]:
    """X-Registry-Config: base64url JSON {registry: AuthConfig} (moby's DecodeAuthConfigs... for
    build: a bad one is ignored, as dockerd does)."""
    if not header:
        return {}
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        return msgspec.json.decode(raw, type=dict[str, AuthConfig])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        return {}


def options_of(req: Request) -> BuildOptions:
    q = req.query
    if q.get("version", "1") == "2":
        raise InvalidParameter("BuildKit builds (version=2) are not supported by asyncdock: use the classic "
                               "builder (DOCKER_BUILDKIT=0)")
    if req.arg_bool("squash"):
        raise InvalidParameter("squash is only supported with experimental mode")
    tags = req.query_list("t")
    from ...registry.reference import parse_normalized

    for t in tags:
        ref = parse_normalized(t)
        if ref.digest is not None:
            raise InvalidParameter(f"invalid reference format: {t} (a build tag cannot be a digest)")
    opts = BuildOptions(tags=tags)
    opts.dockerfile = q.get("dockerfile") or "Dockerfile"
    opts.target = q.get("target", "")
    opts.buildargs = _json_arg(req, "buildargs", dict[str, str | None], "build args") or {}
    opts.labels = _json_arg(req, "labels", dict[str, str], "labels") or {}
    opts.cachefrom = _json_arg(req, "cachefrom", list[str], "cache from") or []
    opts.nocache = req.arg_bool("nocache")
    opts.pull = req.arg_bool("pull")
    opts.quiet = req.arg_bool("q")
    opts.forcerm = req.arg_bool("forcerm")
    opts.rm = True if opts.forcerm or q.get("rm", "") == "" else req.arg_bool("rm")
    opts.shmsize = req.arg_int("shmsize", 0) or 0
    opts.memory = req.arg_int("memory", 0) or 0
    opts.memswap = req.arg_int("memswap", 0) or 0
    opts.cpushares = req.arg_int("cpushares", 0) or 0
    opts.cpuperiod = req.arg_int("cpuperiod", 0) or 0
    opts.cpuquota = req.arg_int("cpuquota", 0) or 0
    opts.cpusetcpus = q.get("cpusetcpus", "")
    opts.cpusetmems = q.get("cpusetmems", "")
    opts.networkmode = q.get("networkmode", "") or "default"
    hosts: list[str] = []
    for value in req.query_list("extrahosts"):
        hosts.extend(h for h in value.split(",") if h)
    opts.extrahosts = hosts
    opts.platform = q.get("platform", "")
    if opts.platform:
        from ...registry.platforms import host_platform, parse_platform

        want, host = parse_platform(opts.platform), host_platform()
        if want.os != host.os or (want.architecture and want.architecture != host.architecture):
            have = f"{host.os}/{host.architecture}"
            raise InvalidParameter(f'the classic builder runs steps on this host ({have}) only: platform '
                                   f'"{opts.platform}" cannot be built here')
    opts.auth = _registry_config(req.headers.get("x-registry-config"))
    return opts


def _error_message(e: BaseException) -> dict[str, Any]:
    text = str(e) if isinstance(e, EngineError) else client_text(e)
    detail: dict[str, Any] = {"message": text}
    code = getattr(e, "code", None)
    if isinstance(code, int):
        detail = {"code": code, "message": text}
    return {"errorDetail": detail, "error": text}


def _line(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, ensure_ascii=True, separators=(",", ":")).encode() + b"\r\n"


async def build(req: Request) -> Response | StreamResponse:
    opts = options_of(req)
    engine = req.engine
    builder = engine.builder
    from ...build.context import BuildContext

    workdir = Path(tempfile.mkdtemp(prefix="ctx-", dir=builder.work_root))
    ctx: Any = None
    try:
        remote = req.query.get("remote", "")
        if remote:
            ctx = await BuildContext.from_remote(remote, workdir, session=builder.http_session(),
                                                 dockerfile=opts.dockerfile)
        else:
            ctx = await BuildContext.from_tar(req.body_chunks(), workdir, dockerfile=opts.dockerfile)
        out = _Out(req, opts.quiet)
        try:
            image_id = await builder.build(opts, ctx, out.emit)
            if not opts.quiet:
                await out.emit({"stream": f"Successfully built {image_id.partition(':')[2][:12]}\n"})
            for tag in opts.tags:
                familiar = await builder.tag(image_id, tag)
                if not opts.quiet:
                    await out.emit({"stream": f"Successfully tagged {familiar}\n"})
            if opts.quiet:
                stream = await out.stream()
                await stream.write(_line({"stream": image_id + "\n"}))
        except ConnectionError:
            raise
        except Exception as e:  # noqa: BLE001 - in-stream, every failure is an errorDetail
            if out.started is None and (not opts.quiet or not out.buffered):
                raise  # nothing sent yet: a plain JSON error with its status, as dockerd
            if not isinstance(e, EngineError):
                log.error("build failed: %s", client_text(e))
                log.debug("traceback of the failed build", exc_info=e)
            await out.fail(e)
        return await out.stream()
    finally:
        if ctx is not None:
            with contextlib.suppress(Exception):
                await ctx.close()
        shutil.rmtree(workdir, ignore_errors=True)


class _Out:
    """The progress stream: its head goes out with the first message (an error before it is
    a plain JSON error with dockerd's status); q=1 keeps the messages back (shown only when the
    build fails, as dockerd's notVerboseBuffer)."""

    def __init__(self, req: Request, quiet: bool) -> None:
        self.req = req
        self.quiet = quiet
        self.started: StreamResponse | None = None
        self.buffered: list[bytes] = []

    async def stream(self) -> StreamResponse:
        if self.started is None:
            self.started = await self.req.stream(content_type="application/json")
        return self.started

    async def emit(self, msg: dict[str, Any]) -> None:
        data = _line(msg)
        if self.quiet:
            self.buffered.append(data)
            return
        await (await self.stream()).write(data)

    async def fail(self, e: BaseException) -> None:
        stream = await self.stream()
        for data in self.buffered:
            await stream.write(data)
        self.buffered.clear()
        await stream.write(_line(_error_message(e)))


async def build_prune(req: Request) -> Response:
    from ...base.filters import parse_filters

    parse_filters(req.query.get("filters"), ("until", "id", "parent", "type", "description", "inuse", "shared",
                                              "private", "label", "label!"))
    deleted, reclaimed = await req.engine.builder.prune(all_=req.arg_bool("all"))
    return json_response({"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


async def build_cancel(req: Request) -> Response:
    return json_response(None)


def register(router: Router) -> None:
    router.add("POST", "/build", build)
    router.add("POST", "/build/prune", build_prune)
    router.add("POST", "/build/cancel", build_cancel)
