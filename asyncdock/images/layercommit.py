"""An active snapshot (a container's writable layer, a build step's) made into an image layer:
the diff as a gzip blob in the content store plus a committed snapshot named by the new chain ID,
so a container or the next build step can use the new image at once.

One pass, in one worker thread: the layer tar (snapshots/diff.py) is read by the unpacker
(snapshots/unpack.py, which hashes it: the diff ID) as it is made, and every chunk is also fed
to a gzip compressor (ISA-L, in its own threads: igzip_threaded) writing into a content-store
ingest, hashed on the way (the blob digest). The new snapshot is a fresh unpack of the diff, on
its own inodes: nothing aliases the files of a container that goes on running. `docker commit`
skips that unpack (the snapshot is made from the blob afterwards, images/materialize.py) and a
build's COPY step commits its scratch snapshot itself (`snapshot=` of `commit`).

    committer = LayerCommitter(content, snapshotter)
    layer = await committer.commit(container_id, image_top_chain_id)   # None: nothing changed
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import anyio.to_thread
import msgspec

from ..base.errors import Conflict
from ..content.store import ContentStore, IngestWriter
from ..snapshots.base import Snapshotter
from ..snapshots.diff import DiffSource, LayerDiff, diff_source
from ..snapshots.unpack import apply_layer
from .store import LayerBlob, chain_ids

try:
    from isal import igzip_threaded as _threaded_gzip
except ImportError:  # pragma: no cover - isal is a dependency
    _threaded_gzip = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = ["GZIP_LAYER", "LayerCommitter", "NewLayer"]

GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# ISA-L level 1: 0.6-1.5 GB/s a core here, and within a few % of zlib -6's ratio on text.
GZIP_LEVEL = 1
_THREADS = 2


class NewLayer(msgspec.Struct, frozen=True):
    """A layer just committed: its diff ID, its blob in the content store, its apparent size
    (what Docker reports: st_size of its files and links) and the chain ID naming its snapshot
    (the parent chain + this diff ID)."""

    diff_id: str
    blob: LayerBlob
    size: int
    chain_id: str


class _Tee:
    """A read() for the unpacker over the diff's chunks; each chunk also goes to the compressor."""

    def __init__(self, chunks: Iterator[bytes], sink: Any) -> None:
        self._chunks = chunks
        self._sink = sink

    def read(self, n: int = -1) -> bytes:
        chunk = next(self._chunks, b"")
        if chunk:
            self._sink.write(chunk)
        return chunk


class IngestFile:
    """The file object the gzip writer wants, over an ingest."""

    def __init__(self, ingest: IngestWriter) -> None:
        self.ingest = ingest

    def write(self, b: bytes | memoryview) -> int:
        self.ingest.write(b)
        return len(b)

    def flush(self) -> None:
        pass


def gzip_writer(raw: IngestFile) -> Any:
    if _threaded_gzip is not None:
        return _threaded_gzip.open(raw, "wb", compresslevel=GZIP_LEVEL, threads=_THREADS)  # type: ignore[no-untyped-call]
    import gzip  # pragma: no cover

    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)


class _Result(msgspec.Struct):
    diff_id: str
    entries: int
    size: int


def _one_pass(source: DiffSource, ingest: IngestWriter, dest: str | None, whiteouts: Any) -> _Result:
    """The diff into the gzip blob and, with `dest`, unpacked there too (the unpacker hashes
    it: the diff ID); without `dest` the diff ID is hashed here."""
    diff = LayerDiff(source)
    gz = gzip_writer(IngestFile(ingest))
    try:
        if dest is not None:
            diff_id = apply_layer(_Tee(iter(diff), gz), dest,  # type: ignore[arg-type]
                                  whiteouts=whiteouts, media_type="application/x-tar")
        else:
            h = hashlib.sha256()
            for chunk in diff:
                h.update(chunk)
                gz.write(chunk)
            diff_id = "sha256:" + h.hexdigest()
    finally:
        gz.close()
    return _Result(diff_id, diff.entries, diff.size)


class LayerCommitter:
    def __init__(self, content: ContentStore, snapshotter: Snapshotter) -> None:
        self.content = content
        self.snapshotter = snapshotter

    async def commit(self, key: str, parent_chain: str | None, *,
                     snapshot: Literal["unpack", "adopt", "none"] = "unpack") -> NewLayer | None:
        """The layer of active snapshot `key` (whose parent is the committed `parent_chain`, an
        image's top chain ID, or None for a snapshot on nothing). None when nothing changed:
        moby then adds no layer (the history entry is an `empty_layer`). The caller keeps the
        snapshot `key` from changing meanwhile (a running container is paused).

        The snapshot named by the new chain ID: "unpack" makes it from the diff on its own
        inodes, in the same pass; "adopt" commits `key` itself under that name (a build's scratch
        snapshot nothing else will write: no second copy of its files; `key` is gone after);
        "none" makes none: the caller has images/materialize unpack it from the blob later."""
        snap = self.snapshotter
        source = await diff_source(snap, key)
        staging = f"commit-{uuid.uuid4().hex}" if snapshot == "unpack" else ""
        ref = f"commit-{uuid.uuid4().hex}"
        if staging:
            await snap.prepare(staging, None if snap.independent_layers else parent_chain)
        committed = False
        try:
            # The digest is known only at the end: a placeholder, set before the commit.
            ingest = self.content.ingest(ref, "sha256:" + "0" * 64, None)
            try:
                dest = str(snap.upper_dir(staging)) if staging else None
                res = await anyio.to_thread.run_sync(_one_pass, source, ingest, dest, snap.whiteouts)
                if res.entries == 0:
                    ingest.abort()
                    return None
                ingest.expected = ingest.digest
                blob = LayerBlob(ingest.digest, GZIP_LAYER, ingest.offset)
                await anyio.to_thread.run_sync(ingest.commit)
            except BaseException:
                ingest.abort()
                raise
            chain = chain_ids([parent_chain, res.diff_id])[1] if parent_chain else res.diff_id
            if snapshot != "none" and not await snap.exists(chain):
                try:
                    await snap.commit(chain, staging or key, parent=parent_chain)
                    committed = True
                except Conflict:
                    pass  # the same layer, committed by someone else meanwhile
            return NewLayer(res.diff_id, blob, res.size, chain)
        finally:
            if staging and not committed:
                await snap.remove(staging)
