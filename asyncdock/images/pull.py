"""The parallel, streaming pull.

Every missing layer downloads at once (up to `max-concurrent-downloads`, smallest blob first:
see SizeOrderedSlots). While a layer's bytes
arrive they go through a bounded pipe to a worker thread that writes them to the layer's
resumable ingest (hashing them) and feeds them to `apply_layer`, which unpacks into the layer's
own staging snapshot: download and unpack overlap instead of adding up. With a snapshotter whose
layers are independent (overlay) every layer streams at once, up to `unpack_limit`; otherwise a
layer streams only once its parent is committed, and the others unpack from the stored blob later.

After verification (compressed digest as it flows, diff ID against the config's rootfs) the
staging snapshots are committed in chain order. A layer whose chain ID exists is skipped
("Already exists"). Layer work is shared: a second pull that needs a layer already in flight
joins that job (one download), and its errors reach every waiter. A job lives until every pull
that wants it is gone, so one client hanging up does not fail another's pull; a cancelled job
removes its staging snapshot but keeps the partial ingest for the next attempt.

Progress messages keep Docker's per-layer order (Pulling fs layer, Waiting, Downloading,
Verifying Checksum, Download complete, Extracting, Pull complete) because clients read the last
status, even though unpacking ran during the download.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..config import DaemonConfig
from ..base.timefmt import parse_docker_time
from ..content.store import ContentStore, DigestMismatch, IngestLocked, IngestWriter
from ..base.errors import EngineError
from ..events import EventBus, LayerProgress
from ..registry.auth import AuthConfig
from ..registry.client import RegistryClient, Repository, ResolvedManifest
from ..registry.reference import Reference
from ..snapshots.base import Snapshotter
from ..snapshots.limits import LayerNoSpace, LayerTooLarge, free_bytes, free_space_margin, is_no_space
from ..util.errtext import client_text
from ..util.fstree import disk_usage
from ..util.tasks import TaskSet
from . import progress as pm
from ..base.oci import LAYER_TYPES, ContainerConfig, Descriptor, ImageConfig, Platform, decode_config
from .origins import BlobOrigin, BlobOrigins
from .pipe import DEFAULT_PIPE_LIMIT, CountingReader, LayerPipe, PipeClosed, TeeReader
from .store import ImageRecord, ImageStore, LayerBlob, chain_ids

# How long a pull waits for a cancelled transfer of the same blob to let go of its ingest.
INGEST_RELEASE_WAIT = 30.0

log = logging.getLogger(__name__)

T = TypeVar("T")
ProgressFn = Callable[[dict[str, Any]], Awaitable[None]]
ApplyLayer = Callable[..., str]

STAGING_PREFIX = "pull-"
_PROGRESS_INTERVAL = 0.1  # Docker's progress reader sends at most ten updates a second


class PullError(EngineError):
    """A layer failed (HTTP 500 if it happens before the progress stream starts)."""


class PullAborted(Exception):
    """Raised into a worker thread whose pull was cancelled or failed elsewhere."""


class LayerVerificationFailed(PullError):
    def __init__(self, digest: str, resumed: bool) -> None:
        super().__init__(f"filesystem layer verification failed for digest {digest}")
        self.resumed = resumed


class _ParentFailed(PullError):
    pass


class _BlobAbandoned(Exception):
    """The job downloading a shared blob was cancelled: a waiter downloads it itself."""


def _default_apply_layer() -> ApplyLayer:
    from ..snapshots.unpack import apply_layer
    return apply_layer


# ---------------------------------------------------------------------------------------------
# Progress fan-out

class Emitter:
    """One pull's progress output: messages queue here (never blocking the layer jobs) and a
    pump awaits the client's writer in order; each is also published on the bus."""

    def __init__(self, ref: Reference, progress: ProgressFn | None, bus: EventBus | None) -> None:
        self._ref = str(ref)
        self._progress = progress
        self._bus = bus
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self._pump: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    def emit(self, msg: dict[str, Any]) -> None:
        if self._bus is not None:
            self._bus.publish(LayerProgress(self._ref, msg))
        if self._progress is None or self._error is not None:
            return
        self._queue.append(msg)
        self._wake.set()
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name=f"pull-progress {self._ref}")

    async def _run(self) -> None:
        assert self._progress is not None
        while True:
            while self._queue:
                msg = self._queue.popleft()
                try:
                    await self._progress(msg)
                except Exception as e:  # noqa: BLE001 - the client went away; the pull decides
                    self._error = e
                    self._queue.clear()
                    return
            if self._closed:
                return
            self._wake.clear()
            await self._wake.wait()

    async def flush(self) -> None:
        """Deliver everything queued; raise if the client's writer failed."""
        self._closed = True
        self._wake.set()
        if self._pump is not None:
            await asyncio.shield(self._pump)
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._closed = True
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()


