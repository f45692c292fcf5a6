"""`docker commit`: a container's writable layer and config made into a new image (moby's
daemon/commit.go CreateImageFromContainer and daemon/images/image_commit.go CommitImage).

The caller (the route) finds the container, pauses it if asked and publishes the event; this
module only reads the container's facts handed to it, so images/ needs nothing of containers/.
"""
from __future__ import annotations

import time
from typing import Any

import msgspec

from ..base.errors import InvalidParameter
from ..base.oci import ContainerConfig, HealthConfig, History, ImageConfig
from ..base.timefmt import rfc3339nano
from ..base.version import __version__
from ..content.store import ContentStore
from ..registry.reference import Reference, parse_normalized
from ..snapshots.base import Snapshotter
from .configedit import parse_changes
from .layercommit import LayerCommitter
from .newimage import make_image
from .store import ImageRecord, ImageStore

__all__ = ["CommitSource", "Committer", "as_image_config", "commit_reference", "merge_config"]


class CommitSource(msgspec.Struct):
    """What commit needs of a container."""

    id: str
    image_id: str  # the image it was created from ("" for none)
    config: ContainerConfig  # its Config, as inspect shows it
    snapshot: str  # the key of its writable snapshot
    os: str = "linux"


def as_image_config(raw: Any) -> ContainerConfig:
    """Any ContainerConfig-shaped struct or dict as base.oci's ContainerConfig (nulls dropped:
    Go's decoder reads them as absent)."""
    doc = raw if isinstance(raw, dict) else msgspec.to_builtins(raw)
    try:
        return msgspec.convert({k: v for k, v in doc.items() if v is not None}, ContainerConfig, strict=False)
    except msgspec.ValidationError as e:
        raise InvalidParameter(f"invalid container config: {e}") from None


def commit_reference(repo: str, tag: str) -> Reference | None:
    """moby's httputils.RepoTagReference: no repo, no tag; a repo without a tag is :latest."""
    if not repo:
        return None
    try:
        ref = parse_normalized(repo)
    except Exception as e:  # noqa: BLE001 - the reference parser's own text says what is wrong
        raise InvalidParameter(str(e)) from None
    if ref.digest is not None:
        raise InvalidParameter("refusing to create a tag with a digest reference")
    if tag:
        try:
            ref = ref.trimmed().with_tag(tag)
        except Exception as e:  # noqa: BLE001
            raise InvalidParameter(str(e)) from None
    return ref.with_default_tag()


def merge_config(user: ContainerConfig, base: ContainerConfig) -> ContainerConfig:
    """moby's daemon/commit.go merge: what the user's config leaves unset comes from `base`
    (the container's config)."""
    out = msgspec.structs.replace(user)
    if not out.user:
        out.user = base.user
    if not out.exposed_ports:
        out.exposed_ports = base.exposed_ports
    elif base.exposed_ports:
        out.exposed_ports = {**out.exposed_ports, **{p: v for p, v in base.exposed_ports.items()
                                                     if p not in out.exposed_ports}}
    if not out.env:
        out.env = base.env
    else:
        keys = {e.partition("=")[0] for e in out.env}
        out.env = [*out.env, *(e for e in base.env or [] if e.partition("=")[0] not in keys)]
    labels = dict(out.labels or {})
    for k, v in (base.labels or {}).items():
        labels.setdefault(k, v)
    out.labels = labels
    if not out.entrypoint:
        if not out.cmd:
            out.cmd = base.cmd
            out.args_escaped = base.args_escaped
        if out.entrypoint is None:
            out.entrypoint = base.entrypoint
    if base.healthcheck is not None:
        if out.healthcheck is None:
            out.healthcheck = base.healthcheck
        else:
            u, b = out.healthcheck, base.healthcheck
            out.healthcheck = HealthConfig(
                test=u.test if u.test else b.test, interval=u.interval or b.interval,
                timeout=u.timeout or b.timeout, start_period=u.start_period or b.start_period,
                start_interval=u.start_interval or b.start_interval, retries=u.retries or b.retries)
    if not out.working_dir:
        out.working_dir = base.working_dir
    if not out.volumes:
        out.volumes = base.volumes
    else:
        out.volumes = {**out.volumes, **(base.volumes or {})}
    if not out.stop_signal:
        out.stop_signal = base.stop_signal
    return out


class Committer:
    def __init__(self, images: ImageStore, content: ContentStore, snapshotter: Snapshotter) -> None:
        self.images = images
        self.content = content
        self.snapshotter = snapshotter
        self.layers = LayerCommitter(content, snapshotter)

    async def commit(self, src: CommitSource, *, override: ContainerConfig | None, changes: list[str],
                     author: str, comment: str, ref: Reference | None) -> ImageRecord:
        """The new image (tagged `ref` if given). The caller keeps the container still (paused)
        while this runs, if it asked for that."""
        # As moby: the changes apply to the request's config (or the container's), then what
        # is still unset comes from the container's config.
        new_cfg = merge_config(parse_changes(changes, override or src.config), src.config)
        parent = self.images.find(src.image_id) if src.image_id else None
        info = await self.snapshotter.stat(src.snapshot)
        # The new snapshot is unpacked from the blob after the answer (images/materialize):
        # the commit does not write the layer twice while the caller (and a paused container)
        # waits.
        layer = await self.layers.commit(src.snapshot, info.parent, snapshot="none")
        created = rfc3339nano(time.time_ns())
        image_cfg = ImageConfig(
            created=created, author=author, config=new_cfg, container=src.id,
            container_config=src.config, docker_version=__version__, os=src.os)
        hist = History(created=created, author=author, comment=comment,
                       created_by=" ".join(src.config.cmd or []))
        rec = await make_image(self.images, self.content, parent=parent, config=image_cfg, layer=layer,
                               history=hist, parent_id_link=parent is not None)
        if layer is not None:
            self.images.layers.later(layer.chain_id, info.parent, layer.blob.digest, layer.blob.media_type,
                                     layer.diff_id)
        if ref is not None:
            await self.images.tag(rec.id, str(ref))  # a `tag` event, as moby's TagImage
        return rec
