"""`docker load`: the docker-archive (manifest.json: Docker 25+'s blobs/ layout and the older
`<id>/layer.tar` one) and OCI layouts (index.json, nested indexes resolved to the host platform),
plain or gzip/xz/bzip2/zstd, read as the body streams in.

One pass over the stream, in one worker thread: every regular member of the outer tar is
spooled to a private directory under the content store (manifest.json comes after the blobs in
Docker's own archives, so nothing can be decided before the end: this spool is the one copy of
the archive on disk, and its layer files become the content store's blobs by a rename). A
member that looks like a layer (a tar, or gzip/zstd: configs and manifests are JSON) is, on a
snapshotter whose layers are independent (overlay), also unpacked while it is spooled, into a
staging snapshot, by the engine's own safe unpacker: so the load costs one read of the archive.
A layer we very likely have already (its blob name is a diff ID one of our images has) is only
spooled.

Only at the end is anything decided: every image's config must hash to its ID and every layer
to the config's diff ID; then layers are committed as snapshots named by chain ID (existing ones
are skipped, unused staging snapshots dropped), the config and the uncompressed layer tars are
stored as blobs (LayerBlob media type application/vnd.docker.image.rootfs.diff.tar, digest ==
diff ID: push compresses them), and only then are the image records and tags written. A cut or
corrupt archive leaves nothing: no record, no tag, no snapshot, no blob, no spool.
"""
from __future__ import annotations

import asyncio
import bz2
import contextlib
import hashlib
import itertools
import logging
import lzma
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from ..base.errors import EngineError, NotFound
from ..base.oci import INDEX_TYPES, ImageConfig, ManifestError, Platform, classify_manifest, decode_config, \
    decode_index, decode_manifest
from ..base.timefmt import parse_docker_time
from ..config import DaemonConfig
from ..content.store import ContentStore
from ..events.sink import EventSink
from ..registry.platforms import host_platform, select_manifest
from ..registry.reference import Reference, parse_normalized
from ..snapshots.base import Snapshotter
from ..snapshots.limits import LayerTooLarge, free_space_margin
from ..snapshots.tarstream import BLOCK, DIR, LNK, REG, SYM, ChunkStream, TarError, TarReader
from ..util.errtext import client_text
from ..util.fstree import disk_usage, remove_tree_quietly
from ..util.tasks import uncancellable
from . import archive_format as af
from . import progress as pm
from .layerblob import CHUNK, BlobError, inflate
from .pipe import LayerPipe, PipeClosed
from .pull import STAGING_PREFIX
from .store import ImageRecord, ImageStore, LayerBlob, chain_ids

log = logging.getLogger(__name__)

# Staging snapshots share the pull's prefix: Puller.recover() drops them after a crash.
LOAD_PREFIX = STAGING_PREFIX + "load-"
_SMALL_MAX = 32 << 20  # manifest.json, index.json, configs: read into memory, so bounded
_LINK_HOPS = 40

ProgressFn = Callable[[dict[str, Any]], Awaitable[None]]


class LoadError(EngineError):
    """The archive could not be loaded (always reported in the stream, as dockerd does)."""


# ---------------------------------------------------------------------------------------------
# The spool: what the outer tar held


@dataclass(eq=False)
class _Entry:
    path: Path
    size: int = 0  # bytes spooled (uncompressed, for a compressed member)
    digest: str = ""  # of the spooled bytes
    raw_digest: str = ""  # of the member as archived
    staging: str | None = None  # snapshot it was unpacked into while it streamed
    staging_failed: str = ""  # why that unpack failed (then it is not a layer, or a broken one)
    unpacked_size: int | None = None
    staging_used: bool = False


@dataclass
class _Spool:
    files: dict[str, _Entry] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> _Entry | None:
        try:
            path = af.entry_name(name)
        except af.ArchiveError:
            return None
        for _ in range(_LINK_HOPS):
            if path in self.files:
                return self.files[path]
            if path not in self.links:
                return None
            path = self.links[path]
        return None

    def read(self, name: str, what: str) -> bytes:
        entry = self.get(name)
        if entry is None:
            raise af.ArchiveError(f"invalid archive: {what} {name} is missing")
        if entry.size > _SMALL_MAX:
            raise af.ArchiveError(f"invalid archive: {what} {name} is too large ({entry.size} bytes)")
        return entry.path.read_bytes()


