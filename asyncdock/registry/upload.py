"""Blob and manifest uploads (the distribution API's push side) on a `Repository`.

    HEAD  /v2/<name>/blobs/<digest>                         does the registry have it?
    POST  /v2/<name>/blobs/uploads/?mount=<d>&from=<repo>   201: mounted; 202: an upload began
    POST  /v2/<name>/blobs/uploads/                         202 + Location: an upload session
    PATCH <location>  Content-Range: a-b                    one chunk; 202 + the next Location
    GET   <location>                                        204 + Range: 0-N (what it holds)
    PUT   <location>&digest=<d>  [body]                     201: the blob is committed
    PUT   /v2/<name>/manifests/<tag>                        201 + Docker-Content-Digest

A blob is read from a `BlobSource`, a file that may still be growing (a layer being compressed
while it uploads): each chunk is sent once its bytes exist. A blob that is complete and small
goes in one PUT. A chunk whose connection drops is resumed: the upload's status says how many
bytes the registry kept and the upload continues there; a registry that lost the session (or
refuses the status request) gets a new one, from byte 0.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from ..base.errors import EngineError
from .client import RegistryError, Repository, _conn_error_text, _errcode_text, _first_error

log = logging.getLogger(__name__)

MONOLITHIC_MAX = 4 << 20  # a complete blob up to this size goes in one PUT
CHUNK_SIZE = 64 << 20  # one PATCH at most; a drop costs at most this much again
_READ = 1 << 20
MAX_UPLOAD_RETRIES = 5

Progress = Callable[[int], None]


class BlobSource(Protocol):
    """A blob's bytes in a file that may still be growing."""

    path: Path

    @property
    def complete(self) -> bool: ...

    @property
    def size(self) -> int: ...  # bytes written so far (all of them once complete)

    @property
    def digest(self) -> str: ...  # valid once complete

    async def wait_for(self, end: int) -> int:
        """Wait until `end` bytes exist or the blob is complete; returns the bytes that exist."""
        ...


class StoredBlob:
    """A blob already complete on disk (the content store's)."""

    def __init__(self, path: Path, digest: str, size: int) -> None:
        self.path = path
        self._digest = digest
        self._size = size

    @property
    def complete(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    @property
    def digest(self) -> str:
        return self._digest

    async def wait_for(self, end: int) -> int:
        return self._size


class BlobMounted(Exception):
    """The registry mounted the blob from another repository (no upload needed)."""


def _raise_for(resp: aiohttp.ClientResponse, body: bytes, what: str) -> EngineError:
    code, message = _first_error(body)
    if resp.status == 401:
        return RegistryError(_errcode_text("UNAUTHORIZED", message or "authentication required"), 401)
    if code:
        return RegistryError(_errcode_text(code, message), 404 if resp.status == 404 else 500)
    return RegistryError(f"{what}: unexpected status {resp.status} {resp.reason or ''}".rstrip(), 500)


def _absolute(repo: Repository, location: str) -> str:
    return urljoin(repo.endpoint.base + "/", location)


def _with_query(url: str, **params: str) -> str:
    sep = "&" if urlsplit(url).query else "?"
    return url + sep + urlencode(params)


async def blob_exists(repo: Repository, digest: str) -> int | None:
    """The blob's size if the repository has it, None if not."""
    url = f"{repo.endpoint.base}/v2/{repo.ref.path}/blobs/{digest}"
    resp = await repo._request("HEAD", url)
    try:
        if resp.status == 200:
            return int(resp.headers.get("Content-Length", "0") or 0)
        if resp.status == 404:
            return None
        raise _raise_for(resp, b"", f"Head \"{url}\"")
    finally:
        resp.release()


async def start_upload(repo: Repository, *, mount: str | None = None, source_repo: str | None = None) -> str:
    """Open an upload session; its Location. With `mount` and `source_repo`, ask the registry
    to mount the blob from that repository first: raises BlobMounted when it did."""
    url = f"{repo.endpoint.base}/v2/{repo.ref.path}/blobs/uploads/"
    if mount and source_repo:
        url += "?" + urlencode({"mount": mount, "from": source_repo})
    resp = await repo._request("POST", url, {"Content-Length": "0"})
    try:
        body = await resp.read()
        if resp.status == 201 and mount:
            raise BlobMounted(source_repo)
        if resp.status != 202:
            raise _raise_for(resp, body, f"Post \"{url}\"")
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"Post \"{url}\": the registry answered 202 without a Location", 500)
        return _absolute(repo, location)
    finally:
        resp.release()