# ---------------------------------------------------------------------------------------------
# Download slots


class SizeOrderedSlots:
    """A semaphore for downloads that serves its waiters smallest blob first (then in order of
    arrival).

    A pull asks for all its layers at once; granting the slots from a callback, after every
    layer job of that pull has queued, lets the small blobs go first. They cost little
    bandwidth and finish at once, and their unpacking (often the slow part: a small layer can
    hold thousands of files) then overlaps the big downloads instead of trailing them. In
    manifest order, a small last layer waited for every big one before it.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._queue: list[tuple[int, int, asyncio.Future[None], Callable[[], None] | None]] = []
        self._seq = itertools.count()
        self._scheduled = False

    async def acquire(self, size: int, on_wait: Callable[[], None] | None = None) -> None:
        """Wait for a slot; `on_wait` is called once if the first grant round passes us by."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (size, next(self._seq), fut, on_wait))
        self._schedule()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted as we were cancelled: pass it on
            else:
                fut.cancel()  # skipped by _grant
            raise

    def release(self) -> None:
        self._free += 1
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._grant)

    def _grant(self) -> None:
        self._scheduled = False
        while self._free > 0 and self._queue:
            _, _, fut, _ = heapq.heappop(self._queue)
            if fut.done():
                continue
            self._free -= 1
            fut.set_result(None)
        for i, (size, seq, fut, on_wait) in enumerate(self._queue):
            if on_wait is not None and not fut.done():
                self._queue[i] = (size, seq, fut, None)  # same key: the heap stays valid
                on_wait()

    @contextlib.asynccontextmanager
    async def slot(self, size: int, on_wait: Callable[[], None] | None = None) -> Any:
        await self.acquire(size, on_wait)
        try:
            yield
        finally:
            self.release()


# ---------------------------------------------------------------------------------------------
# Layer jobs

@dataclass(eq=False)
class LayerJob:
    chain_id: str
    parent_chain: str | None
    parent: LayerJob | None  # the job committing the parent, when that is in flight
    desc: Descriptor
    diff_id: str
    watchers: list[Emitter] = field(default_factory=list)
    refs: int = 0
    task: asyncio.Task[int] | None = None  # result: the layer's unpacked size
    committed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def short(self) -> str:
        return self.desc.short_id

    def say(self, msg: dict[str, Any]) -> None:
        for w in self.watchers:
            w.emit(msg)


class _Sink:
    """The registry client writes here: into the pipe, with throttled Downloading messages."""

    def __init__(self, pipe: LayerPipe, job: LayerJob, offset: int) -> None:
        self.offset = offset
        self._pipe = pipe
        self._job = job
        self._last = 0.0

    async def write(self, chunk: bytes) -> None:
        await self._pipe.put(chunk)
        self.offset += len(chunk)
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL or self.offset >= self._job.desc.size:
            self._last = now
            self._job.say(pm.layer_progress("Downloading", self._job.short, self.offset, self._job.desc.size))


@dataclass
class _Outcome:
    diff_id: str
    key: str
    size: int | None = None  # the layer's apparent size, when the unpacker could tell


class _Stats:
    """Filled in by the default unpacker (see asyncdock.snapshots.unpack.LayerStats)."""

    size: int | None = None


