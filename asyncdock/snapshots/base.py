"""The snapshotter interface (containerd's shape). Snapshotters return mounts; callers mount.

Vocabulary: `key` names an active (writable) snapshot, `name` a committed one; a parent is always
committed. Committed snapshots of image layers are named by their chain ID.

Unpacking a layer (see images/pull.py):
  1. `prepare(key, parent)` -- with `independent_layers` the unpacker passes parent=None so every
     layer can be extracted at once, in parallel, as it downloads; otherwise the real parent.
  2. extract the tar into `upper_dir(key)` (whiteouts in the form `whiteouts` names).
  3. `commit(chain_id, key, parent=parent_chain_id)` -- the parent is given again here, so a
     snapshot prepared without one is rebased onto its real parent at commit.
A container's rootfs: `prepare(container_id, image_top_chain_id)` then mount what it returns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import msgspec


class Mount(msgspec.Struct, frozen=True):
    """A mount to perform: type "overlay" or "bind"; options as for mount(8)."""

    type: str
    source: str
    options: tuple[str, ...] = ()


class SnapshotInfo(msgspec.Struct):
    name: str
    kind: Literal["active", "view", "committed"]
    parent: str | None = None
    created: float = 0.0


@runtime_checkable
class Snapshotter(Protocol):
    name: str
    # Capability: a layer can be unpacked without its parent present (overlay: yes; copy: no).
    independent_layers: bool
    # How the unpacker must write whiteouts: "overlay" (0/0 char devices and the
    # trusted.overlay.opaque xattr) or "delete" (apply them by removing paths).
    whiteouts: Literal["overlay", "delete"]

    async def prepare(self, key: str, parent: str | None) -> list[Mount]: ...
    async def view(self, key: str, parent: str) -> list[Mount]: ...
    async def mounts(self, key: str) -> list[Mount]: ...
    async def commit(self, name: str, key: str, parent: str | None = None) -> None: ...
    async def remove(self, key: str) -> None: ...
    async def stat(self, key: str) -> SnapshotInfo: ...
    async def exists(self, key: str) -> bool: ...
    async def list(self) -> list[SnapshotInfo]: ...
    async def usage(self, key: str, *, apparent: bool = False) -> int:
        """Bytes of the snapshot's own layer: allocated blocks, or (`apparent`) the sizes of its
        files, directories not counted, as dockerd's SizeRw and container prune count them."""
        ...
    def upper_dir(self, key: str) -> Path: ...
    async def cleanup(self) -> None:
        """Remove what a crash left half-done (active snapshots no record refers to are the
        caller's business; this drops the snapshotter's own temporary directories)."""
        ...
