"""The API application: version prefix, routing, error mapping, and the Unix socket listener."""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import msgspec

from ..base.version import __version__
from ..base import apiversion, errors
from ..util.errtext import client_text
from .http import (DateCache, HttpConnection, Request, Response, Router, StreamResponse,
                   empty_response, error_response)

log = logging.getLogger(__name__)

API_VERSION = apiversion.NEWEST
API_VERSION_STR = apiversion.text(API_VERSION)

_VERSION_PREFIX = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")

# One module per resource; each has register(router).
ROUTE_MODULES = ("system", "images", "image_archive", "containers", "exec", "container_io", "events", "networks", "volumes", "swarm", "commit", "build", "unimplemented")



class App:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.router = Router()
        self.date = DateCache()
        self._inline: dict[Any, bool] = {}
        # the served range's floor, checked by load_config already (a daemon with a bad one never starts)
        self.min_version = apiversion.configured_minimum(engine.config.min_api_version, os.environ)
        self.min_version_text = apiversion.text(self.min_version)
        self._common = (
            f"Api-Version: {API_VERSION_STR}\r\nDocker-Experimental: false\r\nOstype: linux\r\n"
            f"Server: asyncdock/{__version__} (linux)\r\n"
        ).encode()
        self._common_no_exp = (
            f"Api-Version: {API_VERSION_STR}\r\nOstype: linux\r\nServer: asyncdock/{__version__} (linux)\r\n"
        ).encode()
        for name in ROUTE_MODULES:
            try:
                module = importlib.import_module(f".routes.{name}", __package__)
            except ModuleNotFoundError as e:
                if e.name and e.name.endswith(f"routes.{name}"):
                    continue  # resource not built yet: the catch-all below answers for it
                raise
            module.register(self.router)

    def common_headers(self, req: Request | None) -> bytes:
        if req is not None and req.version_rejected:
            return self._common_no_exp
        return self._common

    def prepare(self, req: Request) -> Response | Any:
        """Everything that needs no await: version prefix, routing. Returns an error Response
        or the handler (with req.match set)."""
        path = req.path
        m = _VERSION_PREFIX.match(path)
        if m is not None:
            version = (int(m.group(1)), int(m.group(2)))
            path = m.group(3)
            # dockerd's texts, both a 400 with a JSON body (versionUnsupportedError is an
            # InvalidParameter); the response carries no Docker-Experimental header
            if version > API_VERSION:
                req.version_rejected = True
                return error_response(
                    f"client version {m.group(1)}.{m.group(2)} is too new. Maximum supported API version is {API_VERSION_STR}", 400)
            if version < self.min_version:
                req.version_rejected = True
                return error_response(
                    f"client version {m.group(1)}.{m.group(2)} is too old. Minimum supported API version is "
                    f"{self.min_version_text}, please upgrade your client to a newer version", 400)
            req.api_version = version
        else:
            req.api_version = API_VERSION
        req.engine = self.engine
        req.app = self
        method = "GET" if req.method == "HEAD" and not path.startswith("/_ping") else req.method
        found = self.router.resolve(method, path)
        if not found:
            if found is False:
                return error_response("page not found", 404) if req.method != "HEAD" else error_response("", 405)
            return error_response("page not found", 404)
        handler, params = found  # type: ignore[misc]
        req.match = params
        return handler

    def is_inline(self, handler: Any) -> bool:
        """Plain (non-async) handlers answer from memory: they run in the protocol callback,
        with no task per request (the hot paths: ping, version)."""
        inline = self._inline.get(handler)
        if inline is None:
            inline = self._inline[handler] = not inspect.iscoroutinefunction(handler)
        return inline

    def call_inline(self, req: Request, handler: Any) -> Response:
        try:
            return handler(req)
        except errors.NotModified:
            return empty_response(304)
        except errors.EngineError as e:
            return error_response(e.message, e.status)
        except Exception as e:
            return internal_error(req, e)

    async def dispatch(self, req: Request, handler: Any = None) -> Response | StreamResponse | Any:
        if handler is None:
            handler = self.prepare(req)
            if isinstance(handler, Response):
                return handler
            if self.is_inline(handler):
                return self.call_inline(req, handler)
        try:
            return await handler(req)
        except errors.NotModified:
            return empty_response(304)
        except errors.EngineError as e:
            if req._stream is not None:
                # the head is out already: report in-band as Docker's JSON message streams do
                write_in_band(req._stream, e.message)
                return req._stream
            return error_response(e.message, e.status)
        except (ConnectionResetError, BrokenPipeError):
            raise asyncio.CancelledError from None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never a traceback to the client
            if req._stream is not None:
                internal_error(req, e)
                return req._stream
            return internal_error(req, e)


def write_in_band(stream: StreamResponse, message: str) -> None:
    """An error after the head went out, as Docker's JSON message streams carry one."""
    stream.write_nowait(msgspec.json.encode({"errorDetail": {"message": message}, "error": message}) + b"\r\n")


def internal_error(req: Request, e: Exception) -> Response:
    """An exception no handler turned into an EngineError. A full disk is the host's state, not
    a bug: one line, at warning level (inside a stream already begun, as its error message).
    Anything else is a bug: one line for the client and the log's error level, the traceback
    only at debug level."""
    full = errors.no_space(e, getattr(req.engine, "data_root", None))
    if full is not None:
        log.warning("%s %s: %s", req.method, req.path, full)
        if req._stream is not None:
            write_in_band(req._stream, full.message)
        return error_response(full.message, full.status)
    text = client_text(e)
    log.error("error serving %s %s: %s", req.method, req.path, text)
    log.debug("traceback of the error serving %s %s", req.method, req.path, exc_info=e)
    return error_response(f"internal error: {text}", 500)


class ApiServer:
    """Listens on Unix sockets; each connection is an HttpConnection bound to the app."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._servers: list[asyncio.AbstractServer] = []
        self._paths: list[Path] = []

    async def listen_unix(self, path: str | os.PathLike[str], mode: int = 0o660) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISSOCK(p.lstat().st_mode):
                p.unlink()
        except FileNotFoundError:
            pass
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(lambda: HttpConnection(self.app), path=str(p), backlog=1024)
        os.chmod(p, mode)
        self._servers.append(server)
        self._paths.append(p)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except (asyncio.TimeoutError, Exception):
                pass
        for p in self._paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self._servers.clear()
