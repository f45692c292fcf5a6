"""asyncdock.Client: an async client for any Docker-compatible socket (asyncdock, Docker, Podman).

    async with asyncdock.Client() as client:         # DOCKER_HOST, else /run/asyncdock.sock
        c = await client.containers.run("busybox", ["echo", "hi"], detach=True)
        print(await c.wait(), await c.logs())

Errors: every non-2xx answer raises an `APIError` (`.status`, `.message`); 404 is also a
`NotFound` and 409 a `Conflict` (asyncdock.base.errors), so either may be caught.
"""
from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec

from ..base import errors as _errors
from ..events.models import Event
from . import models as m
from .transport import InProcessTransport, Response, UnixTransport, request

T = TypeVar("T")
DEFAULT_SOCKET = "/run/asyncdock.sock"
CLIENT_API_VERSION = (1, 41)
GAP_TYPE = "x-asyncdock-gap"
PROGRESS_TYPE = "x-asyncdock-progress"
_ERRCLS: dict[int, type[_errors.APIError]] = {}


def api_error(message: str, status: int) -> _errors.APIError:
    """An APIError that is also the engine's category (NotFound, Conflict, ...) for the status."""
    base = type(_errors.status_error(message, status))
    if base is _errors.APIError:
        return _errors.APIError(message, status)
    cls = _ERRCLS.get(status)
    if cls is None:
        cls = _ERRCLS[status] = type(base.__name__, (base, _errors.APIError), {"__module__": __name__})
    return cls(message, status)


async def _check(resp: Response) -> Response:
    if resp.status >= 400:
        body = await resp.read()
        resp.close()
        message = body.decode(errors="replace").strip()
        try:
            message = msgspec.json.decode(body).get("message", message)
        except Exception:
            pass
        raise api_error(message or resp.reason, resp.status)
    return resp


def host_transport(host: str | None = None) -> UnixTransport:
    host = host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not host.startswith("unix://"):
        raise ValueError(f"only unix:// hosts are supported, not {host!r}")
    return UnixTransport(host[len("unix://"):])


