"""Layer snapshots made from their blobs after the image that names them is registered.

`docker commit` writes the layer's blob (diff, gzip, digests) and registers the image; the
snapshot a container of the new image runs from is unpacked from that blob in the background
(`later`), so the commit answers without writing the layer a second time on its critical path.
Whatever needs the snapshots asks `ensure` first: it waits for a pending unpack and unpacks, from
the content store, any layer snapshot of the image that is missing. That also repairs what a
crash can leave (an image record whose newest snapshot was never made): the blob is there.

The snapshot is unpacked from the blob rather than shared with the committed container (which
may run on and write into its files) and committed under the chain ID only once its diff ID is
verified.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from ..base.errors import Conflict, NotFound
from ..content.store import ContentStore
from ..snapshots.base import Snapshotter
from ..snapshots.unpack import apply_layer
from ..util.tasks import TaskSet, uncancellable

log = logging.getLogger(__name__)

__all__ = ["LayerMaterializer", "STAGING_PREFIX"]

STAGING_PREFIX = "materialize-"


class LayerMaterializer:
    def __init__(self, content: ContentStore, snapshotter: Snapshotter) -> None:
        self.content = content
        self.snapshotter = snapshotter
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._tasks = TaskSet("layer snapshots")

    def later(self, chain: str, parent: str | None, digest: str, media_type: str, diff_id: str) -> None:
        """Unpack blob `digest` into the snapshot `chain` (on `parent`) in the background."""
        if chain in self._pending:
            return
        task = self._tasks.spawn(self._make(chain, parent, digest, media_type, diff_id),
                                 name=f"unpack layer {chain[:19]}", failure_level=logging.WARNING)
        self._pending[chain] = task
        task.add_done_callback(lambda _t: self._pending.pop(chain, None))

    async def settle(self, chain: str) -> None:
        """Until a background unpack of `chain` (if any) ended; its failure is not raised here
        (`ensure` makes the snapshot again)."""
        task = self._pending.get(chain)
        if task is not None:
            await asyncio.wait([task])

    async def ensure(self, chains: list[str], layers: list[tuple[str, str]], diff_ids: list[str]) -> None:
        """Every snapshot of `chains` (an image's chain IDs, base first) present: pending unpacks
        awaited, missing ones unpacked from the blobs `layers` ((digest, media type) per layer)."""
        for chain in chains:
            if chain in self._pending:
                await self.settle(chain)
        # A committed snapshot has all its parents (a parent with children cannot go), so the
        # usual case, the top present, costs one lookup on container create's path.
        missing: list[int] = []
        for i in reversed(range(len(chains))):
            if await self.snapshotter.exists(chains[i]):
                break
            missing.insert(0, i)
        for i in missing:
            if i >= len(layers) or not self.content.exists(layers[i][0]):
                raise NotFound(f"layer {diff_ids[i]} of the image has neither a snapshot nor a blob: "
                               "pull or load the image again")
            log.info("unpacking missing layer snapshot %s from its blob", chains[i])
            parent = chains[i - 1] if i else None
            await self._make(chains[i], parent, layers[i][0], layers[i][1], diff_ids[i])

    async def _make(self, chain: str, parent: str | None, digest: str, media_type: str, diff_id: str) -> None:
        snap = self.snapshotter
        if await snap.exists(chain):
            return
        staging = f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        await snap.prepare(staging, None if snap.independent_layers else parent)
        committed = False
        try:
            got = await asyncio.to_thread(self._unpack, self.content.path(digest), snap.upper_dir(staging),
                                          media_type)
            if got != diff_id:
                raise ValueError(f"blob {digest} unpacks to {got}, not the image's diff ID {diff_id}")
            try:
                await snap.commit(chain, staging, parent=parent)
                committed = True
            except Conflict:
                pass  # made meanwhile by someone else (a pull of the same layer)
        finally:
            if not committed:
                await uncancellable(snap.remove(staging))

    def _unpack(self, blob: Path, dest: Path, media_type: str) -> str:
        with open(blob, "rb") as f:
            return apply_layer(f, dest, whiteouts=self.snapshotter.whiteouts, media_type=media_type)

    async def recover(self) -> None:
        """At start-up: the staging snapshots of unpacks a stop or crash interrupted."""
        for info in await self.snapshotter.list():
            if info.name.startswith(STAGING_PREFIX) and info.kind != "committed":
                await self.snapshotter.remove(info.name)

    async def close(self) -> None:
        """Let running unpacks finish (they are short; a cut one is redone by `ensure`)."""
        await self._tasks.close(timeout=30.0)