async def cancel_upload(repo: Repository, location: str) -> None:
    try:
        resp = await repo._request("DELETE", location)
        resp.release()
    except (aiohttp.ClientError, asyncio.TimeoutError, EngineError) as e:
        log.debug("cancelling upload %s: %s", location, e)


async def _file_range(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    """The bytes [start, end) of a file, read in a worker thread a MiB at a time."""
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = start
        while pos < end:
            chunk = await asyncio.to_thread(os.pread, fd, min(_READ, end - pos), pos)
            if not chunk:
                raise RegistryError(f"blob file {path.name} ended at {pos} bytes, expected {end}")
            pos += len(chunk)
            yield chunk
    finally:
        os.close(fd)


async def _growing_range(source: BlobSource, start: int) -> AsyncIterator[bytes]:
    """The bytes of a growing file from `start` to its end, as they are written."""
    pos = start
    while True:
        available = await source.wait_for(pos + 1)
        if pos >= available:
            if source.complete:
                return
            continue
        async for chunk in _file_range(source.path, pos, min(available, pos + (8 << 20))):
            pos += len(chunk)
            yield chunk


class _Counted:
    """Counts the bytes aiohttp takes from a chunk stream, for progress."""

    def __init__(self, chunks: AsyncIterator[bytes], base: int, progress: Progress | None) -> None:
        self._chunks = chunks
        self.sent = base
        self._progress = progress

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
            self.sent += len(chunk)
            if self._progress is not None:
                self._progress(self.sent)


async def upload_status(repo: Repository, location: str) -> tuple[int, str] | None:
    """(bytes the registry holds, the Location to continue at), or None when the session is
    gone or unusable."""
    try:
        resp = await repo._request("GET", location)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    try:
        await resp.read()
        if resp.status != 204:
            return None
        m = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("Range", ""))
        held = int(m.group(1)) + 1 if m else 0
        if held == 1 and resp.headers.get("Range", "") in ("0-0", "bytes=0-0"):
            held = 0  # distribution says 0-0 for an empty upload as well as for one byte
        nxt = resp.headers.get("Location")
        return held, _absolute(repo, nxt) if nxt else location
    finally:
        resp.release()


async def upload_blob(repo: Repository, source: BlobSource, *, location: str | None = None,
                      progress: Progress | None = None, chunk_size: int = CHUNK_SIZE,
                      monolithic_max: int = MONOLITHIC_MAX) -> str:
    """Upload `source`; returns the digest the registry committed. `location` continues a
    session already opened (a mount attempt that answered 202)."""
    retries = 0
    while True:
        if location is None:
            location = await start_upload(repo)
        try:
            return await _upload_session(repo, source, location, progress, chunk_size, monolithic_max)
        except _SessionLost as e:
            retries += 1
            if retries > MAX_UPLOAD_RETRIES:
                raise RegistryError(f"blob upload failed: {e}") from None
            log.info("upload session for %s lost (%s): starting a new one", repo.ref.path, e)
            location = None
            await asyncio.sleep(min(0.2 * retries, 2.0))


class _SessionLost(Exception):
    pass


async def _upload_session(repo: Repository, source: BlobSource, location: str, progress: Progress | None,
                          chunk_size: int, monolithic_max: int) -> str:
    if source.complete and source.size <= monolithic_max:
        return await _put_whole(repo, source, location, progress)
    offset = 0
    drops = 0
    while True:
        await source.wait_for(offset)  # raises what stopped a source still being written
        if source.complete:
            end = min(source.size, offset + chunk_size)
            if end <= offset:
                break
            counted = _Counted(_file_range(source.path, offset, end), offset, progress)
            headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end - 1}",
                       "Content-Length": str(end - offset)}
        else:
            # Still being written: one streamed PATCH that follows the file to its end (how
            # dockerd sends a layer it compresses), so the upload overlaps the compression.
            end = -1
            counted = _Counted(_growing_range(source, offset), offset, progress)
            headers = {"Content-Type": "application/octet-stream"}
        def chunk_body(c: _Counted = counted) -> AsyncIterator[bytes]:
            return c.__aiter__()

        try:
            resp = await repo._request("PATCH", location, headers, body=chunk_body)
            try:
                body = await resp.read()
            finally:
                resp.release()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
            drops += 1
            if drops > MAX_UPLOAD_RETRIES:
                raise RegistryError(f"blob upload failed: {_conn_error_text(e)}") from None
            status = await upload_status(repo, location)
            if status is None:
                raise _SessionLost(_conn_error_text(e)) from None
            offset, location = status
            log.info("upload to %s dropped (%s): resuming at byte %d", repo.ref.path, _conn_error_text(e), offset)
            if progress is not None:
                progress(offset)
            continue
        if resp.status == 416 or resp.status == 404:
            raise _SessionLost(f"the registry answered {resp.status} to a chunk")
        if resp.status != 202:
            raise _raise_for(resp, body, f"Patch \"{location}\"")
        drops = 0
        m = re.match(r"^(?:bytes=)?0-(\d+)$", resp.headers.get("Range", ""))
        offset = int(m.group(1)) + 1 if m else (end if end >= 0 else counted.sent)
        nxt = resp.headers.get("Location")
        if nxt:
            location = _absolute(repo, nxt)
        if progress is not None:
            progress(offset)
    return await _commit(repo, location, source.digest)


