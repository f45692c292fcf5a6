"""The files of a `docker save` archive, as Docker 25+ writes them, and how to read them back.

    blobs/sha256/<hex>     image configs, OCI manifests and layer tars (uncompressed: the
                           digest of a layer's blob is its diff ID)
    index.json             OCI index, one manifest descriptor per tag, annotated with
                           io.containerd.image.name and org.opencontainers.image.ref.name
    manifest.json          the docker-archive list: Config, RepoTags, Layers, LayerSources
    oci-layout             {"imageLayoutVersion": "1.0.0"}
    repositories           the legacy {name: {tag: top layer hex}}

Pure: bytes in, bytes out. JSON is written as Go's encoder writes it (field order, HTML
escaping, map keys sorted, json.Encoder's trailing newline where Docker uses one), and the
outer tar's headers come from a fixed owner, mode and time so that the same images give the
same bytes. Docker 25+ also writes a legacy v1 "json" blob per layer that nothing in the
archive refers to; we leave it out (no loader reads it).
"""
from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..base.errors import InvalidParameter
from ..base.oci import Descriptor, ImageConfig, Platform
from ..registry.platforms import select_manifest
from ..registry.reference import Reference

BLOCK = 512
TAR_END = bytes(2 * BLOCK)
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_encoder = msgspec.json.Encoder()


class ArchiveError(InvalidParameter):
    """The archive is not one we can load (its text is what the client sees)."""


def go_json(obj: Any, *, newline: bool = False) -> bytes:
    """json.Marshal's bytes (json.Encoder's when `newline`): <, > and & escaped as Go does.
    Dicts keep their insertion order: callers build struct fields in Go's order and sort maps."""
    raw = _encoder.encode(obj)
    if b"<" in raw or b">" in raw or b"&" in raw:
        raw = raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    return raw + b"\n" if newline else raw


# ---------------------------------------------------------------------------------------------
# The outer tar


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def tar_header(name: str, size: int = 0, *, mode: int = 0o644, mtime: int = 0, directory: bool = False) -> bytes:
    """One ustar header, owned by 0:0 with no user or group names. Sizes past ustar's 8 GiB
    use the base-256 form (GNU and Go read it)."""
    raw = name.encode()
    prefix = b""
    if len(raw) > 100:
        cut = raw.rfind(b"/", 0, 156)
        if cut <= 0 or len(raw) - cut - 1 > 100:
            raise ValueError(f"tar name too long: {name!r}")
        prefix, raw = raw[:cut], raw[cut + 1:]
    if size < 8 ** 11:
        size_field = _octal(size, 12)
    else:
        size_field = b"\x80" + size.to_bytes(11, "big")
    hdr = bytearray(BLOCK)
    hdr[0:len(raw)] = raw
    hdr[100:108] = _octal(mode, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = size_field
    hdr[136:148] = _octal(max(0, mtime), 12)
    hdr[148:156] = b" " * 8
    hdr[156:157] = b"5" if directory else b"0"
    hdr[257:265] = b"ustar\x0000"
    hdr[329:337] = _octal(0, 8)
    hdr[337:345] = _octal(0, 8)
    hdr[345:345 + len(prefix)] = prefix
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr)


def tar_padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def tar_member(name: str, data: bytes, mtime: int = 0) -> bytes:
    return tar_header(name, len(data), mtime=mtime) + data + tar_padding(len(data))


def blob_path(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"blobs/{algo}/{hexpart}"


# ---------------------------------------------------------------------------------------------
# Writing: the archive's small files


@dataclass
class SavedLayer:
    diff_id: str
    size: int  # of the uncompressed tar


@dataclass
class SavedImage:
    image_id: str
    config_size: int
    layers: list[SavedLayer]
    tags: list[Reference] = field(default_factory=list)  # each with a tag
    parent: str = ""


def oci_manifest(img: SavedImage) -> bytes:
    return go_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": img.image_id, "size": img.config_size},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": layer.diff_id, "size": layer.size}
                   for layer in img.layers],
    })


