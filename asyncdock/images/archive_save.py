"""`docker save`: images as the archive Docker 25+ writes (archive_format.py), streamed.

Names resolve as dockerd resolves them: a tag saves that tag; a bare repository name saves
every tag of it; an ID, ID prefix or digest saves the image without a tag. The archive is made
while it is sent, never held whole in memory or spooled: configs and the OCI manifests are
small and built first; layers are read from the content store and written uncompressed (the
blob's digest is then the diff ID, as Docker's): a layer stored uncompressed (loaded, or
committed by `docker load` elsewhere) is sent as it is, a gzip or zstd one (pulled, built) is
inflated on the way. A tar header needs the size first, so an inflated layer's size is learned
once by inflating it (verifying its diff ID as a by-product) and kept in a small cache file.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ..base.errors import EngineError, NotFound
from ..base.oci import Platform
from ..base.timefmt import parse_docker_time
from ..content.store import ContentStore
from ..events.sink import EventSink
from ..registry.reference import Reference, parse_any, parse_normalized
from ..util.atomic import atomic_write_json
from ..util.corrupt import move_aside
from . import archive_format as af
from .layerblob import CHUNK, BlobError, blob_kind, file_chunks, iterate_in_thread, layer_tar_chunks
from .store import ImageRecord, ImageStore

log = logging.getLogger(__name__)


class SaveError(EngineError):
    """An image cannot be saved (HTTP 500 before the archive starts)."""


@dataclass
class _LayerSource:
    diff_id: str
    path: Path
    kind: str  # "tar", "gzip", "zstd"
    blob: str
    size: int  # uncompressed
    mtime: int


@dataclass
class SavePlan:
    """What one save sends, decided before the first byte (so errors are plain answers)."""

    images: list[af.SavedImage]
    configs: dict[str, tuple[bytes, int]]  # image ID -> (config bytes, mtime)
    layers: dict[str, _LayerSource]  # diff ID -> source


class _Sizes(msgspec.Struct):
    sizes: dict[str, int] = msgspec.field(default_factory=dict)  # compressed blob digest -> tar size


class ImageSaver:
    def __init__(self, content: ContentStore, images: ImageStore, state_dir: Path,
                 bus: EventSink | None = None) -> None:
        self.content = content
        self.images = images
        self.bus = bus
        self._sizes_path = state_dir / "layer-sizes.json"
        self._sizes: dict[str, int] | None = None
        self._lock = asyncio.Lock()

    # ---- names
    def select(self, names: Sequence[str]) -> list[tuple[ImageRecord, list[Reference]]]:
        """The images to save, in the order named, each with the tags it is saved under."""
        chosen: dict[str, tuple[ImageRecord, list[Reference]]] = {}

        def add(rec: ImageRecord, ref: Reference | None) -> None:
            entry = chosen.setdefault(rec.id, (rec, []))
            if ref is not None and ref.digest is None and all(str(r) != str(ref) for r in entry[1]):
                entry[1].append(ref)

        for name in names:
            parsed = parse_any(name)  # a malformed name: 400
            if isinstance(parsed, str) or parsed.familiar_name == "sha256" or parsed.digest is not None:
                add(self.images.resolve(name), None)
                continue
            if parsed.tag is None:
                tagged: list[Reference] = []
                for rec in self.images.list():
                    refs: Sequence[Reference] = self.images.references(rec.id)
                    tagged += [r for r in refs if r.digest is None and r.name == parsed.name]
                if tagged:
                    for ref in sorted(tagged, key=str):
                        image_id = self.images.lookup(ref)
                        if image_id is not None:
                            add(self.images.get(image_id), ref)
                    continue
                # No tag of that repository: an ID prefix, or dockerd's "No such image".
                add(self.images.resolve(name), None)
                continue
            image_id = self.images.lookup(parsed)
            if image_id is None or self.images.find(image_id) is None:
                raise NotFound(f"No such image: {parsed.familiar}")
            add(self.images.get(image_id), parse_normalized(name))
        return list(chosen.values())

    # ---- plan
    async def plan(self, names: Sequence[str], platforms: Sequence[Platform] = ()) -> SavePlan:
        selected = self.select(names)
        for rec, _ in selected:
            if not af.config_matches(self.images.config(rec), platforms):
                raise NotFound(f"no suitable export target found for platform {af.platforms_text(platforms)}")
        images: list[af.SavedImage] = []
        configs: dict[str, tuple[bytes, int]] = {}
        todo: dict[str, tuple[str, LayerBlobInfo]] = {}
        for rec, refs in selected:
            if not rec.diff_ids:
                raise SaveError("empty export - not implemented")
            try:
                raw = await asyncio.to_thread(self.content.read_bytes, rec.id)
            except NotFound:
                raise SaveError(f"image {rec.id}: its config is missing from the content store") from None
            mtime = _created_s(self.images, rec)
            configs[rec.id] = (raw, mtime)
            for diff_id, blob in zip(rec.diff_ids, rec.layers):
                if diff_id not in todo:
                    todo[diff_id] = (diff_id, LayerBlobInfo(blob.digest, blob.media_type, mtime))
            images.append(af.SavedImage(rec.id, len(raw), [], tags=refs, parent=rec.parent))
        layers = await self._sources(list(todo.values()))
        for img, (rec, _) in zip(images, selected):
            img.layers = [af.SavedLayer(d, layers[d].size) for d in rec.diff_ids]
        for rec, _ in selected:
            self.images.event("save", rec.id, rec.id)
        return SavePlan(images, configs, layers)

    async def _sources(self, todo: list[tuple[str, LayerBlobInfo]]) -> dict[str, _LayerSource]:
        out: dict[str, _LayerSource] = {}
        count: list[_LayerSource] = []
        async with self._lock:
            sizes = await self._load_sizes()
            for diff_id, info in todo:
                path = self.content.path(info.digest)
                if not path.is_file():
                    raise SaveError(f"layer {diff_id}: its blob {info.digest} is missing from the content store")
                kind = "tar" if info.digest == diff_id else await asyncio.to_thread(blob_kind, path, info.media_type)
                src = _LayerSource(diff_id, path, kind, info.digest, 0, info.mtime)
                if kind == "tar":
                    src.size = path.stat().st_size
                elif info.digest in sizes:
                    src.size = sizes[info.digest]
                else:
                    count.append(src)
                out[diff_id] = src
            if count:
                # Each compressed layer once, inflated to learn its size (and check its diff
                # ID); in parallel, the inflaters release the GIL.
                results = await asyncio.gather(*(asyncio.to_thread(_measure, s) for s in count),
                                               return_exceptions=True)
                for s, r in zip(count, results):
                    if isinstance(r, BaseException):
                        raise SaveError(f"layer {s.diff_id}: {r}") from None
                    s.size = r
                    sizes[s.blob] = r
                # Entries of blobs gone since (their images removed) go with this write.
                for digest in [d for d in sizes if not self.content.exists(d)]:
                    del sizes[digest]
                await asyncio.to_thread(atomic_write_json, self._sizes_path, _Sizes(dict(sizes)))
        return out

    async def _load_sizes(self) -> dict[str, int]:
        if self._sizes is None:
            def read() -> dict[str, int]:
                self._sizes_path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    return msgspec.json.decode(self._sizes_path.read_bytes(), type=_Sizes).sizes
                except FileNotFoundError:
                    return {}
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                    move_aside(self._sizes_path, e, "layer size cache")
                    return {}
            self._sizes = await asyncio.to_thread(read)
        return self._sizes

    # ---- the stream
    def stream(self, plan: SavePlan) -> AsyncIterator[bytes]:
        return iterate_in_thread(lambda: _archive(plan))


@dataclass
class LayerBlobInfo:
    digest: str
    media_type: str
    mtime: int


def _measure(src: _LayerSource) -> int:
    h = hashlib.sha256()
    n = 0
    for chunk in layer_tar_chunks(src.path, src.kind, f"layer blob {src.blob}"):
        h.update(chunk)
        n += len(chunk)
    actual = "sha256:" + h.hexdigest()
    if actual != src.diff_id:
        raise BlobError(f"the stored blob {src.blob} inflates to {actual}, not its diff ID")
    return n


def _created_s(images: ImageStore, rec: ImageRecord) -> int:
    if rec.created_ns:
        return rec.created_ns // 1_000_000_000
    try:
        created = images.config(rec).created
        return parse_docker_time(created) // 1_000_000_000 if created else 0
    except Exception:  # noqa: BLE001 - a time is cosmetic
        return 0


def _archive(plan: SavePlan) -> Iterator[bytes]:
    """The tar, in Docker's order (its archive.Tar walks the directory sorted)."""
    manifests, files = af.small_files(plan.images)
    yield af.tar_header("blobs/", mode=0o755, directory=True) + af.tar_header("blobs/sha256/", mode=0o755,
                                                                              directory=True)
    blobs: dict[str, object] = {}
    for image_id, (raw, mtime) in plan.configs.items():
        blobs[image_id] = (raw, mtime)
    for digest, data in manifests.items():
        blobs.setdefault(digest, (data, 0))
    for diff_id, src in plan.layers.items():
        blobs.setdefault(diff_id, src)
    for digest in sorted(blobs):
        item = blobs[digest]
        name = af.blob_path(digest)
        if isinstance(item, _LayerSource):
            yield from _layer_member(name, item)
        else:
            data, mtime = item  # type: ignore[misc]
            yield af.tar_member(name, data, mtime)
    for name in sorted(files):
        yield af.tar_member(name, files[name])
    yield af.TAR_END


def _layer_member(name: str, src: _LayerSource) -> Iterator[bytes]:
    head = af.tar_header(name, src.size, mtime=src.mtime)
    sent = 0
    chunks = (file_chunks(src.path, CHUNK) if src.kind == "tar"
              else layer_tar_chunks(src.path, src.kind, f"layer blob {src.blob}"))
    for chunk in chunks:
        sent += len(chunk)
        if sent > src.size:
            break
        if head:
            chunk, head = head + chunk, b""
        yield chunk
    if sent != src.size:
        # The header promised other bytes: stop here, so the client sees a cut archive rather
        # than a well-formed wrong one.
        raise BlobError(f"layer {src.diff_id}: its blob gave {sent} bytes, {src.size} were announced")
    if head:
        yield head
    yield af.tar_padding(src.size)
