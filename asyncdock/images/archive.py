"""`docker save` and `docker load` for the engine: the saver (archive_save.py) and the loader
(archive_load.py) over the same content store, image store and snapshotter."""
from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ..base.oci import Platform
from ..config import DaemonConfig
from ..content.store import ContentStore
from ..events.sink import EventSink
from ..snapshots.base import Snapshotter
from .archive_load import ImageLoader, ProgressFn
from .archive_save import ImageSaver, SavePlan
from .store import ImageStore


class ImageArchive:
    def __init__(self, config: DaemonConfig, content: ContentStore, images: ImageStore, snapshotter: Snapshotter,
                 bus: EventSink | None, state_dir: Path) -> None:
        self.saver = ImageSaver(content, images, state_dir, bus)
        self.loader = ImageLoader(config, content, images, snapshotter, bus)

    async def plan_save(self, names: Sequence[str], platforms: Sequence[Platform] = ()) -> SavePlan:
        """Resolve the names and size every layer; raises (NotFound, ...) before any byte."""
        return await self.saver.plan(names, platforms)

    def save_stream(self, plan: SavePlan) -> AsyncIterator[bytes]:
        return self.saver.stream(plan)

    async def load(self, body: AsyncIterator[bytes], progress: ProgressFn, *, quiet: bool = True,
                   platforms: Sequence[Platform] = ()) -> list[str]:
        return await self.loader.load(body, progress, quiet=quiet, platforms=platforms)
