"""A new local image from a parent image, a config, an optional new layer and one history entry
(commit, import, each step of the builder).

The config blob is JSON as moby writes it (image.Image: V1Image's fields first, then parent,
rootfs, history; Go's omitempty rules for container.Config), so an image's ID, the digest of
that blob, depends only on what it says: the same inputs (the `created` time included) give the
same ID, and a push + pull brings back the very blob, so the ID survives build -> push -> rmi ->
pull.
"""
from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
import msgspec

from ..base.oci import ContainerConfig, History, ImageConfig, RootFS
from ..base.timefmt import parse_docker_time, rfc3339nano
from ..content.store import ContentStore
from .layercommit import NewLayer
from .store import ImageRecord, ImageStore

__all__ = ["encode_config", "make_image"]

# container.Config's fields with `omitempty` (the rest is always written, null when empty)
_CC_OMITEMPTY = frozenset({"ExposedPorts", "Healthcheck", "ArgsEscaped", "NetworkDisabled", "MacAddress",
                           "StopSignal", "StopTimeout", "Shell"})


def _container_config(cfg: ContainerConfig) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(cfg)
    return {k: v for k, v in raw.items() if not (k in _CC_OMITEMPTY and v in (None, "", False, [], {}))}


def _history(h: History) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (("created", h.created), ("author", h.author), ("created_by", h.created_by),
                       ("comment", h.comment), ("empty_layer", h.empty_layer)):
        if value:
            out[key] = value
    return out


def encode_config(cfg: ImageConfig, *, parent_id: str = "") -> bytes:
    """The config blob of `cfg` in moby's field order and omission rules."""
    doc: dict[str, Any] = {}
    if cfg.comment:
        doc["comment"] = cfg.comment
    if cfg.created:
        doc["created"] = cfg.created
    if cfg.container:
        doc["container"] = cfg.container
    if cfg.container_config is not None:
        doc["container_config"] = _container_config(cfg.container_config)
    if cfg.docker_version:
        doc["docker_version"] = cfg.docker_version
    if cfg.author:
        doc["author"] = cfg.author
    if cfg.config is not None:
        doc["config"] = _container_config(cfg.config)
    for key, value in (("architecture", cfg.architecture), ("variant", cfg.variant), ("os", cfg.os)):
        if value:
            doc[key] = value
    if parent_id:
        doc["parent"] = parent_id
    doc["rootfs"] = {"type": cfg.rootfs.type or "layers", "diff_ids": list(cfg.rootfs.diff_ids)}
    if cfg.history:
        doc["history"] = [_history(h) for h in cfg.history]
    if cfg.os_version:
        doc["os.version"] = cfg.os_version
    if cfg.os_features:
        doc["os.features"] = list(cfg.os_features)
    return msgspec.json.encode(doc)


async def make_image(images: ImageStore, content: ContentStore, *, parent: ImageRecord | None,
                     config: ImageConfig, layer: NewLayer | None, history: History,
                     parent_id_link: bool) -> ImageRecord:
    """Store and register a new image.

    `config`: the new image's config (Config, Author, Comment, Container, ContainerConfig,
    Architecture/OS, Created; empty Created: the history entry's, else now). Its rootfs and
    history are ignored: they are the parent's (None: none) plus `layer`'s diff ID and `history`
    (marked empty_layer when `layer` is None). `parent_id_link`: record the parent as the
    image's local parent (commit, build steps), which `docker history` and the delete rules
    follow; no `parent` key is written into the config (moby keeps that link outside it).
    The record is not tagged: the caller tags it."""
    base_cfg = images.config(parent) if parent is not None else None
    created = config.created or history.created or rfc3339nano(time.time_ns())
    entry = msgspec.structs.replace(history, created=history.created or created,
                                    empty_layer=layer is None)
    diff_ids = list(parent.diff_ids) if parent is not None else []
    layers = list(parent.layers) if parent is not None else []
    sizes = list(parent.layer_sizes) if parent is not None else []
    if layer is not None:
        diff_ids.append(layer.diff_id)
        layers.append(layer.blob)
        sizes.append(layer.size)
    new_cfg = msgspec.structs.replace(
        config, created=created,
        architecture=config.architecture or (base_cfg.architecture if base_cfg else ""),
        os=config.os or (base_cfg.os if base_cfg else "") or "linux",
        variant=config.variant or (base_cfg.variant if base_cfg and not config.architecture else ""),
        history=[*(base_cfg.history if base_cfg else []), entry],
        rootfs=RootFS(type="layers", diff_ids=diff_ids))
    blob = encode_config(new_cfg)
    digest = await anyio.to_thread.run_sync(content.put, blob)
    try:
        created_ns = parse_docker_time(created)
    except (ValueError, TypeError):
        created_ns = 0
    rec = ImageRecord(id=digest, diff_ids=diff_ids, layers=layers, layer_sizes=sizes, created=created,
                      created_ns=created_ns,
                      parent=parent.id if parent is not None and parent_id_link else "")
    existing = images.find(digest)
    if existing is not None:
        return existing
    await images.add(rec)
    return rec
