"""The copy snapshotter (containerd's "native"): for file systems where overlayfs is unusable.

A new active snapshot starts as a full copy of its parent's tree, so layers must be unpacked in
order onto their parent (`independent_layers=False`) and whiteouts are applied by deleting
(`whiteouts="delete"`). Every mount is a bind mount.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from asyncdock.base.errors import SystemError_
from asyncdock.plugins import InitContext, Registration
from asyncdock.snapshots.base import Mount
from asyncdock.snapshots.dirstore import DirSnapshotter, Kind, Record

__all__ = ["CopySnapshotter", "plugin", "copy_tree"]


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into the existing dir `dst`, keeping everything a rootfs needs:
    owners, modes, times, hard links, xattrs (file capabilities), devices, fifos. GNU cp does
    all of it in C and can share extents (reflink) on btrfs/xfs; a Python walk would be far
    slower."""
    res = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--no-target-directory", f"{src}/.", str(dst)],
        capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemError_(f"copying snapshot {src} to {dst}: {res.stderr.strip()}")


class CopySnapshotter(DirSnapshotter):
    name = "copy"
    independent_layers = False
    whiteouts: Literal["overlay", "delete"] = "delete"

    def _populate(self, new_dir: Path, kind: Kind, chain: list[Record]) -> None:
        # Views read the (immutable) committed parent in place: no copy needed.
        if kind == "active" and chain:
            copy_tree(self._fs(chain[0]), new_dir / "fs")

    def _mounts(self, rec: Record) -> list[Mount]:
        if rec.kind == "active":
            return [Mount("bind", str(self._fs(rec)), ("rw", "rbind"))]
        shown = rec
        if rec.kind == "view" and rec.parent is not None:
            shown = self._get(rec.parent)
        return [Mount("bind", str(self._fs(shown)), ("ro", "rbind"))]


def _factory(ctx: InitContext) -> CopySnapshotter:
    return CopySnapshotter(ctx.root, durable=bool(ctx.options.get("durable", True)))


plugin = Registration(kind="snapshotter", id="copy", factory=_factory,
                      description="full copies; works on any file system")