class Puller:
    def __init__(self, config: DaemonConfig, content: ContentStore, images: ImageStore,
                 snapshotter: Snapshotter, bus: EventBus | None = None, *, registry: RegistryClient | None = None,
                 apply_layer: ApplyLayer | None = None, pipe_limit: int = DEFAULT_PIPE_LIMIT,
                 origins: BlobOrigins | None = None) -> None:
        self.config = config
        self.origins = origins  # where each pulled blob came from, for a later push's mounts
        self.content = content
        self.images = images
        self.snapshotter = snapshotter
        self.registry = registry if registry is not None else RegistryClient(config)
        self.bus = bus
        self._apply_layer = apply_layer
        self._default_apply = apply_layer is None  # only ours reports the layer's size
        self._pipe_limit = pipe_limit
        self._downloads = SizeOrderedSlots(max(1, config.max_concurrent_downloads))
        # Unset (0), the unpack limit is the number of cores but never fewer than the download
        # slots: a download that finds no unpack slot is only stored, and unpacked after it
        # ends instead of while it runs, which puts that layer's whole unpack on the critical
        # path. An explicit max-concurrent-unpacks is obeyed as it is.
        unpacks = config.unpack_limit
        self._unpacks = asyncio.Semaphore(max(1, unpacks))
        # Enough threads for every streaming download plus every blob unpack at once, so a
        # worker never waits for a thread while holding a slot.
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, config.max_concurrent_downloads) + max(1, unpacks),
            thread_name_prefix="asyncdock-pull")
        self._jobs: dict[str, LayerJob] = {}  # chain ID -> job in flight
        self._tasks = TaskSet("puller")  # the layer jobs (shared by the pulls that want them)
        self._blobs: dict[str, asyncio.Future[None]] = {}  # digest -> download in flight

    @property
    def apply_layer(self) -> ApplyLayer:
        if self._apply_layer is None:
            self._apply_layer = _default_apply_layer()
        return self._apply_layer

    async def close(self) -> None:
        """Cancel layer jobs in flight (their partial ingests stay) and release the pool."""
        await self._tasks.close()
        await self.registry.close()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def recover(self) -> None:
        """At start-up: drop staging snapshots a crash left behind (partial ingests stay)."""
        for info in await self.snapshotter.list():
            if info.kind == "active" and info.name.startswith(STAGING_PREFIX):
                with contextlib.suppress(Exception):
                    await self.snapshotter.remove(info.name)

    async def gc_ingests(self, older_than: float = 7 * 24 * 3600) -> list[str]:
        keep = {ContentStore.ref_for(j.desc.digest) for j in self._jobs.values()}
        return await asyncio.to_thread(self.content.gc_ingests, keep, older_than)

    # ---- threads
    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in a pull worker. Cancelled, we still wait for it to finish: the caller then
        cleans up files the worker is no longer touching."""
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            await _stopped(fut)
            raise

    # ---- the pull
    async def pull(self, ref: Reference, auth: AuthConfig | None = None, progress: ProgressFn | None = None, *,
                   platform: Platform | None = None) -> ImageRecord:
        """Pull `ref` (a bare name means :latest). Errors before the first progress message
        (unknown image, auth) are raised with nothing emitted; later ones are raised after the
        messages so far were delivered."""
        if ref.tag is None and ref.digest is None:
            ref = ref.with_default_tag()
        repo = await self.registry.repository(ref, auth)
        resolved = await repo.resolve(platform)
        out = Emitter(ref, progress, self.bus)
        joined: list[LayerJob] = []
        try:
            out.emit(pm.status(f"Pulling from {ref.path}", ref.tag_or_digest))
            try:
                record = await self._pull_image(ref, repo, resolved, out, joined)
                updated = await self._record_references(ref, resolved, record)
                if self.origins is not None:
                    source = f"{ref.domain}/{ref.path}"
                    await self.origins.add([(d, BlobOrigin(b.digest, b.mediaType, source))
                                            for d, b in zip(record.diff_ids, resolved.manifest.layers)])
            except OSError as e:
                if is_no_space(e):
                    raise self._no_space(f"failed to store {ref.familiar}", e) from None
                raise
            out.emit(pm.status(f"Digest: {resolved.ref_digest}"))
            verb = "Downloaded newer image for" if updated else "Image is up to date for"
            out.emit(pm.status(f"Status: {verb} {ref.familiar}"))
            self._pull_event(ref, record)
            await out.flush()
            return record
        except BaseException:
            out.cancel()
            raise
        finally:
            dropped = [t for t in (self._release(job, out) for job in joined) if t is not None]
            if dropped:
                # Jobs only this pull wanted were cancelled: let them clean up (staging
                # snapshots) before the caller sees the outcome.
                await asyncio.wait(dropped)

    async def _pull_image(self, ref: Reference, repo: Repository, resolved: ResolvedManifest, out: Emitter,
                          joined: list[LayerJob]) -> ImageRecord:
        manifest = resolved.manifest
        cfg_desc: Descriptor = manifest.config
        image_id = cfg_desc.digest
        existing = self.images.find(image_id)
        if existing is not None and await self._layers_present(existing):
            # The image is here: nothing to download (dockerd checks the config digest too).
            await self._store_manifests(resolved)
            return existing
        cfg_bytes = await self._config_bytes(repo, cfg_desc)
        cfg = decode_config(cfg_bytes)
        diff_ids = cfg.rootfs.diff_ids
        layers = list(manifest.layers)
        if len(diff_ids) != len(layers):
            raise PullError(f"invalid image {ref.familiar}: the manifest has {len(layers)} layers, "
                            f"the config {len(diff_ids)} diff IDs")
        for desc in layers:
            if desc.mediaType and desc.mediaType not in LAYER_TYPES:
                raise PullError(f"unsupported layer media type {desc.mediaType} for layer {desc.short_id}")
        chains = chain_ids(diff_ids)
        sizes: list[int | None] = [None] * len(layers)
        jobs: list[tuple[int, LayerJob]] = []
        missing = False
        parent_job: LayerJob | None = None
        for i, (desc, diff_id, chain) in enumerate(zip(layers, diff_ids, chains)):
            parent_chain = chains[i - 1] if i else None
            if not missing and chain not in self._jobs and await self.snapshotter.exists(chain):
                out.emit(pm.layer_status("Already exists", desc.short_id))
                sizes[i] = await self._known_size(chain)
                continue
            missing = True
            out.emit(pm.layer_status("Pulling fs layer", desc.short_id))
            job = self._jobs.get(chain)
            if job is None:
                job = LayerJob(chain, parent_chain, parent_job, desc, diff_id)
                self._jobs[chain] = job
                # A failure reaches every pull still waiting through _root_error; a job the
                # pulls gave up on (its parent failed after they had) has nobody left to tell.
                job.task = self._tasks.spawn(self._run_job(job, repo), name=f"layer {desc.short_id}",
                                             failure_level=logging.DEBUG)
                job.task.add_done_callback(lambda t, j=job: self._job_done(t, j))
            job.watchers.append(out)
            job.refs += 1
            joined.append(job)
            jobs.append((i, job))
            parent_job = job
        if jobs:
            waits = [asyncio.ensure_future(asyncio.shield(j.task)) for _, j in jobs if j.task is not None]
            try:
                # Fail fast: the first layer error ends this pull (its other jobs are released
                # by pull(), and cancelled unless another pull wants them).
                await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for w in waits:
                    w.cancel()
            err = _root_error([j for _, j in jobs])
            if err is not None:
                raise err
            for i, job in jobs:
                sizes[i] = job.task.result() if job.task is not None else 0
        await self._store_manifests(resolved)
        record = ImageRecord(
            id=image_id, diff_ids=list(diff_ids),
            layers=[LayerBlob(d.digest, d.mediaType, d.size) for d in layers],
            layer_sizes=[s or 0 for s in sizes],
            created=cfg.created, created_ns=_created_ns(cfg),
            manifest_digests=sorted({resolved.manifest_digest, resolved.ref_digest}),
        )
        await self.images.add(record)
        return self.images.find(image_id) or record

    def _job_done(self, task: asyncio.Task[int], job: LayerJob) -> None:
        if self._jobs.get(job.chain_id) is job:
            del self._jobs[job.chain_id]

    async def _layers_present(self, rec: ImageRecord) -> bool:
        top = ImageStore.top_chain_id(rec)
        return top is None or await self.snapshotter.exists(top)

    async def _known_size(self, chain: str) -> int:
        for rec in self.images.list():
            for c, size in zip(rec.chain_ids, rec.layer_sizes):
                if c == chain:
                    return size
        return await self._layer_size(chain)

    async def _layer_size(self, chain: str) -> int:
        """Docker's layer size: the apparent size of the layer's files (what overlay2's
        DiffSize sums), not blocks on disk. A snapshotter whose snapshots hold the whole tree
        (copy) cannot tell one layer's share, so its own usage figure is taken."""
        try:
            if self.snapshotter.independent_layers:
                return await asyncio.to_thread(apparent_size, self.snapshotter.upper_dir(chain))
            return await self.snapshotter.usage(chain)
        except Exception:  # noqa: BLE001 - a size is informative only
            return 0

    async def _config_bytes(self, repo: Repository, desc: Descriptor) -> bytes:
        if self.content.exists(desc.digest):
            return await asyncio.to_thread(self.content.read_bytes, desc.digest)
        data = await repo.get_blob(desc)
        await asyncio.to_thread(self.content.put, data, desc.digest)
        return data

    async def _store_manifests(self, resolved: ResolvedManifest) -> None:
        def put() -> None:
            self.content.put(resolved.manifest_bytes, resolved.manifest_digest)
            if resolved.index_bytes is not None:
                self.content.put(resolved.index_bytes, resolved.ref_digest)
        await asyncio.to_thread(put)

    async def _record_references(self, ref: Reference, resolved: ResolvedManifest, rec: ImageRecord) -> bool:
        """Tag and digest references, as dockerd records them; True when `ref` moved (the
        "Downloaded newer image" case)."""
        digest_ref = ref.trimmed().with_digest(resolved.ref_digest)
        if ref.digest is None:
            old = await self.images.set_reference(ref, rec.id)
            await self.images.set_reference(digest_ref, rec.id)
        else:
            old = await self.images.set_reference(digest_ref, rec.id)
        return old != rec.id

    def _pull_event(self, ref: Reference, rec: ImageRecord) -> None:
        if self.bus is None:
            return
        attrs: dict[str, str] = {}
        try:
            attrs.update((self.images.config(rec).config or _NO_CONFIG).labels or {})
        except Exception:  # noqa: BLE001 - an event never fails the pull
            pass
        attrs["name"] = ref.familiar_name
        self.bus.event("image", "pull", ref.familiar, attrs)

    def _release(self, job: LayerJob, out: Emitter) -> asyncio.Task[int] | None:
        """Drop one pull's interest in a job; returns the job's task if that cancelled it."""
        with contextlib.suppress(ValueError):
            job.watchers.remove(out)
        job.refs -= 1
        if job.refs <= 0 and job.task is not None and not job.task.done():
            job.task.cancel()
            return job.task
        return None

    # ---- one layer
    async def _run_job(self, job: LayerJob, repo: Repository) -> int:
        """Download, unpack, verify and commit one layer; returns its unpacked size."""
        attempts = 2  # a resumed download that fails verification is retried once from 0
        while True:
            attempts -= 1
            try:
                outcome = await self._fetch_and_unpack(job, repo)
                break
            except LayerVerificationFailed as e:
                if attempts > 0 and e.resumed:
                    log.info("layer %s: resumed download failed verification, starting over", job.short)
                    continue
                raise
            except LayerTooLarge as e:
                raise PullError(f"failed to register layer {job.desc.digest}: {e}") from None
            except OSError as e:
                if is_no_space(e):
                    raise self._no_space(f"failed to register layer {job.desc.digest}", e) from None
                raise
        key = outcome.key
        try:
            if outcome.diff_id != job.diff_id:
                raise PullError(f"layer {job.short}: unpacked content has diff ID {outcome.diff_id}, "
                                f"the image config says {job.diff_id}")
            await self._wait_parent(job)
            await self.snapshotter.commit(job.chain_id, key, parent=job.parent_chain)
        except BaseException:
            await self._drop_staging(key)
            raise
        job.committed.set()
        job.say(pm.layer_status("Pull complete", job.short))
        if outcome.size is not None and self.snapshotter.independent_layers:
            return outcome.size  # counted while unpacking: no walk over the tree
        return await self._layer_size(job.chain_id)

    async def _wait_parent(self, job: LayerJob) -> None:
        parent = job.parent
        if parent is None or parent.committed.is_set() or parent.task is None:
            return
        try:
            await asyncio.shield(parent.task)
        except asyncio.CancelledError:
            if parent.task.cancelled():
                raise _ParentFailed(f"layer {job.short}: parent layer {parent.short} was cancelled") from None
            raise
        except BaseException as e:
            raise _ParentFailed(f"layer {job.short}: parent layer {parent.short} failed: {client_text(e)}") from None

    async def _fetch_and_unpack(self, job: LayerJob, repo: Repository) -> _Outcome:
        digest = job.desc.digest
        while not self.content.exists(digest):
            shared = self._blobs.get(digest)
            if shared is not None:
                # Another layer job (same blob, other parents) is downloading it: wait, and take
                # over if that job is cancelled.
                job.say(pm.layer_status("Waiting", job.short))
                with contextlib.suppress(_BlobAbandoned):
                    await asyncio.shield(shared)
                continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._blobs[digest] = fut
            try:
                outcome = await self._download(job, repo)
            except BaseException as e:
                fut.set_exception(_BlobAbandoned() if isinstance(e, asyncio.CancelledError) else e)
                fut.exception()  # marks it retrieved: there may be no waiter
                raise
            else:
                fut.set_result(None)
            finally:
                if self._blobs.get(digest) is fut:
                    del self._blobs[digest]
            if outcome is not None:
                return outcome
            break
        else:
            job.say(pm.layer_status("Download complete", job.short))
        return await self._unpack_blob(job)

    async def _download(self, job: LayerJob, repo: Repository) -> _Outcome | None:
        """Download the blob; stream it into a staging snapshot when an unpack slot is free
        (returns the outcome), else only into the content store (returns None)."""
        async with self._downloads.slot(job.desc.size or 0,
                                        lambda: job.say(pm.layer_status("Waiting", job.short))):
            parent_ready = job.parent is None or job.parent.committed.is_set()
            stream = (self.snapshotter.independent_layers or parent_ready) and not self._unpacks.locked()
            if stream:
                await self._unpacks.acquire()  # free (checked above, no await in between)
            try:
                return await self._transfer(job, repo, stream)
            finally:
                if stream:
                    self._unpacks.release()

    async def _open_ingest(self, desc: Descriptor) -> IngestWriter:
        """The blob's ingest. A transfer that was just cancelled (its client hung up) may still
        be closing it in its worker thread after giving up its place in `_blobs`: wait for that
        instead of failing this pull."""
        deadline = time.monotonic() + INGEST_RELEASE_WAIT
        while True:
            opening = asyncio.ensure_future(asyncio.to_thread(
                self.content.ingest, ContentStore.ref_for(desc.digest), desc.digest, desc.size or None))
            try:
                return await asyncio.shield(opening)
            except IngestLocked:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                # Cancelled while the thread opens it: the open still completes there, and the
                # writer nobody will use must be closed, or the ingest stays locked for every
                # later pull of this blob.
                try:
                    await _stopped(opening)
                finally:
                    if opening.done() and not opening.cancelled() and opening.exception() is None:
                        opening.result().close()
                raise

    async def _transfer(self, job: LayerJob, repo: Repository, stream: bool) -> _Outcome | None:
        desc = job.desc
        writer = await self._open_ingest(desc)
        resumed = writer.offset > 0
        loop = asyncio.get_running_loop()
        pipe = LayerPipe(self._pipe_limit)
        verified: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if not verified.done():
                if error is None:
                    verified.set_result(None)
                else:
                    verified.set_exception(error)
                    verified.exception()

        def notify(error: BaseException | None) -> None:  # called in the worker
            loop.call_soon_threadsafe(settle, error)

        key: str | None = None
        tee: TeeReader | None = None
        stats = _Stats()
        try:
            if stream:
                key = self._staging_key(job)
                await self.snapshotter.prepare(key, None if self.snapshotter.independent_layers else job.parent_chain)
                tee = TeeReader(pipe, writer)
                worker = loop.run_in_executor(self._executor, self._tee_unpack, tee, pipe, writer,
                                              self.snapshotter.upper_dir(key), desc.mediaType, notify, stats)
            else:
                worker = loop.run_in_executor(self._executor, self._tee_store, pipe, writer, notify)
        except BaseException:
            writer.close()
            if key is not None:
                await self._drop_staging(key)
            raise

        async def on_response(offset: int, status: int) -> None:
            if offset and status == 206:
                job.say(pm.layer_status(f"Resuming from {pm.human_size(offset)}", job.short))

        try:
            with contextlib.suppress(PipeClosed):  # the worker stopped early: its error says why
                await repo.fetch_blob(desc, _Sink(pipe, job, writer.offset), label=job.short,
                                      on_response=on_response)
            pipe.close()
            job.say(pm.layer_status("Verifying Checksum", job.short))
            await asyncio.wait({verified, worker}, return_when=asyncio.FIRST_COMPLETED)
            if verified.done() and verified.exception() is None:
                job.say(pm.layer_status("Download complete", job.short))
            reader = tee
            ticker = (asyncio.create_task(self._extracting(job, lambda: reader.consumed))
                      if reader is not None else None)
            try:
                diff_id = await asyncio.shield(worker)
            finally:
                if ticker is not None:
                    ticker.cancel()
        except BaseException as e:
            pipe.abort(PullAborted("pull cancelled" if isinstance(e, asyncio.CancelledError) else client_text(e)))
            await _stopped(worker)
            if key is not None:
                await self._drop_staging(key)
            werr = worker.exception() if worker.done() and not worker.cancelled() else None
            mismatch = e if isinstance(e, DigestMismatch) else werr if isinstance(werr, DigestMismatch) else None
            if mismatch is not None and not isinstance(e, asyncio.CancelledError):
                raise LayerVerificationFailed(desc.digest, resumed) from mismatch
            raise
        if diff_id is None:
            return None
        assert key is not None
        job.say(pm.layer_progress("Extracting", job.short, desc.size, desc.size))
        return _Outcome(diff_id, key, stats.size)

    async def _extracting(self, job: LayerJob, position: Callable[[], int]) -> None:
        """Extracting progress while the worker finishes (short: it ran during the download)."""
        last = -1
        while True:
            await asyncio.sleep(_PROGRESS_INTERVAL)
            current = position()
            if current != last and 0 < current < job.desc.size:
                last = current
                job.say(pm.layer_progress("Extracting", job.short, current, job.desc.size))

    def _apply(self, reader: Any, dest: Path, media_type: str, stats: _Stats) -> str:
        kw: dict[str, Any] = {}
        if self._default_apply:
            kw = {"stats": stats, "max_size": self.config.max_layer_size, "min_free": free_space_margin(dest)}
        return self.apply_layer(reader, dest, whiteouts=self.snapshotter.whiteouts,
                                media_type=media_type or LAYER_TYPES[1], **kw)

    def _tee_unpack(self, tee: TeeReader, pipe: LayerPipe, writer: IngestWriter, dest: Path, media_type: str,
                    notify: Callable[[BaseException | None], None], stats: _Stats) -> str:
        """Worker: store the download in the ingest and unpack it, in one pass."""
        try:
            try:
                diff_id = self._apply(tee, dest, media_type, stats)
                tee.drain()
            except BaseException as e:
                if tee.error is None and not isinstance(e, (PullAborted, LayerTooLarge)) and not is_no_space(e):
                    # A corrupt download usually shows as a decompression error first: read the
                    # rest, and if the digest is wrong, say that instead. (Not past a limit or
                    # on a full disk: that would only store more of what is thrown away.)
                    with contextlib.suppress(BaseException):
                        tee.drain()
                if tee.error is not None:
                    raise tee.error from e
                raise
            finally:
                notify(None if tee.verified.is_set() else tee.error or PullError("layer download incomplete"))
            writer.commit()
            return diff_id
        except DigestMismatch:
            writer.abort()  # these bytes are wrong: resuming them would fail again
            raise
        except BaseException as e:
            if isinstance(e, LayerTooLarge) or is_no_space(e):
                # Resuming would fail the same way; on a full disk the partial blob holds
                # space the daemon needs back now.
                writer.abort()
            raise
        finally:
            tee.close()
            pipe.reader_done()
            writer.close()

    def _tee_store(self, pipe: LayerPipe, writer: IngestWriter,
                   notify: Callable[[BaseException | None], None]) -> None:
        """Worker: only store the download (it is unpacked later from the blob)."""
        try:
            try:
                while chunk := pipe.read(1 << 20):
                    writer.write(chunk)
            except OSError as e:
                if is_no_space(e):
                    writer.abort()  # the partial blob holds space the daemon needs back
                notify(e)
                raise
            try:
                writer.commit()  # verifies; discards the ingest on a mismatch
            except BaseException as e:
                notify(e)
                raise
            notify(None)
        finally:
            pipe.reader_done()
            writer.close()

    async def _unpack_blob(self, job: LayerJob) -> _Outcome:
        """Unpack a layer whose blob is already stored."""
        if not self.snapshotter.independent_layers and job.parent is not None:
            await asyncio.shield(job.parent.committed.wait())
        async with self._unpacks:
            key = self._staging_key(job)
            parent = None if self.snapshotter.independent_layers else job.parent_chain
            await self.snapshotter.prepare(key, parent)
            stats = _Stats()
            try:
                reader = CountingReader(self.content.path(job.desc.digest))
                ticker = asyncio.create_task(self._extracting(job, lambda: reader.consumed))
                try:
                    diff_id = await self._in_thread(self._unpack_file, reader, self.snapshotter.upper_dir(key),
                                                    job.desc.mediaType, stats)
                finally:
                    ticker.cancel()
            except BaseException:
                await self._drop_staging(key)
                raise
        job.say(pm.layer_progress("Extracting", job.short, job.desc.size, job.desc.size))
        return _Outcome(diff_id, key, stats.size)

    def _unpack_file(self, reader: CountingReader, dest: Path, media_type: str, stats: _Stats) -> str:
        try:
            return self._apply(reader, dest, media_type, stats)
        finally:
            reader.close()

    def _no_space(self, what: str, e: OSError) -> PullError:
        """One line naming the disk, as Docker's "failed to register layer: ... no space left
        on device" does."""
        root = self.config.data_root
        try:
            free = f"{free_bytes(root) >> 20} MiB free"
        except OSError:
            free = "full"
        if isinstance(e, LayerNoSpace) and e.free is not None:
            free += ", below the margin kept for the engine's state"
        log.warning("%s: %s", what, e)
        return PullError(f"{what}: no space left on device (data root {root}: {free})")

    @staticmethod
    def _staging_key(job: LayerJob) -> str:
        return f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}-{job.chain_id.split(':', 1)[-1][:16]}"

    async def _drop_staging(self, key: str) -> None:
        try:
            await asyncio.shield(self.snapshotter.remove(key))
        except Exception as e:  # noqa: BLE001 - recover() removes it at the next start
            log.warning("cannot remove staging snapshot %s: %s", key, e)


