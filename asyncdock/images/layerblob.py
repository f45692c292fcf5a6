"""A stored layer blob read back as its uncompressed tar (what `docker save` writes), and a
thread's output handed to the event loop. Blocking readers: run them in a worker thread."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import types
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from ..snapshots.unpack import compression_of

_inflate_mod: types.ModuleType
try:  # ISA-L's inflate: zlib's API, several times faster
    from isal import isal_zlib as _inflate_mod
except ImportError:  # pragma: no cover - isal is a dependency
    _inflate_mod = zlib

CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class BlobError(ValueError):
    """A stored blob does not decompress (its text names the blob)."""


def blob_kind(path: Path, media_type: str) -> str:
    """"gzip", "zstd" or "tar": the media type's word, else the file's magic bytes."""
    kind = compression_of(media_type or "")
    if kind is not None:
        return kind
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if head[:4] == _ZSTD_MAGIC:
        return "zstd"
    return "tar"


def inflate(chunks: Iterator[bytes], kind: str, what: str) -> Iterator[bytes]:
    """The uncompressed bytes of a compressed stream given as chunks (concatenated gzip
    members and zstd frames included), at most CHUNK per piece."""
    if kind == "tar":
        yield from chunks
        return
    if kind == "zstd":
        yield from _unzstd(chunks, what)
        return
    d = _inflate_mod.decompressobj(wbits=47)
    pending = b""
    for chunk in chunks:
        pending = pending + chunk if pending else chunk
        while pending:
            if d.eof:
                if len(pending) < 2:
                    break
                if pending[:2] != _GZIP_MAGIC:
                    pending = b""  # trailing padding after the last member
                    break
                d = _inflate_mod.decompressobj(wbits=47)
            try:
                out = d.decompress(pending, CHUNK)
            except Exception as e:  # noqa: BLE001 - zlib.error / isal's error
                raise BlobError(f"{what}: invalid gzip data: {e}") from None
            pending = d.unused_data if d.eof else d.unconsumed_tail
            if out:
                yield out
            elif not d.eof and not pending:
                break
    while not d.eof:
        try:
            out = d.decompress(b"", CHUNK)
        except Exception as e:  # noqa: BLE001
            raise BlobError(f"{what}: invalid gzip data: {e}") from None
        if not out:
            raise BlobError(f"{what}: truncated gzip stream")
        yield out


def _unzstd(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
    try:
        for chunk in chunks:
            out = d.decompress(chunk)
            if out:
                yield out
        rest = d.flush()
        if rest:
            yield rest
    except zstandard.ZstdError as e:
        raise BlobError(f"{what}: invalid zstd data: {e}") from None


def file_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(size):
            yield chunk


def layer_tar_chunks(path: Path, kind: str, what: str) -> Iterator[bytes]:
    """The blob at `path` as its uncompressed tar."""
    return inflate(file_chunks(path), kind, what)


async def iterate_in_thread(make: Callable[[], Iterator[bytes]], depth: int = 8) -> AsyncIterator[bytes]:
    """Run the blocking generator `make()` in a worker thread, yielding its chunks here. At most
    `depth` chunks wait for the consumer (a slow client slows the producer, memory stays
    bounded); one thread hop for the whole job. Closing the iterator stops the thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk in make():
                room.acquire()
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            if not stop.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, e)

    worker = loop.run_in_executor(None, run)
    try:
        while True:
            item = await queue.get()
            room.release()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        room.release()
        with contextlib.suppress(BaseException):
            await asyncio.shield(worker)
