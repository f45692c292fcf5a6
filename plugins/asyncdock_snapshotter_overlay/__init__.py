"""The overlayfs snapshotter: each snapshot is one directory, stacked by overlay mounts.

Layers are independent (`independent_layers=True`): a layer is unpacked into its own empty dir
with overlay-style whiteouts, so all layers of an image can be extracted in parallel while they
download, and each is given its real parent at commit.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from asyncdock.plugins import InitContext, Registration
from asyncdock.snapshots.base import Mount
from asyncdock.snapshots.dirstore import DirSnapshotter, Kind, Record

log = logging.getLogger(__name__)

__all__ = ["OverlaySnapshotter", "plugin", "supported"]


def _index_param_exists() -> bool:
    return os.path.exists("/sys/module/overlay/parameters/index")


class OverlaySnapshotter(DirSnapshotter):
    name = "overlayfs"
    independent_layers = True
    whiteouts: Literal["overlay", "delete"] = "overlay"

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        super().__init__(root, durable=durable)
        # As containerd: with index=on (a kernel build default on some distros) an upper dir
        # remembers its lowers, and a snapshot reused on a different parent chain would then
        # refuse to mount. We never want it.
        self._extra: tuple[str, ...] = ("index=off",) if _index_param_exists() else ()

    def _populate(self, new_dir: Path, kind: Kind, chain: list[Record]) -> None:
        if kind == "active":
            (new_dir / "work").mkdir()

    def _mounts(self, rec: Record) -> list[Mount]:
        chain = self._chain(rec.parent)
        if rec.kind == "active":
            if not chain:
                return [Mount("bind", str(self._fs(rec)), ("rw", "rbind"))]
            lower = ":".join(str(self._fs(r)) for r in chain)
            return [Mount("overlay", "overlay", (
                f"lowerdir={lower}",
                f"upperdir={self._fs(rec)}",
                f"workdir={self._dir(rec) / 'work'}",
            ) + self._extra)]
        # Read-only: a view shows its parent; a committed snapshot shows itself on its parents.
        layers = chain if rec.kind == "view" else [rec, *chain]
        if not layers:
            return [Mount("bind", str(self._fs(rec)), ("ro", "rbind"))]
        if len(layers) == 1:
            # overlay needs two lowers when it has no upper; one layer is a plain bind.
            return [Mount("bind", str(self._fs(layers[0])), ("ro", "rbind"))]
        lower = ":".join(str(self._fs(r)) for r in layers)
        return [Mount("overlay", "overlay", (f"lowerdir={lower}",) + self._extra)]


def supported(root: Path | None = None) -> bool:
    """Whether overlayfs works here: the kernel knows it and a real mount (two lowers, an upper)
    succeeds in a temporary dir under `root` (the backing fs matters: overlay cannot use some
    file systems, such as another overlay, as its upper)."""
    from asyncdock.snapshots import mount as mnt

    try:
        with open("/proc/filesystems") as f:
            listed = any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        listed = False
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="overlay-check-", dir=root) as tmp:
            t = Path(tmp)
            for d in ("l1", "l2", "u", "w", "m"):
                (t / d).mkdir()
            (t / "l2" / "f").write_bytes(b"x")
            opts = (f"lowerdir={t / 'l1'}:{t / 'l2'}", f"upperdir={t / 'u'}", f"workdir={t / 'w'}")
            mnt.mount([Mount("overlay", "overlay", opts)], t / "m")
            try:
                ok = (t / "m" / "f").read_bytes() == b"x"
                (t / "m" / "g").write_bytes(b"y")
            finally:
                mnt.unmount(t / "m")
    except OSError as e:
        log.info("overlayfs not usable%s: %s", f" under {root}" if root else "", e)
        return False
    # The mount can autoload the module, so it is the judge; the listing is only informative.
    if not listed:
        log.debug("overlay was not in /proc/filesystems before the check mount")
    return ok


def _factory(ctx: InitContext) -> OverlaySnapshotter:
    return OverlaySnapshotter(ctx.root, durable=bool(ctx.options.get("durable", True)))


plugin = Registration(kind="snapshotter", id="overlayfs", factory=_factory,
                      description="overlayfs snapshots; independent layers, parallel unpack",
                      usable=supported)