@dataclass
class _Unpacker:
    """What the reading thread needs to unpack layers as they stream."""

    prepare: Callable[[], tuple[str, Path]] | None  # None: the snapshotter cannot (copy)
    apply: Callable[..., str]
    whiteouts: str
    max_size: int
    known: set[str]  # diff IDs our images have: only spooled


class _PlainStream(ChunkStream):
    """The outer tar's byte stream without ChunkStream's running digest (nothing needs the
    digest of the whole archive; each member is hashed on its own). It keeps the last block
    read whole, so the end of the archive can be told from a cut (TarReader, like tarfile,
    takes either for the end; Go's reader, dockerd's, does not)."""

    __slots__ = ("last_block",)

    def read(self, n: int) -> bytes:
        out = super().read(n)
        if n == BLOCK:
            self.last_block = out
        return out

    def _pull(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._base += len(self._buf)
                self._buf = chunk
                self._pos = 0
                return True
        return False


def _sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    return "tar"


def _multi(chunks: Iterator[bytes], make: Callable[[], Any], what: str) -> Iterator[bytes]:
    """bzip2 / xz with concatenated streams (pbzip2, pixz)."""
    d = make()
    for chunk in chunks:
        while chunk:
            try:
                out = d.decompress(chunk)
            except (OSError, lzma.LZMAError, ValueError) as e:
                raise af.ArchiveError(f"failed to decompress the archive ({what}): {e}") from None
            if out:
                yield out
            if d.eof:
                chunk = d.unused_data
                d = make() if chunk else d
            else:
                chunk = b""
    if not d.eof:
        raise af.ArchiveError(f"failed to decompress the archive ({what}): unexpected EOF")


def _body(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """The request body, decompressed if it is compressed as a whole."""
    first = b""
    while len(first) < 6:
        more = read(CHUNK)
        if not more:
            break
        first += more
    raw = chain([first], iter(lambda: read(CHUNK), b""))
    kind = _sniff(first)
    if kind in ("gzip", "zstd"):
        return _wrap_blob_errors(inflate(raw, kind, "the archive"))
    if kind == "bzip2":
        return _multi(raw, bz2.BZ2Decompressor, "bzip2")
    if kind == "xz":
        return _multi(raw, lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO), "xz")
    return raw


def _wrap_blob_errors(it: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from it
    except BlobError as e:
        raise af.ArchiveError(f"failed to decompress {e}") from None


class _MemberReader:
    """A file-like over one member's (decompressed) bytes for apply_layer, spooling every byte
    it hands out, and hashing them unless `hashing` is off (apply_layer hashes what it reads:
    one pass of sha256 over a layer, not two)."""

    def __init__(self, chunks: Iterator[bytes], fd: int, path: Path, *, hashing: bool = True) -> None:
        self._it = chunks
        self._fd = fd
        self._path = path
        self.hash: Any = hashlib.sha256() if hashing else None
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = next(self._it, b"")
        if chunk:
            if self.hash is not None:
                self.hash.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]
            self.size += len(chunk)
        return chunk

    def start_hashing(self) -> None:
        """Hash from here on, what was spooled so far included (apply_layer gave up early)."""
        if self.hash is None:
            h = hashlib.sha256()
            with open(self._path, "rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
            self.hash = h

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def read_archive(read: Callable[[int], bytes], work: Path, unpacker: _Unpacker) -> _Spool:
    """Worker thread: spool (and where it pays, unpack) every member of the archive."""
    spool = _Spool()
    stream = _PlainStream(_body(read))
    stream.last_block = b""
    tr = TarReader(stream)
    numbers = itertools.count()
    seen = False
    while True:
        try:
            m = tr.next()
        except TarError as e:
            raise af.ArchiveError(f"invalid archive: {e}" if seen else f"invalid archive: not a tar archive ({e})") \
                from None
        if m is None:
            last = stream.last_block
            if 0 < len(last) < BLOCK:
                raise af.ArchiveError("invalid archive: unexpected EOF")
            if len(last) == BLOCK and last != bytes(BLOCK):
                raise af.ArchiveError("invalid archive: invalid tar header")
            break
        seen = True
        name = af.entry_name(m.name)
        if m.type == DIR or not name:
            continue
        if m.type == SYM:
            spool.links[name] = af.resolve_link(name, m.linkname)
            continue
        if m.type == LNK:
            spool.links[name] = af.entry_name(m.linkname)
            continue
        if m.type != REG:
            continue  # devices and fifos have no business in an image archive
        # A name met twice: the later member wins, as it would on disk.
        spool.links.pop(name, None)
        spool.files[name] = _spool_member(tr, name, m.size, work / str(next(numbers)), unpacker)
    if not seen:
        raise af.ArchiveError("invalid archive: empty archive")
    return spool


def _member_chunks(tr: TarReader, name: str) -> Iterator[bytes]:
    try:
        while tr.data_left:
            yield tr.read_data(min(CHUNK, tr.data_left))
    except TarError:
        raise af.ArchiveError(f"invalid archive: unexpected EOF inside {name}") from None


def _hashed(chunks: Iterator[bytes], h: Any) -> Iterator[bytes]:
    for chunk in chunks:
        h.update(chunk)
        yield chunk


def _spool_member(tr: TarReader, name: str, size: int, path: Path, unpacker: _Unpacker) -> _Entry:
    entry = _Entry(path)
    raw = _member_chunks(tr, name)
    first = next(raw, b"")
    kind = _sniff(first)
    if kind in ("bzip2", "xz"):
        kind = "other"
    elif kind == "tar" and first[257:262] != b"ustar" and not _v7_tar(first):
        kind = "other"
    candidate = unpacker.prepare is not None and kind in ("tar", "gzip", "zstd") and size >= 1024
    if candidate and kind == "tar" and name.startswith("blobs/sha256/"):
        candidate = "sha256:" + name[13:] not in unpacker.known
    raw_hash: Any = None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        content: Iterator[bytes] = chain([first], raw)
        if kind in ("gzip", "zstd"):
            # Spooled inflated: the member's own digest is what an OCI manifest names it by.
            raw_hash = hashlib.sha256()
            content = _wrap_blob_errors(inflate(_hashed(content, raw_hash), kind, f"the archive member {name}"))
        reader = _MemberReader(content, fd, path, hashing=not candidate)
        diff_id = ""
        if candidate:
            assert unpacker.prepare is not None
            key, upper = unpacker.prepare()
            entry.staging = key
            stats = _Stats()
            try:
                diff_id = unpacker.apply(reader, upper, whiteouts=unpacker.whiteouts,
                                         media_type=af.DOCKER_LAYER_TAR, stats=stats, max_size=unpacker.max_size,
                                         min_free=free_space_margin(upper))
                entry.unpacked_size = stats.size
            except LayerTooLarge:
                raise
            except ValueError as e:  # LayerError: not a layer, or a broken one
                entry.staging_failed = str(e)
                reader.start_hashing()
        if reader.read(CHUNK):  # apply_layer reads to the end: more means it stopped early
            diff_id = ""
            reader.start_hashing()
            reader.drain()
    finally:
        os.close(fd)
    entry.size = reader.size
    entry.digest = diff_id or "sha256:" + reader.hash.hexdigest()
    entry.raw_digest = entry.digest if raw_hash is None else "sha256:" + raw_hash.hexdigest()
    return entry


def _v7_tar(block: bytes) -> bool:
    """A pre-ustar header (no magic): its checksum still adds up."""
    if len(block) < 512:
        return False
    try:
        want = int(block[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return want == sum(block[:148]) + 256 + sum(block[156:512])


class _Stats:
    size: int | None = None


# ---------------------------------------------------------------------------------------------
# What the archive holds


@dataclass
class _ImagePlan:
    image_id: str
    config: bytes
    cfg: ImageConfig
    layers: list[_Entry]
    refs: list[Reference] = field(default_factory=list)
    parent: str = ""

    @property
    def diff_ids(self) -> list[str]:
        return list(self.cfg.rootfs.diff_ids)


def plan_images(spool: _Spool, platforms: Sequence[Platform] = ()) -> list[_ImagePlan]:
    """The images to load: every one of a docker-archive, each index entry of an OCI layout
    (a nested index resolved to `platforms`, or the host's), only those of `platforms` if any."""
    if spool.get("manifest.json") is not None:
        plans = _docker_archive(spool)
    elif spool.get("index.json") is not None:
        plans = _oci_layout(spool, platforms)
    else:
        raise af.ArchiveError("invalid archive: does not contain a manifest.json")
    if platforms:
        plans = [p for p in plans if af.config_matches(p.cfg, platforms)]
        if not plans:
            raise NotFound(f"no images providing the requested platform(s) found: {af.platforms_text(platforms)}")
    merged: dict[str, _ImagePlan] = {}
    for p in plans:
        if p.image_id in merged:
            have = merged[p.image_id]
            have.refs += [r for r in p.refs if all(str(r) != str(o) for o in have.refs)]
        else:
            merged[p.image_id] = p
    return list(merged.values())


def _image(spool: _Spool, config_name: str, expect_id: str | None) -> tuple[str, bytes, ImageConfig]:
    raw = spool.read(config_name, "image config")
    image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if expect_id is not None and expect_id != image_id:
        raise af.ArchiveError(f"invalid archive: the config {config_name} hashes to {image_id}, not {expect_id}")
    try:
        cfg = decode_config(raw)
    except ManifestError as e:
        raise af.ArchiveError(f"invalid archive: {config_name}: {e}") from None
    if cfg.os and cfg.os != "linux":
        raise af.ArchiveError(f"cannot load {cfg.os} image on linux")
    return image_id, raw, cfg


def _named_id(path: str) -> str | None:
    """The digest a docker-archive config's name states: blobs/sha256/<hex> or <hex>.json."""
    base = path.rsplit("/", 1)[-1].removesuffix(".json")
    if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
        return "sha256:" + base
    return None


def _docker_archive(spool: _Spool) -> list[_ImagePlan]:
    items = af.decode_manifest_json(spool.read("manifest.json", "file"))
    plans: list[_ImagePlan] = []
    for item in items:
        image_id, raw, cfg = _image(spool, item.config, _named_id(item.config))
        diff_ids = cfg.rootfs.diff_ids
        if len(item.layers) != len(diff_ids):
            raise af.ArchiveError(f"invalid manifest, layers length mismatch: expected {len(item.layers)}, "
                                  f"got {len(diff_ids)}")
        layers: list[_Entry] = []
        for i, (path, diff_id) in enumerate(zip(item.layers, diff_ids)):
            entry = spool.get(path)
            if entry is None:
                raise af.ArchiveError(f"invalid archive: layer {path} is missing")
            if entry.digest != diff_id:
                raise af.ArchiveError(f"invalid diffID for layer {i}: expected {diff_id!r}, got {entry.digest!r}")
            layers.append(entry)
        refs: list[Reference] = []
        for tag in item.repo_tags or []:
            try:
                ref = parse_normalized(tag)
            except EngineError:
                raise af.ArchiveError(f"invalid tag {tag!r}") from None
            if ref.tag is None or ref.digest is not None:
                raise af.ArchiveError(f"invalid tag {tag!r}")
            refs.append(ref)
        plans.append(_ImagePlan(image_id, raw, cfg, layers, refs, item.parent))
    return plans


def _blob(spool: _Spool, digest: str, what: str) -> _Entry:
    try:
        path = af.blob_path(digest)
    except ValueError:
        raise af.ArchiveError(f"invalid archive: bad digest {digest!r}") from None
    entry = spool.get(path)
    if entry is None:
        raise af.ArchiveError(f"invalid archive: {what} {digest} is missing")
    if entry.raw_digest != digest:
        raise af.ArchiveError(f"invalid archive: {what} {path} has digest {entry.raw_digest}, not {digest}")
    return entry


def _oci_layout(spool: _Spool, platforms: Sequence[Platform]) -> list[_ImagePlan]:
    try:
        index = decode_index(spool.read("index.json", "file"))
    except ManifestError as e:
        raise af.ArchiveError(f"invalid archive: index.json: {e}") from None
    wants = list(platforms) or [host_platform()]
    plans: list[_ImagePlan] = []
    for top in index.manifests:
        desc = top
        for _ in range(8):  # nested indexes, down to the host's manifest
            _blob(spool, desc.digest, "manifest")
            data = spool.read(af.blob_path(desc.digest), "manifest")
            try:
                kind = desc.mediaType or classify_manifest(data, "")
            except ManifestError as e:
                raise af.ArchiveError(f"invalid archive: {desc.digest}: {e}") from None
            if kind not in INDEX_TYPES:
                break
            try:
                children = decode_index(data).manifests
            except ManifestError as e:
                raise af.ArchiveError(f"invalid archive: {desc.digest}: {e}") from None
            child = next((c for c in (select_manifest(children, w) for w in wants) if c is not None), None)
            if child is None:
                raise NotFound(f"no image for platform {af.platforms_text(wants)} in {desc.digest}")
            desc = child
        else:
            raise af.ArchiveError("invalid archive: indexes nested too deeply")
        try:
            manifest = decode_manifest(data)
        except ManifestError as e:
            raise af.ArchiveError(f"invalid archive: {desc.digest}: {e}") from None
        assert manifest.config is not None
        _blob(spool, manifest.config.digest, "config")
        image_id, raw, cfg = _image(spool, af.blob_path(manifest.config.digest), manifest.config.digest)
        diff_ids = cfg.rootfs.diff_ids
        if len(manifest.layers) != len(diff_ids):
            raise af.ArchiveError(f"invalid manifest, layers length mismatch: expected {len(manifest.layers)}, "
                                  f"got {len(diff_ids)}")
        layers = []
        for i, (ld, diff_id) in enumerate(zip(manifest.layers, diff_ids)):
            layer = _blob(spool, ld.digest, "layer")
            if layer.digest != diff_id:
                raise af.ArchiveError(f"invalid diffID for layer {i}: expected {diff_id!r}, got {layer.digest!r}")
            layers.append(layer)
        plans.append(_ImagePlan(image_id, raw, cfg, layers, _oci_refs(top.annotations or {})))
    return plans


def _oci_refs(annotations: dict[str, str]) -> list[Reference]:
    """The name containerd's importer gives an index entry (Docker 29 loads through it): the
    full image name, else the ref name parsed as a reference; none (a dangling image) if it
    does not parse."""
    name = annotations.get(af.ANNOTATION_IMAGE_NAME) or annotations.get(af.ANNOTATION_REF_NAME) or ""
    if not name:
        return []
    try:
        ref = parse_normalized(name)
    except EngineError:
        return []
    if ref.digest is not None:
        return []
    return [ref.with_default_tag()]


# ---------------------------------------------------------------------------------------------
# The loader


class ImageLoader:
    def __init__(self, config: DaemonConfig, content: ContentStore, images: ImageStore, snapshotter: Snapshotter,
                 bus: EventSink | None = None, *, apply_layer: Callable[..., str] | None = None) -> None:
        self.config = config
        self.content = content
        self.images = images
        self.snapshotter = snapshotter
        self.bus = bus
        self._apply_layer = apply_layer

    @property
    def apply_layer(self) -> Callable[..., str]:
        if self._apply_layer is None:
            from ..snapshots.unpack import apply_layer
            self._apply_layer = apply_layer
        return self._apply_layer

    async def load(self, body: AsyncIterator[bytes], progress: ProgressFn, *, quiet: bool = True,
                   platforms: Sequence[Platform] = ()) -> list[str]:
        """Load the archive `body` streams; `progress` gets dockerd's messages (only the
        "Loaded image" lines when quiet). Returns the loaded names (tags, or IDs of untagged
        images). Raises LoadError / ArchiveError with nothing registered."""
        loop = asyncio.get_running_loop()
        work = await asyncio.to_thread(self.content.scratch_dir, "load-")
        staged: list[str] = []
        snap = self.snapshotter

        async def prepare() -> tuple[str, Path]:
            key = f"{LOAD_PREFIX}{uuid.uuid4().hex[:16]}"
            await snap.prepare(key, None)
            staged.append(key)
            return key, snap.upper_dir(key)

        def prepare_in_thread() -> tuple[str, Path]:
            return asyncio.run_coroutine_threadsafe(prepare(), loop).result()

        unpacker = _Unpacker(prepare_in_thread if snap.independent_layers else None, self.apply_layer,
                             snap.whiteouts, self.config.max_layer_size,
                             {d for rec in self.images.list() for d in rec.diff_ids})
        pipe = LayerPipe()
        reader = loop.run_in_executor(None, _read_in_thread, pipe, work, unpacker)
        feeder = asyncio.ensure_future(_feed(body, pipe))
        try:
            try:
                spool = await asyncio.shield(reader)
            except asyncio.CancelledError:
                pipe.abort(LoadError("load cancelled"))
                await _settled(reader)
                raise
            finally:
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder
            plans = await asyncio.to_thread(plan_images, spool, platforms)
            return await uncancellable(self._install(plans, staged, progress, quiet))
        finally:
            await uncancellable(self._cleanup(staged, work))

    async def _install(self, plans: list[_ImagePlan], staged: list[str], progress: ProgressFn,
                       quiet: bool) -> list[str]:
        snap = self.snapshotter
        created: list[str] = []
        sizes: dict[str, int] = {}
        try:
            for plan in plans:
                chains = chain_ids(plan.diff_ids)
                for i, (entry, chain_id) in enumerate(zip(plan.layers, chains)):
                    if chain_id in sizes:
                        continue
                    if await snap.exists(chain_id):
                        sizes[chain_id] = await self._known_size(chain_id)
                        continue
                    parent = chains[i - 1] if i else None
                    size = await self._commit_layer(entry, chain_id, parent, staged)
                    if size is None:  # a pull or another load committed it meanwhile
                        sizes[chain_id] = await self._known_size(chain_id)
                        continue
                    sizes[chain_id] = size
                    created.append(chain_id)
                    if not quiet:
                        await progress(pm.layer_progress("Loading layer", plan.diff_ids[i].split(":", 1)[1][:12],
                                                         entry.size, entry.size))
            return await self._register(plans, sizes, progress)
        except BaseException:
            for chain_id in reversed(created):
                try:
                    await snap.remove(chain_id)
                except Exception as e:  # noqa: BLE001 - the start-up sweep takes what is left
                    log.warning("cannot remove layer snapshot %s of a failed load: %s", chain_id, e)
            raise

    async def _commit_layer(self, entry: _Entry, chain_id: str, parent: str | None,
                            staged: list[str]) -> int | None:
        """Commit the layer as `chain_id`; its size, or None if someone else committed it first
        (our staging snapshot then goes with the clean-up)."""
        snap = self.snapshotter
        size: int | None
        if entry.staging is not None and not entry.staging_used and not entry.staging_failed:
            key = entry.staging
            entry.staging_used = True
            size = entry.unpacked_size
        else:
            if entry.staging_failed:
                raise LoadError(f"failed to register layer: {entry.staging_failed}")
            key = f"{LOAD_PREFIX}{uuid.uuid4().hex[:16]}"
            await snap.prepare(key, None if snap.independent_layers else parent)
            staged.append(key)
            stats = _Stats()
            upper = snap.upper_dir(key)

            def unpack() -> str:
                with open(entry.path, "rb") as f:
                    return self.apply_layer(f, upper, whiteouts=snap.whiteouts, media_type=af.DOCKER_LAYER_TAR,
                                            stats=stats, max_size=self.config.max_layer_size,
                                            min_free=free_space_margin(upper))
            try:
                diff_id = await asyncio.to_thread(unpack)
            except ValueError as e:
                raise LoadError(f"failed to register layer: {e}") from None
            if diff_id != entry.digest:  # pragma: no cover - the spool was hashed as written
                raise LoadError(f"failed to register layer: unpacked {diff_id}, expected {entry.digest}")
            size = stats.size
        try:
            await snap.commit(chain_id, key, parent=parent)
        except Exception:
            if await snap.exists(chain_id):
                return None
            raise
        staged.remove(key)
        if size is None or not snap.independent_layers:
            size = await self._layer_size(chain_id)
        return size

    async def _register(self, plans: list[_ImagePlan], sizes: dict[str, int], progress: ProgressFn) -> list[str]:
        def store_blobs() -> None:
            adopted: set[str] = set()
            for plan in plans:
                self.content.put(plan.config, plan.image_id)
                for entry in plan.layers:
                    if entry.digest not in adopted and entry.path.exists():
                        self.content.adopt(entry.path, entry.digest)
                        adopted.add(entry.digest)
        await asyncio.to_thread(store_blobs)
        ids = {p.image_id for p in plans}
        names: list[str] = []
        lines: list[str] = []
        for plan in plans:
            chains = chain_ids(plan.diff_ids)
            rec = ImageRecord(
                id=plan.image_id, diff_ids=plan.diff_ids,
                layers=[LayerBlob(e.digest, af.DOCKER_LAYER_TAR, e.size) for e in plan.layers],
                layer_sizes=[sizes.get(c, 0) for c in chains],
                created=plan.cfg.created, created_ns=_created_ns(plan.cfg.created),
                parent=plan.parent if plan.parent in ids and plan.parent != plan.image_id else "",
            )
            await self.images.add(rec)
            for ref in plan.refs:
                old = await self.images.set_reference(ref, plan.image_id)
                if old is not None and old != plan.image_id:
                    lines.append(f"The image {ref.familiar} already exists, renaming the old one with ID {old} "
                                 f"to empty string\n")
                lines.append(f"Loaded image: {ref.familiar}\n")
                names.append(ref.familiar)
            if not plan.refs:
                lines.append(f"Loaded image ID: {plan.image_id}\n")
                names.append(plan.image_id)
            self.images.event("load", rec.id, rec.id)
        for line in lines:
            await progress({"stream": line})
        return names

    async def _known_size(self, chain_id: str) -> int:
        for rec in self.images.list():
            for c, size in zip(rec.chain_ids, rec.layer_sizes):
                if c == chain_id:
                    return size
        return await self._layer_size(chain_id)

    async def _layer_size(self, chain_id: str) -> int:
        try:
            if self.snapshotter.independent_layers:
                return await asyncio.to_thread(disk_usage, self.snapshotter.upper_dir(chain_id), apparent=True)
            return await self.snapshotter.usage(chain_id)
        except Exception:  # noqa: BLE001 - a size is informative only
            return 0

    async def _cleanup(self, staged: list[str], work: Path) -> None:
        for key in list(staged):
            try:
                await self.snapshotter.remove(key)
            except Exception as e:  # noqa: BLE001 - Puller.recover() takes it at the next start
                log.warning("cannot remove staging snapshot %s: %s", key, e)
        staged.clear()
        await asyncio.to_thread(remove_tree_quietly, work)


def _read_in_thread(pipe: LayerPipe, work: Path, unpacker: _Unpacker) -> _Spool:
    try:
        return read_archive(pipe.read, work, unpacker)
    finally:
        pipe.reader_done()


async def _feed(body: AsyncIterator[bytes], pipe: LayerPipe) -> None:
    try:
        async for chunk in body:
            await pipe.put(chunk)
    except PipeClosed:
        return
    except asyncio.CancelledError:
        pipe.close(LoadError("load cancelled"))
        raise
    except Exception as e:  # noqa: BLE001 - the reader reports it
        pipe.close(LoadError(f"error reading the archive: {client_text(e)}"))
        return
    pipe.close()


async def _settled(fut: asyncio.Future[Any]) -> None:
    while not fut.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({fut})


def _created_ns(created: str) -> int:
    if not created:
        return 0
    try:
        return parse_docker_time(created)
    except ValueError:
        return 0