async def _put_whole(repo: Repository, source: BlobSource, location: str, progress: Progress | None) -> str:
    url = _with_query(location, digest=source.digest)
    size = source.size

    def body() -> AsyncIterator[bytes]:
        return _Counted(_file_range(source.path, 0, size), 0, progress).__aiter__()

    try:
        resp = await repo._request("PUT", url, {"Content-Type": "application/octet-stream",
                                                "Content-Length": str(size)}, body=body)
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as e:
        raise _SessionLost(_conn_error_text(e)) from None
    try:
        rbody = await resp.read()
        if resp.status in (404, 416):
            raise _SessionLost(f"the registry answered {resp.status}")
        if resp.status != 201:
            raise _raise_for(resp, rbody, f"Put \"{url}\"")
        return resp.headers.get("Docker-Content-Digest") or source.digest
    finally:
        resp.release()


async def _commit(repo: Repository, location: str, digest: str) -> str:
    url = _with_query(location, digest=digest)
    try:
        resp = await repo._request("PUT", url, {"Content-Length": "0"})
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as e:
        raise _SessionLost(_conn_error_text(e)) from None
    try:
        body = await resp.read()
        if resp.status == 404:
            raise _SessionLost("the registry lost the upload before it was committed")
        if resp.status != 201:
            raise _raise_for(resp, body, f"Put \"{url}\"")
        return resp.headers.get("Docker-Content-Digest") or digest
    finally:
        resp.release()


async def put_manifest(repo: Repository, tag_or_digest: str, body: bytes, media_type: str) -> str:
    """PUT a manifest under a tag (or its digest); returns the digest the registry gives it."""
    url = f"{repo.endpoint.base}/v2/{repo.ref.path}/manifests/{tag_or_digest}"
    resp = await repo._request("PUT", url, {"Content-Type": media_type}, body=lambda: body)
    try:
        rbody = await resp.read()
        if resp.status not in (200, 201, 202):
            raise _raise_for(resp, rbody, f"Put \"{url}\"")
        return resp.headers.get("Docker-Content-Digest", "")
    finally:
        resp.release()


async def ping(repo: Repository) -> None:
    """Choose the first endpoint that answers /v2/ (https, then http for an insecure registry)
    and remember its auth challenge, so the requests after it authenticate at once."""
    from .auth import parse_challenges

    errors: list[BaseException] = []
    for ep in repo._endpoints:
        repo.endpoint = ep
        try:
            async with repo.client.session().get(ep.base + "/v2/", ssl=ep.ssl) as resp:
                await resp.read()
                if resp.status == 401:
                    chs = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                    ch = next((c for c in chs if c.scheme == "bearer"), None) or \
                        next((c for c in chs if c.scheme == "basic"), None)
                    if ch is not None:
                        repo.client._challenges[ep.base] = ch
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as e:
            errors.append(e)
            continue
        repo.client._remember(ep)
        return
    last = errors[-1] if errors else None
    raise RegistryError(f"Get \"{repo.endpoint.base}/v2/\": {_conn_error_text(last) if last else 'no endpoint'}",
                        500)


__all__ = ["BlobMounted", "BlobSource", "StoredBlob", "blob_exists", "cancel_upload", "ping", "put_manifest",
           "start_upload", "upload_blob", "upload_status"]
