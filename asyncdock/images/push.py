"""`docker push`: the image's layers, config and manifest to a registry, with dockerd's
progress messages (distribution/push_v2.go).

Layers go in parallel (`max-concurrent-uploads`, 5 as in dockerd). For each one, in order: a
layer an earlier tag of this push sent is "Layer already exists" at once; a blob the
registry's repository has (HEAD) is "Layer already exists"; a blob we pulled from (or pushed
to) another repository of the same registry is mounted from there ("Mounted from
library/x"); otherwise it is uploaded. A layer stored uncompressed (one loaded from an archive)
is gzip-compressed while it uploads (isal, in parallel threads) into the content store, and the
gzip blob is remembered (images/origins.py): the next push finds and sends the same blob.

The manifest: the one the image was pulled with, byte for byte, when it names exactly the
blobs pushed (the digest stays the registry's); otherwise Docker's schema 2 as dockerd's
classic push writes it (OCI when a layer is zstd, which schema 2 cannot name). The config goes
byte for byte from the content store, so the image ID survives push, rmi and pull.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.errors import EngineError, InvalidParameter, NotFound, Unauthorized
from ..base.oci import (DOCKER_CONFIG, DOCKER_MANIFEST, MANIFEST_TYPES, OCI_CONFIG, OCI_MANIFEST, ManifestError,
                        classify_manifest, decode_manifest)
from ..config import DaemonConfig
from ..content.store import BlobWriter, ContentStore
from ..events import EventBus
from ..registry.auth import AuthConfig, repository_scope
from ..registry.client import RegistryClient, Repository
from ..registry.reference import Reference, parse_normalized
from ..registry import upload
from ..util.errtext import client_text
from . import progress as pm
from .origins import BlobOrigin, BlobOrigins
from .pull import Emitter, _stopped
from .store import ImageRecord, ImageStore

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], Awaitable[None]]

DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
UNCOMPRESSED = ("application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.v1.tar")
_ZSTD = (OCI_ZSTD, "application/vnd.docker.image.rootfs.diff.tar.zstd")
_GZIP = (DOCKER_GZIP, OCI_GZIP)
_PROGRESS_INTERVAL = 0.1
GZIP_LEVEL = 1  # isal's 0-3; 1 compresses about as well as zlib's default at many times the speed


class PushError(EngineError):
    pass


@dataclass(frozen=True)
class Pushed:
    digest: str
    size: int
    media_type: str


class CompressingLayer:
    """An uncompressed layer blob being gzip-compressed into a new content blob; a
    registry.upload.BlobSource whose file grows as the compressor writes it."""

    def __init__(self, writer: BlobWriter, total_in: int) -> None:
        self.path = writer.path
        self.writer = writer
        self.total_in = total_in
        self.consumed = 0  # uncompressed bytes read so far
        self._size = 0
        self._done = False
        self._digest = ""
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.stop = False  # set by the uploader when it gives up: the compressor stops early

    @property
    def complete(self) -> bool:
        return self._done

    @property
    def size(self) -> int:
        return self._size

    @property
    def digest(self) -> str:
        return self._digest

    async def wait_for(self, end: int) -> int:
        while not self._done and self._size < end:
            if self._error is not None:
                raise self._error
            self._changed.clear()
            await self._changed.wait()
        if self._error is not None:
            raise self._error
        return self._size

    # the compressor thread reports through these (call_soon_threadsafe)
    def _grew(self, size: int, consumed: int) -> None:
        self._size = size
        self.consumed = consumed
        self._changed.set()

    def _finished(self, digest: str | None, error: BaseException | None) -> None:
        if error is not None:
            self._error = error
        else:
            self._size = self.writer.size
            self._digest = digest or ""
            self._done = True
        self._changed.set()


class _HashingSink:
    """What the gzip writer writes to: the blob file, announcing each write to the loop."""

    def __init__(self, layer: CompressingLayer, reading: list[int]) -> None:
        self._layer = layer
        self._reading = reading

    def write(self, data: bytes) -> int:
        if self._layer.stop:
            raise _Stopped()
        n = self._layer.writer.write(data)
        self._layer._loop.call_soon_threadsafe(self._layer._grew, self._layer.writer.size, self._reading[0])
        return n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Stopped(Exception):
    pass


def _compress(src: Path, layer: CompressingLayer) -> None:
    """Worker thread: gzip `src` into the layer's blob file."""
    from isal import igzip_threaded

    reading = [0]
    try:
        threads = max(1, min(4, os.cpu_count() or 1))
        with open(src, "rb") as f, igzip_threaded.open(_HashingSink(layer, reading), "wb",  # type: ignore[no-untyped-call]
                                                       compresslevel=GZIP_LEVEL, threads=threads) as gz:
            while chunk := f.read(1 << 20):
                if layer.stop:
                    raise _Stopped()
                reading[0] += len(chunk)
                gz.write(chunk)
        digest = layer.writer.finish()
    except BaseException as e:  # noqa: BLE001 - reported to the uploader, which raises it
        layer._loop.call_soon_threadsafe(layer._finished, None, PushError(f"compressing layer: {client_text(e)}"))
        return
    layer._loop.call_soon_threadsafe(layer._finished, digest, None)


