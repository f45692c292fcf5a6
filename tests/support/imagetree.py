"""Images with a local parent, made through the image store's own API the way commit and build
steps make them (until those land): the parent's config plus one history entry, the parent's
layers plus (optionally) one new layer committed as a snapshot on the parent's top, and
`ImageRecord.parent` set. Works on a test's own stores and on a stopped daemon's data root."""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from asyncdock.base.timefmt import parse_docker_time
from asyncdock.content.store import ContentStore
from asyncdock.images.store import ImageRecord, ImageStore, LayerBlob, chain_ids
from asyncdock.registry.reference import parse_normalized
from asyncdock.snapshots.base import Snapshotter

if TYPE_CHECKING:
    from tests.support.daemon import Daemon

GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


async def make_image(store: ImageStore, parent: ImageRecord | None, *, step: str, created: str,
                     files: dict[str, bytes] | None = None, labels: dict[str, str] | None = None,
                     tag: str = "") -> ImageRecord:
    """One build step on `parent` (None: a base image with its own first layer). `files` makes
    a new layer holding them; without, the step is an empty-layer one (ENV, LABEL, CMD)."""
    content: ContentStore = store.content
    snap: Snapshotter = store.snapshotter
    if parent is not None:
        cfg = json.loads(content.read_bytes(parent.id))
    else:
        cfg = {"architecture": "amd64", "os": "linux", "config": {}, "history": [],
               "rootfs": {"type": "layers", "diff_ids": []}}
        files = files if files is not None else {"base": b"base"}
    diff_ids = list(parent.diff_ids) if parent else []
    layers = list(parent.layers) if parent else []
    sizes = list(parent.layer_sizes) if parent else []
    history = {"created": created, "created_by": step}
    if files is not None:
        diff_id = "sha256:" + hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
        chain = chain_ids([*diff_ids, diff_id])[-1]
        if not await snap.exists(chain):
            key = f"imagetree-{chain[7:31]}"
            await snap.prepare(key, chain_ids(diff_ids)[-1] if diff_ids else None)
            for name, data in files.items():
                (snap.upper_dir(key) / name).write_bytes(data)
            await snap.commit(chain, key, parent=chain_ids(diff_ids)[-1] if diff_ids else None)
        blob = content.put(b"layer blob of " + diff_id.encode())
        diff_ids.append(diff_id)
        layers.append(LayerBlob(blob, GZIP_LAYER, 100))
        sizes.append(sum(len(d) for d in files.values()))
    else:
        history["empty_layer"] = True
    if labels:
        cfg["config"] = {**(cfg.get("config") or {}), "Labels": {**((cfg.get("config") or {}).get("Labels") or {}),
                                                                 **labels}}
    cfg["created"] = created
    cfg["history"] = [*cfg.get("history", []), history]
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    image_id = content.put(json.dumps(cfg).encode())
    rec = ImageRecord(id=image_id, diff_ids=diff_ids, layers=layers, layer_sizes=sizes, created=created,
                      created_ns=parse_docker_time(created), parent=parent.id if parent else "")
    await store.add(rec)
    if tag:
        await store.set_reference(parse_normalized(tag).with_default_tag(), image_id)
    return rec


async def open_offline(data_root: Path) -> ImageStore:
    """The image store of a stopped daemon's data root, on the snapshotter it used."""
    from asyncdock import plugins

    roots = [p for p in (data_root / "snapshots").iterdir() if p.is_dir()]
    assert len(roots) == 1, roots
    made = plugins.discover(plugins.SNAPSHOTTERS)[roots[0].name].factory(plugins.InitContext(roots[0]))
    if inspect.isawaitable(made):
        made = await made
    return ImageStore(data_root / "images", ContentStore(data_root / "content"), made)


T = TypeVar("T")


def seed_stopped(daemon: Daemon, build: Callable[[ImageStore], Awaitable[T]]) -> T:
    """Stop the daemon, add images to its store offline with `build`, start it again (the
    daemon reads its image records at start). For images with a parent while no route of the
    daemon makes them yet."""
    daemon.stop()
    try:
        async def main() -> T:
            return await build(await open_offline(daemon.data_root))
        return asyncio.run(main())
    finally:
        daemon.start()