def apparent_size(root: Path) -> int:
    """Sum of st_size of everything but directories, each hard-linked inode once (moby's
    directory.Size). fd-relative: a layer's paths can be longer than PATH_MAX."""
    return disk_usage(root, apparent=True)


async def _stopped(fut: asyncio.Future[Any]) -> None:
    """Wait until a worker thread's future is done, through any number of cancellations (the
    worker was told to stop; its files must not be removed under it). A cancellation that
    arrived meanwhile is raised afterwards."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait({fut})
        except asyncio.CancelledError:
            cancelled = True
    if not fut.cancelled():
        fut.exception()  # retrieved: the caller reports its own error
    if cancelled:
        raise asyncio.CancelledError


def _root_error(jobs: list[LayerJob]) -> BaseException | None:
    """A pull's error: a layer's own failure rather than "its parent failed" in a child."""
    errors = [t.exception() for t in (j.task for j in jobs)
              if t is not None and t.done() and not t.cancelled() and t.exception() is not None]
    own = [e for e in errors if not isinstance(e, _ParentFailed)]
    return (own or errors or [None])[0]


def _created_ns(cfg: ImageConfig) -> int:
    if not cfg.created:
        return 0
    try:
        return parse_docker_time(cfg.created)
    except ValueError:
        return 0


_NO_CONFIG = ContainerConfig()