def small_files(images: Sequence[SavedImage]) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(OCI manifest blobs by digest, top-level files by name) for the images, in order."""
    blobs: dict[str, bytes] = {}
    descriptors: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    repos: dict[str, dict[str, str]] = {}
    ids = {img.image_id for img in images}
    for img in images:
        data = oci_manifest(img)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        plain = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data)}
        repo_tags: list[str] | None = None
        for ref in img.tags:
            tag = ref.tag or "latest"
            repos.setdefault(ref.familiar_name, {})[tag] = img.layers[-1].diff_id.split(":", 1)[1]
            repo_tags = (repo_tags or []) + [ref.familiar]
            descriptors.append({**plain, "annotations": {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: tag}})
        if not img.tags:
            descriptors.append(plain)
        item: dict[str, Any] = {
            "Config": blob_path(img.image_id),
            "RepoTags": repo_tags,
            "Layers": [blob_path(layer.diff_id) for layer in img.layers],
        }
        if img.parent and img.parent in ids and img.parent != img.image_id:
            item["Parent"] = img.parent
        item["LayerSources"] = {layer.diff_id: {"mediaType": OCI_LAYER_TAR, "size": layer.size,
                                                "digest": layer.diff_id}
                                for layer in sorted(img.layers, key=lambda x: x.diff_id)}
        items.append(item)
    files = {
        "index.json": go_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}),
        "manifest.json": go_json(items, newline=True),
        "oci-layout": OCI_LAYOUT,
    }
    if repos:
        files["repositories"] = go_json({k: dict(sorted(v.items())) for k, v in sorted(repos.items())}, newline=True)
    return blobs, files


# ---------------------------------------------------------------------------------------------
# Reading


class ManifestItem(msgspec.Struct, rename="pascal"):
    """One image of manifest.json (Docker 1.10+); Layers name `<id>/layer.tar` before 25."""

    config: str = ""
    repo_tags: list[str] | None = None
    layers: list[str] = msgspec.field(default_factory=list)
    parent: str = ""


def decode_manifest_json(data: bytes) -> list[ManifestItem]:
    try:
        items = msgspec.json.decode(data, type=list[ManifestItem] | None)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ArchiveError(f"invalid archive: failed to decode manifest.json: {e}") from None
    if items is None:
        raise ArchiveError("invalid manifest, manifest cannot be null (but can be [])")
    return items


def config_matches(cfg: ImageConfig, wants: Sequence[Platform]) -> bool:
    """The image's platform is one of `wants` (containerd's matching: compatible variants too);
    no wants: any."""
    if not wants:
        return True
    have = Descriptor(mediaType="", digest="", size=0,
                      platform=Platform(architecture=cfg.architecture, os=cfg.os or "linux", variant=cfg.variant))
    return any(select_manifest([have], want) is not None for want in wants)


def platforms_text(wants: Sequence[Platform]) -> str:
    return "[" + " ".join(str(w) for w in wants) + "]"


def entry_name(name: str) -> str:
    """An outer-tar member's path inside the archive, normalised. A path that leaves the
    archive (`..` past its root) is refused; a leading `/` is dropped (it is relative to the
    archive, as Docker's untar treats it)."""
    norm = posixpath.normpath("/" + name.replace("\\", "/")) if name else "/"
    if ".." in name.replace("\\", "/").split("/"):
        # normpath quietly clamps "/../x" to "/x": a member that tries is refused outright.
        raise ArchiveError(f"invalid archive: entry {name!r} is outside of the archive")
    return norm.lstrip("/")


def resolve_link(link_name: str, target: str) -> str:
    """A symlink's target as an archive path, evaluated inside the archive (an absolute target
    means the archive's root; `..` stops at the root), as Docker's FollowSymlinkInScope does."""
    base = posixpath.dirname(link_name)
    joined = target if target.startswith("/") else posixpath.join("/", base, target)
    return posixpath.normpath("/" + joined).lstrip("/")