@dataclass
class _PushState:
    """What one push learnt, shared by its tags (dockerd's pushState.remoteLayers)."""

    remote: dict[str, Pushed] = field(default_factory=dict)  # diff ID -> blob the registry has
    jobs: dict[str, asyncio.Task[Pushed]] = field(default_factory=dict)


class Pusher:
    def __init__(self, config: DaemonConfig, content: ContentStore, images: ImageStore, registry: RegistryClient,
                 origins: BlobOrigins, bus: EventBus | None = None) -> None:
        self.config = config
        self.content = content
        self.images = images
        self.registry = registry
        self.origins = origins
        self.bus = bus
        self._uploads = asyncio.Semaphore(max(1, config.max_concurrent_uploads))

    async def push(self, name: str, tag: str, auth: AuthConfig | None, progress: ProgressFn | None) -> None:
        """Push `name` (its tag ignored, as the API says) at `tag`, or every tag of the
        repository when `tag` is empty. Errors are raised after the messages so far went out."""
        repo_ref, target = self.target(name, tag)
        out = Emitter(repo_ref, progress, self.bus)
        try:
            out.emit(pm.status(f"The push refers to repository [{repo_ref.domain}/{repo_ref.path}]"))
            tags = [r for r in self._repo_tags(repo_ref)]
            if not tags:
                raise NotFound(f"An image does not exist locally with the tag: {repo_ref.familiar_name}")
            if target is not None:
                if self.images.lookup(target) is None:
                    raise NotFound(f"tag does not exist: {target.familiar}")
                tags = [target]
            sources = self._mount_sources([self.images.get(self.images.lookup(t) or "") for t in tags], repo_ref)
            repo = await self.registry.repository(
                repo_ref, auth, actions="push,pull",
                extra_scopes=tuple(repository_scope(s) for s in sources))
            await upload.ping(repo)
            state = _PushState()
            for t in tags:
                image_id = self.images.lookup(t)
                if image_id is None:
                    continue
                rec = self.images.get(image_id)
                try:
                    await self._push_tag(repo, t, rec, out, state)
                finally:
                    for job in state.jobs.values():
                        job.cancel()
                    if state.jobs:
                        await asyncio.wait(list(state.jobs.values()))
                    state.jobs.clear()
                self.images.event("push", rec.id, t.familiar_name, actor=t.familiar)
            await out.flush()
        except Exception:
            # what was said before the error reaches the client first, as dockerd's stream
            with contextlib.suppress(Exception):
                await out.flush()
            raise
        except BaseException:
            out.cancel()
            raise

    @staticmethod
    def target(name: str, tag: str) -> tuple[Reference, Reference | None]:
        """(the repository, the tag to push or None for all): InvalidParameter for a bad name,
        before anything is streamed."""
        ref = parse_normalized(name)
        if not tag and ref.digest is not None:
            raise InvalidParameter("cannot push a digest reference")
        repo = ref.trimmed()
        if not tag:
            return repo, None
        try:
            return repo, repo.with_tag(tag)
        except ValueError as e:
            raise InvalidParameter(str(e)) from None

    def _repo_tags(self, repo: Reference) -> list[Reference]:
        found: list[Reference] = []
        for rec in self.images.list():
            # (ImageStore's own `list` method shadows the builtin in its annotations)
            for r in self.images.references(rec.id):  # type: ignore[attr-defined]
                if r.digest is None and r.domain == repo.domain and r.path == repo.path:
                    found.append(r)
        return sorted(found, key=str)

    def _mount_sources(self, recs: list[ImageRecord], target: Reference) -> list[str]:
        """Other repositories of the target's registry that hold some of these layers."""
        paths: list[str] = []
        prefix = target.domain + "/"
        for rec in recs:
            for diff_id in rec.diff_ids:
                for o in self.origins.of(diff_id):
                    if o.repository.startswith(prefix):
                        path = o.repository[len(prefix):]
                        if path != target.path and path not in paths:
                            paths.append(path)
        return paths[:10]

    # ---- one tag
    async def _push_tag(self, repo: Repository, ref: Reference, rec: ImageRecord, out: Emitter,
                        state: _PushState) -> None:
        layers = list(zip(rec.diff_ids, rec.layers))
        order = list(reversed(layers))  # dockerd lists and starts the top layer first
        for diff_id, _ in order:
            out.emit(pm.layer_status("Preparing", _short(diff_id)))
        jobs: list[asyncio.Task[Pushed]] = []
        for diff_id, blob in order:
            job = state.jobs.get(diff_id)
            if job is None:
                job = asyncio.create_task(self._push_layer(repo, ref, diff_id, blob, out, state),
                                          name=f"push layer {_short(diff_id)}")
                state.jobs[diff_id] = job
            jobs.append(job)
        if jobs:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            for j in jobs:
                if j.done() and not j.cancelled() and j.exception() is not None:
                    raise _push_error(j.exception())  # type: ignore[arg-type]
        pushed = {diff_id: state.jobs[diff_id].result() for diff_id, _ in layers}
        descs = [pushed[d] for d, _ in layers]
        await self._push_config(repo, rec)
        body, media_type = await self._manifest(rec, descs)
        try:
            digest = await upload.put_manifest(repo, ref.tag or "latest", body, media_type)
        except EngineError as e:
            raise _push_error(e) from None
        from hashlib import sha256
        local = "sha256:" + sha256(body).hexdigest()
        digest = digest or local
        out.emit(pm.status(f"{ref.tag}: digest: {digest} size: {len(body)}"))
        await asyncio.to_thread(self.content.put, body)
        await self.images.set_reference(ref.trimmed().with_digest(digest), rec.id)
        out.emit({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": digest, "Size": len(body)}})

    async def _push_config(self, repo: Repository, rec: ImageRecord) -> None:
        try:
            if await upload.blob_exists(repo, rec.id) is not None:
                return
            path = self.content.path(rec.id)
            size = await asyncio.to_thread(self.content.size, rec.id)
            await upload.upload_blob(repo, upload.StoredBlob(path, rec.id, size))
        except EngineError as e:
            raise _push_error(e) from None

    async def _manifest(self, rec: ImageRecord, descs: list[Pushed]) -> tuple[bytes, str]:
        """The pulled manifest when it names exactly these blobs, else a new one."""
        want = [d.digest for d in descs]
        for digest in rec.manifest_digests:
            if not self.content.exists(digest):
                continue
            data = await asyncio.to_thread(self.content.read_bytes, digest)
            try:
                mt = classify_manifest(data, "")
                if mt not in MANIFEST_TYPES:
                    continue
                m = decode_manifest(data)
            except (ManifestError, ValueError):
                continue
            if m.config is not None and m.config.digest == rec.id and [la.digest for la in m.layers] == want:
                return data, mt
        cfg_size = await asyncio.to_thread(self.content.size, rec.id)
        oci = any(d.media_type in _ZSTD for d in descs)
        if oci:
            doc: dict[str, Any] = {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "size": cfg_size, "digest": rec.id},
                "layers": [{"mediaType": OCI_ZSTD if d.media_type in _ZSTD else OCI_GZIP, "size": d.size,
                            "digest": d.digest} for d in descs],
            }
            mt = OCI_MANIFEST
        else:
            doc = {
                "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": cfg_size, "digest": rec.id},
                "layers": [{"mediaType": DOCKER_GZIP, "size": d.size, "digest": d.digest} for d in descs],
            }
            mt = DOCKER_MANIFEST
        # Go's json.MarshalIndent(m, "", "   "), as distribution's schema2 builder writes it
        return json.dumps(doc, indent=3).encode(), mt

    # ---- one layer
    async def _push_layer(self, repo: Repository, ref: Reference, diff_id: str, blob: Any, out: Emitter,
                          state: _PushState) -> Pushed:
        short = _short(diff_id)
        known = state.remote.get(diff_id)
        if known is not None:
            out.emit(pm.layer_status("Layer already exists", short))
            return known
        if self._uploads.locked():
            out.emit(pm.layer_status("Waiting", short))
        async with self._uploads:
            try:
                pushed = await self._push_layer_now(repo, ref, diff_id, blob, out)
            except EngineError as e:
                raise _push_error(e) from None
        state.remote[diff_id] = pushed
        return pushed

    def _candidates(self, diff_id: str, blob: Any) -> list[BlobOrigin]:
        """Compressed blobs known for the layer: the image's own first, then the remembered."""
        out: list[BlobOrigin] = []
        if blob.media_type not in UNCOMPRESSED:
            out.append(BlobOrigin(blob.digest, blob.media_type, ""))
        out.extend(o for o in self.origins.of(diff_id) if o.mediaType not in UNCOMPRESSED)
        return out

    async def _push_layer_now(self, repo: Repository, ref: Reference, diff_id: str, blob: Any,
                              out: Emitter) -> Pushed:
        short = _short(diff_id)
        target = f"{ref.domain}/{ref.path}"
        candidates = self._candidates(diff_id, blob)
        # 1. does the repository have one of them? (the image's own blob, or one pushed there)
        checked: set[str] = set()
        for c in candidates:
            if c.digest in checked or not (c.repository in ("", target)):
                continue
            checked.add(c.digest)
            size = await upload.blob_exists(repo, c.digest)
            if size is not None:
                out.emit(pm.layer_status("Layer already exists", short))
                pushed = Pushed(c.digest, size or self._local_size(c.digest, blob), _wire_type(c.mediaType))
                await self.origins.add([(diff_id, BlobOrigin(c.digest, c.mediaType, target))])
                return pushed
        # 2. mount it from another repository of the registry
        location: str | None = None
        prefix = ref.domain + "/"
        tried = 0
        for c in candidates:
            if not c.repository.startswith(prefix) or c.repository == target or tried >= 4:
                continue
            tried += 1
            source = c.repository[len(prefix):]
            try:
                if location is not None:
                    await upload.cancel_upload(repo, location)
                location = await upload.start_upload(repo, mount=c.digest, source_repo=source)
            except upload.BlobMounted:
                out.emit(pm.layer_status(f"Mounted from {source}", short))
                await self.origins.add([(diff_id, BlobOrigin(c.digest, c.mediaType, target))])
                return Pushed(c.digest, self._local_size(c.digest, blob), _wire_type(c.mediaType))
            except EngineError as e:
                log.info("mounting %s from %s failed: %s", c.digest, source, e)
                location = None
        # 3. upload: a compressed blob we hold, or the uncompressed one compressed now
        local = next((c for c in candidates if self.content.exists(c.digest)), None)
        if local is not None:
            size = await asyncio.to_thread(self.content.size, local.digest)
            src: upload.BlobSource = upload.StoredBlob(self.content.path(local.digest), local.digest, size)
            sent = await self._upload(repo, src, location, out, short, None)
            result = Pushed(sent, size, _wire_type(local.mediaType))
            await self.origins.add([(diff_id, BlobOrigin(local.digest, local.mediaType, target))])
        else:
            result = await self._compress_and_upload(repo, diff_id, blob, location, out, short)
            await self.origins.add([(diff_id, BlobOrigin(result.digest, result.media_type, target))])
        out.emit(pm.layer_status("Pushed", short))
        return result

    def _local_size(self, digest: str, blob: Any) -> int:
        if digest == blob.digest:
            return int(blob.size)
        try:
            return self.content.size(digest)
        except NotFound:
            return 0

    async def _upload(self, repo: Repository, src: upload.BlobSource, location: str | None, out: Emitter,
                      short: str, compressing: CompressingLayer | None) -> str:
        last = [0.0]

        def report(sent: int) -> None:
            now = time.monotonic()
            if now - last[0] < _PROGRESS_INTERVAL:
                return
            last[0] = now
            if compressing is not None and not compressing.complete:
                # Docker counts the uncompressed bytes read against the layer's size
                produced = max(compressing.size, 1)
                out.emit(pm.layer_progress("Pushing", short, min(int(sent * compressing.consumed / produced),
                                                                 compressing.total_in), compressing.total_in))
            else:
                total = compressing.total_in if compressing is not None else src.size
                current = total if compressing is not None and sent >= src.size else sent
                out.emit(pm.layer_progress("Pushing", short, current, total))

        digest = await upload.upload_blob(repo, src, location=location, progress=report)
        total = compressing.total_in if compressing is not None else src.size
        out.emit(pm.layer_progress("Pushing", short, total, total))
        return digest

    async def _compress_and_upload(self, repo: Repository, diff_id: str, blob: Any, location: str | None,
                                   out: Emitter, short: str) -> Pushed:
        if not self.content.exists(blob.digest):
            raise PushError(f"layer {short}: its blob {blob.digest} is not in the content store")
        src_path = self.content.path(blob.digest)
        total_in = await asyncio.to_thread(self.content.size, blob.digest)
        writer = await asyncio.to_thread(self.content.writer)
        layer = CompressingLayer(writer, total_in)
        worker = asyncio.get_running_loop().run_in_executor(None, _compress, src_path, layer)
        try:
            await self._upload(repo, layer, location, out, short, layer)
        finally:
            if not layer.complete:
                layer.stop = True
            # the file is closed only once the compressor let go of it, cancelled or not
            try:
                await _stopped(worker)
            finally:
                # in line, not in a thread: a cancellation here must not leave the file behind
                # (a rename and a directory fsync; the data was fsynced by the compressor)
                if layer.complete:
                    writer.commit()  # kept, uploaded or not: the next push sends these bytes
                else:
                    writer.abort()
            if layer.complete:
                await self.origins.add([(diff_id, BlobOrigin(layer.digest, DOCKER_GZIP, ""))])
        return Pushed(layer.digest, layer.size, DOCKER_GZIP)



def _short(diff_id: str) -> str:
    return diff_id.split(":", 1)[-1][:12]


def _wire_type(media_type: str) -> str:
    if media_type in _GZIP or media_type in UNCOMPRESSED:
        return DOCKER_GZIP
    return media_type


def _push_error(e: BaseException) -> BaseException:
    """dockerd's texts: a missing basic credential is "no basic auth credentials" alone."""
    if isinstance(e, Unauthorized) and str(e).endswith("no basic auth credentials"):
        return Unauthorized("no basic auth credentials")
    return e
