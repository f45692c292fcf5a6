"""`docker import`: a tar (plain, gzip, xz, bzip2 or zstd, as moby's DecompressStream takes) made
into a one-layer image (moby's daemon/images/image_import.go).

The tar arrives as async chunks (the request body, or a download) and goes through a LayerPipe
to one worker thread, which decompresses it, unpacks it with the engine's own safe unpacker
(snapshots/unpack.py) into a fresh snapshot, and compresses the same tar bytes into a gzip blob
of the content store beside it. Nothing is registered unless all of it worked: a corrupt tar
leaves no snapshot, no blob and no image.
"""
from __future__ import annotations

import asyncio
import bz2
import contextlib
import io
import lzma
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio.to_thread
import msgspec

from ..base.errors import InvalidParameter
from ..base.oci import ContainerConfig, History, ImageConfig
from ..base.timefmt import rfc3339nano
from ..base.version import __version__
from ..content.store import ContentStore, IngestWriter
from ..registry.reference import Reference
from ..snapshots.base import Snapshotter
from ..snapshots.unpack import LayerError, LayerStats, apply_layer
from .configedit import parse_changes
from .layercommit import GZIP_LAYER, NewLayer, gzip_writer, IngestFile
from .newimage import make_image
from .pipe import LayerPipe, PipeClosed
from .store import ImageRecord, ImageStore, LayerBlob

__all__ = ["Importer"]

_READ = 1 << 20


class _Peek(io.RawIOBase):
    """A reader with its first bytes read ahead (to sniff the compression) and put back."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        head = b""
        while len(head) < 6:
            more = raw.read(_READ)
            if not more:
                break
            head += more
        self.head = head

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self.head:
            b, self.head = self.head, b""
            return b
        return bytes(self.raw.read(n if n and n > 0 else _READ))

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)
        if self.head:
            data, self.head = self.head[:len(view)], self.head[len(view):]
        else:
            data = bytes(self.raw.read(len(view)))
        view[:len(data)] = data
        return len(data)


class _Tee:
    """What the unpacker reads (the uncompressed tar); every byte also goes to the gzip writer."""

    def __init__(self, src: Any, sink: Any) -> None:
        self.src = src
        self.sink = sink

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.src.read(n if n and n > 0 else _READ)
        if data:
            self.sink.write(data)
        return data


def _decompressed(src: _Peek) -> Any:
    head = src.head
    if head.startswith(b"BZh"):
        return bz2.BZ2File(src)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(src)  # type: ignore[arg-type]
    if head[:2] == b"\x1f\x8b":
        from isal import igzip

        return igzip.IGzipFile(fileobj=src, mode="rb")  # type: ignore[no-untyped-call]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)  # type: ignore[arg-type]
    return src


class _Pass(msgspec.Struct):
    diff_id: str
    size: int | None


def _import_pass(pipe: LayerPipe, dest: str, whiteouts: Literal["overlay", "delete"], ingest: IngestWriter,
                 max_size: int) -> _Pass:
    try:
        gz = gzip_writer(IngestFile(ingest))
        try:
            stats = LayerStats()
            try:
                tar = _decompressed(_Peek(pipe))
                diff_id = apply_layer(_Tee(tar, gz), dest,  # type: ignore[arg-type]
                                      whiteouts=whiteouts, media_type="application/x-tar",
                                      stats=stats, max_size=max_size)
            except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
                if isinstance(e, LayerError):
                    raise InvalidParameter(f"invalid tar: {e}") from None
                if isinstance(e, OSError) and e.errno is not None:
                    raise
                raise InvalidParameter(f"invalid tar: {e}") from None
        finally:
            gz.close()
        return _Pass(diff_id, stats.size)
    finally:
        pipe.reader_done()


class Importer:
    def __init__(self, images: ImageStore, content: ContentStore, snapshotter: Snapshotter, *,
                 max_layer_size: int = 0) -> None:
        self.images = images
        self.content = content
        self.snapshotter = snapshotter
        self.max_layer_size = max_layer_size

    @staticmethod
    def config_of(changes: list[str]) -> ContainerConfig:
        """The new image's Config: the `changes` on an empty one (checked before any byte is
        read, as moby does)."""
        return parse_changes(changes, ContainerConfig())

    async def import_tar(self, chunks: AsyncIterator[bytes], *, config: ContainerConfig, message: str,
                         architecture: str, os: str, variant: str = "",
                         ref: Reference | None = None) -> ImageRecord:
        snap = self.snapshotter
        staging = f"import-{uuid.uuid4().hex}"
        await snap.prepare(staging, None)
        committed = False
        ingest = self.content.ingest(f"import-{uuid.uuid4().hex}", "sha256:" + "0" * 64, None)
        try:
            pipe = LayerPipe()
            worker = asyncio.ensure_future(anyio.to_thread.run_sync(
                _import_pass, pipe, str(snap.upper_dir(staging)), snap.whiteouts, ingest,
                self.max_layer_size))
            try:
                async for chunk in chunks:
                    await pipe.put(chunk)
                pipe.close()
            except PipeClosed:
                pass  # the worker stopped reading: its result says why
            except BaseException as e:
                # The source failed (a download, the client went away): that is the error; the
                # worker only has to stop.
                pipe.abort(InvalidParameter(f"import aborted: {e}"))
                with contextlib.suppress(Exception):
                    await asyncio.shield(worker)
                raise
            res = await asyncio.shield(worker)
            ingest.expected = ingest.digest
            blob = LayerBlob(ingest.digest, GZIP_LAYER, ingest.offset)
            await anyio.to_thread.run_sync(ingest.commit)
            size = res.size
            if size is None:
                size = await snap.usage(staging, apparent=True)
            chain = res.diff_id
            if not await snap.exists(chain):
                await snap.commit(chain, staging)
                committed = True
        except BaseException:
            ingest.abort()
            raise
        finally:
            if not committed:
                await snap.remove(staging)
        layer = NewLayer(diff_id=res.diff_id, blob=blob, size=size, chain_id=chain)
        created = rfc3339nano(time.time_ns())
        image_cfg = ImageConfig(created=created, comment=message, config=config, docker_version=__version__,
                                architecture=architecture, os=os, variant=variant)
        rec = await make_image(self.images, self.content, parent=None, config=image_cfg, layer=layer,
                               history=History(created=created, comment=message), parent_id_link=False)
        if ref is not None:
            await self.images.tag(rec.id, str(ref))
        return rec