class Client:
    def __init__(self, host: str | None = None, *, transport: Any = None, version: str | None = None) -> None:
        self.transport = transport or host_transport(host)
        self._version = version
        self.containers = Containers(self)
        self.images = Images(self)
        self.exec = Execs(self)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        pass  # one connection per request: nothing pooled to close

    # ---- plumbing
    async def api_version(self) -> str:
        """Negotiated like the docker CLI: the lower of ours and the server's."""
        if self._version is None:
            resp = await _check(await request(self.transport, "GET", "/version"))
            v = msgspec.json.decode(await resp.read(), type=m.Version)
            resp.close()
            try:
                server = tuple(int(x) for x in v.api_version.split("."))
            except ValueError:
                server = CLIENT_API_VERSION
            use = min(server, CLIENT_API_VERSION)
            self._version = "%d.%d" % use
        return self._version

    async def raw(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
                  upgrade: bool = False, headers: dict[str, str] | None = None) -> Response:
        data = None if body is None else (body if isinstance(body, bytes) else msgspec.json.encode(body))
        v = await self.api_version()
        resp = await request(self.transport, method, f"/v{v}{path}", query=query, body=data,
                             upgrade=upgrade, headers=headers)
        return await _check(resp)

    async def call(self, method: str, path: str, type: type[T] | None = None, **kw: Any) -> Any:
        resp = await self.raw(method, path, **kw)
        try:
            data = await resp.read()
        finally:
            resp.close()
        if type is None:
            return msgspec.json.decode(data) if data.strip() else None
        return msgspec.json.decode(data, type=type)

    # ---- system
    async def ping(self) -> bool:
        resp = await _check(await request(self.transport, "GET", "/_ping"))
        ok = (await resp.read()).strip() == b"OK"
        resp.close()
        return ok

    async def version(self) -> m.Version:
        return await self.call("GET", "/version", m.Version)

    async def info(self) -> dict[str, Any]:
        return await self.call("GET", "/info")

    async def events(self, *, filters: dict[str, list[str]] | None = None, since: float | str | None = None,
                     until: float | str | None = None, after: str | None = None,
                     reconnect: bool = True) -> AsyncIterator[Event]:
        """Docker events as `Event`s. With asyncdock the iterator keeps the last
        `x-asyncdock-seq` and, if the connection drops (daemon restart, or it fell behind and got a
        gap record), reconnects and resumes strictly after it: nothing missed, nothing twice.
        `since`/`until`: Unix seconds (float or str), as the API takes them."""
        cursor = after
        last_time: int | None = None
        delay = 0.05
        while True:
            q: dict[str, Any] = {}
            if filters:
                q["filters"] = msgspec.json.encode(filters).decode()
            if cursor:
                q["x-asyncdock-after"] = cursor
            elif last_time is not None:
                q["since"] = f"{last_time // 1_000_000_000}.{last_time % 1_000_000_000:09d}"
            elif since is not None:
                q["since"] = _ts(since)
            if until is not None:
                q["until"] = _ts(until)
            try:
                resp = await self.raw("GET", "/events", query=q)
            except (OSError, asyncio.IncompleteReadError) as e:
                if not reconnect:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                del e
                continue
            delay = 0.05
            ended = False
            try:
                async for line in resp.iter_lines():
                    ev = msgspec.json.decode(line, type=Event)
                    if ev.type == GAP_TYPE:
                        if ev.action == "lagged":
                            cursor = ev.x_seq
                            break  # the server ends the stream; resume from the journal
                        yield ev  # "trimmed": events before the journal's start are gone
                        continue
                    if ev.x_seq:
                        cursor = ev.x_seq
                    else:
                        last_time = ev.time_nano + 1  # no cursor (Docker): resume by time
                    yield ev
                else:
                    ended = True
            except (OSError, asyncio.IncompleteReadError):
                if not reconnect:
                    raise
            finally:
                resp.close()
            if ended and (until is not None or not reconnect):
                return

    async def progress(self, ref: str | None = None) -> AsyncIterator[tuple[str, m.Progress]]:
        """Live pull progress of every pull in the daemon (also those other clients started),
        as (reference, message). asyncdock only (x-asyncdock-progress)."""
        resp = await self.raw("GET", "/events", query={"filters": msgspec.json.encode({"type": [PROGRESS_TYPE]}).decode()})
        try:
            async for line in resp.iter_lines():
                d = msgspec.json.decode(line)
                r = d.get("Actor", {}).get("ID", "")
                if ref is None or r == ref or r.startswith(ref):
                    yield r, msgspec.convert(d.get("progress", {}), m.Progress)
        finally:
            resp.close()

    async def prune(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for what in ("containers", "images"):
            try:
                out[what] = await self.call("POST", f"/{what}/prune")
            except _errors.APIError as e:
                out[what] = {"error": e.message}
        return out


def _ts(v: float | str) -> str:
    if isinstance(v, str):
        return v
    ns = int(v * 1e9)
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


_FRAME = struct.Struct(">BxxxI")


class HijackedStream:
    """The raw stream of an attach or exec start. `multiplexed` (no TTY): 8-byte frame headers
    carry the stream number (1 stdout, 2 stderr)."""

    def __init__(self, resp: Response, multiplexed: bool) -> None:
        self._r = resp._reader
        self._w = resp._writer
        self.multiplexed = multiplexed

    async def read(self) -> tuple[int, bytes] | None:
        """The next (stream, data), or None at EOF."""
        try:
            if not self.multiplexed:
                data = await self._r.read(65536)
                return (1, data) if data else None
            hdr = await self._r.readexactly(8)
            stream, size = _FRAME.unpack(hdr)
            return stream, await self._r.readexactly(size)
        except asyncio.IncompleteReadError:
            return None

    def __aiter__(self) -> HijackedStream:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        item = await self.read()
        if item is None:
            raise StopAsyncIteration
        return item

    async def write(self, data: bytes) -> None:
        self._w.write(data)
        await self._w.drain()

    def close_write(self) -> None:
        """Half-close: the container's stdin sees EOF, output keeps coming."""
        if self._w.can_write_eof():
            self._w.write_eof()

    async def output(self) -> tuple[bytes, bytes]:
        out, err = bytearray(), bytearray()
        async for stream, data in self:
            (err if stream == 2 else out).extend(data)
        return bytes(out), bytes(err)

    def close(self) -> None:
        self._w.close()


def _demux(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos + 8 <= len(data):
        stream, size = _FRAME.unpack_from(data, pos)
        out.append((stream, data[pos + 8:pos + 8 + size]))
        pos += 8 + size
    return out


class Container:
    def __init__(self, client: Client, id: str, attrs: m.ContainerInspect | None = None) -> None:
        self.client = client
        self.id = id
        self.attrs = attrs

    def __repr__(self) -> str:
        return f"<Container {self.id[:12]}>"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def name(self) -> str:
        return self.attrs.name.lstrip("/") if self.attrs else ""

    @property
    def status(self) -> str:
        return self.attrs.state.status if self.attrs else ""

    async def inspect(self) -> m.ContainerInspect:
        self.attrs = await self.client.call("GET", f"/containers/{self.id}/json", m.ContainerInspect)
        return self.attrs

    reload = inspect

    async def start(self) -> None:
        try:
            await self.client.call("POST", f"/containers/{self.id}/start")
        except _errors.NotModified:
            pass

    async def stop(self, timeout: int | None = None, signal: str | None = None) -> None:
        await self.client.call("POST", f"/containers/{self.id}/stop", query={"t": timeout, "signal": signal})

    async def restart(self, timeout: int | None = None) -> None:
        await self.client.call("POST", f"/containers/{self.id}/restart", query={"t": timeout})

    async def kill(self, signal: str | int | None = None) -> None:
        await self.client.call("POST", f"/containers/{self.id}/kill", query={"signal": signal})

    async def remove(self, *, force: bool = False, v: bool = False) -> None:
        await self.client.call("DELETE", f"/containers/{self.id}", query={"force": force, "v": v})

    async def rename(self, name: str) -> None:
        await self.client.call("POST", f"/containers/{self.id}/rename", query={"name": name})

    async def wait(self, condition: str | None = None) -> m.WaitResult:
        return await self.client.call("POST", f"/containers/{self.id}/wait", m.WaitResult,
                                      query={"condition": condition})

    def _tty(self) -> bool:
        return bool(self.attrs and self.attrs.config.tty)

    async def logs(self, *, stdout: bool = True, stderr: bool = True, timestamps: bool = False,
                   tail: str | int = "all", since: int | None = None) -> bytes:
        """Everything logged so far, stdout and stderr interleaved, as bytes (like docker-py)."""
        out = bytearray()
        async for _, data in self.stream_logs(stdout=stdout, stderr=stderr, timestamps=timestamps,
                                              tail=tail, since=since, follow=False):
            out += data
        return bytes(out)

    async def stream_logs(self, *, stdout: bool = True, stderr: bool = True, follow: bool = True,
                          timestamps: bool = False, tail: str | int = "all",
                          since: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, data) pairs; with follow, until the container stops."""
        if self.attrs is None:
            await self.inspect()
        resp = await self.client.raw("GET", f"/containers/{self.id}/logs", query={
            "stdout": stdout, "stderr": stderr, "follow": follow, "timestamps": timestamps,
            "tail": str(tail), "since": since})
        try:
            multiplexed = "multiplexed" in resp.headers.get("content-type", "") or not self._tty()
            buf = b""
            async for chunk in resp.iter_chunks():
                if not multiplexed:
                    yield 1, chunk
                    continue
                buf += chunk
                while len(buf) >= 8:
                    stream, size = _FRAME.unpack_from(buf)
                    if len(buf) < 8 + size:
                        break
                    yield stream, buf[8:8 + size]
                    buf = buf[8 + size:]
        finally:
            resp.close()

    async def stats(self, *, stream: bool = True) -> AsyncIterator[dict[str, Any]]:
        resp = await self.client.raw("GET", f"/containers/{self.id}/stats", query={"stream": stream})
        try:
            async for line in resp.iter_lines():
                yield msgspec.json.decode(line)
        finally:
            resp.close()

    @asynccontextmanager
    async def attach(self, *, stdin: bool = True, stdout: bool = True, stderr: bool = True,
                     logs: bool = False) -> AsyncIterator[HijackedStream]:
        if self.attrs is None:
            await self.inspect()
        resp = await self.client.raw("POST", f"/containers/{self.id}/attach", upgrade=True, query={
            "stream": True, "stdin": stdin, "stdout": stdout, "stderr": stderr, "logs": logs})
        s = HijackedStream(resp, multiplexed=not self._tty())
        try:
            yield s
        finally:
            s.close()

    @asynccontextmanager
    async def exec(self, cmd: list[str], *, stdin: bool = False, tty: bool = False, env: list[str] | None = None,
                   workdir: str | None = None, user: str | None = None) -> AsyncIterator[ExecStream]:
        """An exec instance's stream; after the block, `stream.exit_code` is set."""
        ex = await self.client.exec.create(self.id, cmd, stdin=stdin, tty=tty, env=env, workdir=workdir, user=user)
        async with self.client.exec.start(ex, tty=tty) as s:
            yield s

    async def commit(self, repository: str | None = None, tag: str | None = None, *, message: str | None = None,
                     author: str | None = None, changes: list[str] | None = None, pause: bool = True,
                     conf: dict[str, Any] | None = None) -> str:
        """`docker commit`: the new image's ID."""
        q = {"container": self.id, "repo": repository, "tag": tag, "comment": message, "author": author,
             "changes": changes or None, "pause": pause}
        res = await self.client.call("POST", "/commit", query=q, body=conf)
        return str(res["Id"])

    async def exec_run(self, cmd: list[str], **kw: Any) -> tuple[int | None, bytes, bytes]:
        """Run a command to completion: (exit code, stdout, stderr)."""
        async with self.exec(cmd, **kw) as s:
            out, err = await s.output()
        return s.exit_code, out, err


class ExecStream(HijackedStream):
    exit_code: int | None = None


class Execs:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def create(self, container: str, cmd: list[str], *, stdin: bool = False, tty: bool = False,
                     env: list[str] | None = None, workdir: str | None = None, user: str | None = None) -> str:
        body: dict[str, Any] = {"Cmd": cmd, "AttachStdin": stdin, "AttachStdout": True, "AttachStderr": True,
                                "Tty": tty}
        if env:
            body["Env"] = env
        if workdir:
            body["WorkingDir"] = workdir
        if user:
            body["User"] = user
        return (await self.client.call("POST", f"/containers/{container}/exec", body=body))["Id"]

    @asynccontextmanager
    async def start(self, exec_id: str, *, tty: bool = False) -> AsyncIterator[ExecStream]:
        resp = await self.client.raw("POST", f"/exec/{exec_id}/start", upgrade=True,
                                     body={"Detach": False, "Tty": tty})
        s = ExecStream(resp, multiplexed=not tty)
        try:
            yield s
        finally:
            s.close()
            try:
                s.exit_code = (await self.inspect(exec_id)).exit_code
            except _errors.APIError:
                pass

    async def inspect(self, exec_id: str) -> m.ExecInspect:
        return await self.client.call("GET", f"/exec/{exec_id}/json", m.ExecInspect)


class Containers:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def list(self, *, all: bool = False, filters: dict[str, list[str]] | None = None,
                   limit: int | None = None, size: bool = False) -> list[m.ContainerSummary]:
        q: dict[str, Any] = {"all": all, "size": size}
        if filters:
            q["filters"] = msgspec.json.encode(filters).decode()
        if limit:
            q["limit"] = limit
        return await self.client.call("GET", "/containers/json", list[m.ContainerSummary], query=q)

    async def get(self, id_or_name: str) -> Container:
        attrs = await self.client.call("GET", f"/containers/{id_or_name}/json", m.ContainerInspect)
        return Container(self.client, attrs.id, attrs)

    async def create(self, image: str, command: list[str] | str | None = None, *, name: str | None = None,
                     environment: list[str] | dict[str, str] | None = None, labels: dict[str, str] | None = None,
                     entrypoint: list[str] | None = None, working_dir: str | None = None, user: str | None = None,
                     tty: bool = False, stdin_open: bool = False, auto_remove: bool = False,
                     host_config: dict[str, Any] | None = None, pull: bool = True, **extra: Any) -> Container:
        if isinstance(command, str):
            command = ["sh", "-c", command]
        if isinstance(environment, dict):
            environment = [f"{k}={v}" for k, v in environment.items()]
        body: dict[str, Any] = {"Image": image, "Cmd": command, "Env": environment, "Labels": labels or {},
                                "Entrypoint": entrypoint, "WorkingDir": working_dir or "", "User": user or "",
                                "Tty": tty, "OpenStdin": stdin_open, "StdinOnce": stdin_open,
                                "AttachStdin": stdin_open, "AttachStdout": True, "AttachStderr": True,
                                "HostConfig": {"AutoRemove": auto_remove, **(host_config or {})}}
        body.update(extra)
        try:
            res = await self.client.call("POST", "/containers/create", body=body, query={"name": name})
        except _errors.NotFound as e:
            if not pull or "No such image" not in e.message:
                raise
            async for _ in self.client.images.pull(image):
                pass
            res = await self.client.call("POST", "/containers/create", body=body, query={"name": name})
        return Container(self.client, res["Id"])

    async def run(self, image: str, command: list[str] | str | None = None, *, detach: bool = False,
                  remove: bool = False, **kw: Any) -> Container | bytes:
        """detach=True: the started Container. Otherwise wait for it and return its output
        (stdout+stderr), removing it afterwards with remove=True; a non-zero exit raises
        ContainerError."""
        c = await self.create(image, command, auto_remove=remove and detach, **kw)
        await c.start()
        if detach:
            return c
        res = await c.wait()
        out = await c.logs()
        if remove:
            try:
                await c.remove(force=True)
            except _errors.NotFound:
                pass
        if res.status_code != 0:
            raise ContainerError(c, res.status_code, out)
        return out


class ContainerError(_errors.APIError):
    def __init__(self, container: Container, exit_status: int, output: bytes) -> None:
        super().__init__(f"container {container.short_id} exited with {exit_status}", 500)
        self.container = container
        self.exit_status = exit_status
        self.output = output


class Images:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def list(self, *, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[m.ImageSummary]:
        q: dict[str, Any] = {"all": all}
        if filters:
            q["filters"] = msgspec.json.encode(filters).decode()
        return await self.client.call("GET", "/images/json", list[m.ImageSummary], query=q)

    async def inspect(self, name: str) -> dict[str, Any]:
        return await self.client.call("GET", f"/images/{name}/json")

    async def pull(self, ref: str, tag: str | None = None, *, platform: str | None = None) -> AsyncIterator[m.Progress]:
        """Progress messages as they come; raises APIError if the pull fails."""
        if tag is None and "@" not in ref:
            name, _, t = ref.rpartition(":")
            if name and "/" not in t:
                ref, tag = name, t
            else:
                tag = "latest"
        resp = await self.client.raw("POST", "/images/create", query={"fromImage": ref, "tag": tag, "platform": platform})
        try:
            async for line in resp.iter_lines():
                msg = msgspec.json.decode(line)
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    raise api_error(msg.get("error") or detail.get("message", "pull failed"), 500)
                yield msgspec.convert(msg, m.Progress)
        finally:
            resp.close()

    async def import_(self, source: bytes | str, repository: str | None = None, tag: str | None = None, *,
                      message: str | None = None, changes: list[str] | None = None,
                      platform: str | None = None) -> str:
        """`docker import`: `source` is the tar itself (plain or compressed) or a URL to fetch;
        the new image's ID."""
        q: dict[str, Any] = {"fromSrc": "-" if isinstance(source, bytes) else source, "repo": repository,
                             "tag": tag, "message": message, "changes": changes or None, "platform": platform}
        resp = await self.client.raw("POST", "/images/create", query=q,
                                     body=source if isinstance(source, bytes) else None,
                                     headers={"Content-Type": "application/x-tar"} if isinstance(source, bytes) else None)
        last: dict[str, Any] = {}
        try:
            async for line in resp.iter_lines():
                last = msgspec.json.decode(line)
                if "error" in last or "errorDetail" in last:
                    detail = last.get("errorDetail") or {}
                    raise api_error(last.get("error") or detail.get("message", "import failed"), 500)
        finally:
            resp.close()
        return str(last.get("status", ""))

    async def push(self, name: str, tag: str | None = None, *,
                   auth: dict[str, str] | None = None) -> AsyncIterator[m.Progress]:
        """Push `name` (every tag of the repository when `tag` is None); progress messages as
        they come, the last one's `aux` holding the manifest digest; raises APIError if the
        push fails. `auth`: {"username", "password", ...} as `docker login` stores them."""
        header = base64.urlsafe_b64encode(msgspec.json.encode(auth or {})).decode()
        resp = await self.client.raw("POST", f"/images/{name}/push", query={"tag": tag},
                                     headers={"X-Registry-Auth": header})
        try:
            async for line in resp.iter_lines():
                msg = msgspec.json.decode(line)
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    raise api_error(msg.get("error") or detail.get("message", "push failed"), 500)
                yield msgspec.convert(msg, m.Progress)
        finally:
            resp.close()

    async def build(self, context: str | os.PathLike[str] | bytes, *, tag: str | list[str] | None = None,
                    dockerfile: str | None = None, buildargs: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None, target: str | None = None, nocache: bool = False,
                    pull: bool = False, rm: bool = True, forcerm: bool = False, quiet: bool = False,
                    platform: str | None = None, networkmode: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """`POST /build` (the classic builder): `context` is a directory (sent as a tar) or the
        bytes of a tar. Yields the progress messages (`stream`, `aux`, pull `status`); raises
        APIError on a build failure (`code` the failed RUN's exit code when there is one)."""
        if isinstance(context, bytes):
            body = context
        else:
            body = await asyncio.to_thread(_tar_dir, os.fspath(context))
        tags = [tag] if isinstance(tag, str) else list(tag or [])
        q: dict[str, Any] = {"t": tags or None, "dockerfile": dockerfile, "target": target, "nocache": nocache,
                             "pull": pull, "rm": rm, "forcerm": forcerm, "q": quiet, "platform": platform,
                             "networkmode": networkmode}
        if buildargs:
            q["buildargs"] = msgspec.json.encode(buildargs).decode()
        if labels:
            q["labels"] = msgspec.json.encode(labels).decode()
        resp = await self.client.raw("POST", "/build", query=q, body=body,
                                     headers={"Content-Type": "application/x-tar"})
        try:
            async for line in resp.iter_lines():
                if not line.strip():
                    continue
                msg = msgspec.json.decode(line)
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    err = api_error(msg.get("error") or detail.get("message", "build failed"), 500)
                    err.code = detail.get("code")  # type: ignore[attr-defined]
                    raise err
                yield msg
        finally:
            resp.close()

    async def tag(self, image: str, repo: str, tag: str | None = None) -> None:
        await self.client.call("POST", f"/images/{image}/tag", query={"repo": repo, "tag": tag})

    async def remove(self, image: str, *, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        return await self.client.call("DELETE", f"/images/{image}", query={"force": force, "noprune": noprune})

    async def prune(self, filters: dict[str, list[str]] | None = None) -> dict[str, Any]:
        q = {"filters": msgspec.json.encode(filters).decode()} if filters else None
        return await self.client.call("POST", "/images/prune", query=q)

    async def save(self, names: str | Sequence[str]) -> AsyncIterator[bytes]:
        """`docker save`: the archive's bytes as they come (names: tags, repositories, IDs)."""
        names = [names] if isinstance(names, str) else list(names)
        if len(names) == 1:
            resp = await self.client.raw("GET", f"/images/{names[0]}/get")
        else:
            resp = await self.client.raw("GET", "/images/get", query={"names": names})
        try:
            async for chunk in resp.iter_chunks():
                yield chunk
        finally:
            resp.close()

    async def load(self, data: bytes | AsyncIterable[bytes]) -> list[str]:
        """`docker load` of an archive (plain or compressed), given whole or as an async
        iterable streamed up as it comes; returns the loaded names (tags, or the IDs of
        untagged images). Raises APIError with the daemon's message if the load fails."""
        v = await self.client.api_version()
        resp = await _check(await request(self.client.transport, "POST", f"/v{v}/images/load",
                                          query={"quiet": True}, body=data,
                                          headers={"Content-Type": "application/x-tar"}))
        names: list[str] = []
        try:
            async for line in resp.iter_lines():
                msg = msgspec.json.decode(line)
                if "error" in msg or "errorDetail" in msg:
                    detail = msg.get("errorDetail") or {}
                    raise api_error(msg.get("error") or detail.get("message", "load failed"), 500)
                text = str(msg.get("stream", "")).strip()
                for prefix in ("Loaded image ID: ", "Loaded image: "):
                    if text.startswith(prefix):
                        names.append(text[len(prefix):])
                        break
        finally:
            resp.close()
        return names


def _tar_dir(path: str) -> bytes:
    """A directory as an uncompressed tar (what `docker build PATH` sends, .dockerignore aside:
    the daemon applies it)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in sorted(os.listdir(path)):
            tf.add(os.path.join(path, entry), arcname=entry)
    return buf.getvalue()


__all__ = ["Client", "Container", "Containers", "Images", "Execs", "HijackedStream", "ExecStream",
           "ContainerError", "InProcessTransport", "UnixTransport", "api_error"]
