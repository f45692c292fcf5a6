"""`GET /containers/{id}/changes`: the container's writable layer against the image, from the
overlay upper directory (moby's overlay changes: whiteouts are deletions, a path also in a
lower layer is a change, anything else an addition, parents of additions and deletions are
changes)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .. import errors

CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2

# What moby's init layer holds (mount points the engine and runtime create): not the user's
# changes. The runtime creates them in our writable layer instead.
_INIT_PATHS = {"/dev", "/dev/pts", "/dev/shm", "/dev/console", "/proc", "/sys", "/.dockerenv",
               "/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/etc/mtab"}


def _lowers(mounts: list[Any]) -> list[Path]:
    for m in mounts:
        if m.type == "overlay":
            for opt in m.options:
                if opt.startswith("lowerdir="):
                    return [Path(p) for p in opt[len("lowerdir="):].split(":") if p]
            return []
    raise errors.NotImplementedYet("container diff needs the overlay snapshotter")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def compute_changes(upper: Path, lowers: list[Path]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def in_lower(rel: str) -> os.stat_result | None:
        for layer in lowers:
            try:
                return os.lstat(str(layer) + rel)
            except OSError:
                continue
        return None

    def walk(dir_path: str, rel_dir: str) -> None:
        try:
            entries = sorted(os.scandir(dir_path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir != "/" else f"/{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            kind: int | None
            if _is_whiteout(st):
                kind = CHANGE_DELETE
            else:
                kind = CHANGE_ADD
                low = in_lower(rel)
                if low is not None:
                    kind = CHANGE_MODIFY
                    if stat.S_ISDIR(low.st_mode) and stat.S_ISDIR(st.st_mode) and not _opaque(entry.path):
                        if low.st_mode == st.st_mode and low.st_mtime_ns == st.st_mtime_ns:
                            kind = None
            if kind is not None:
                if rel not in _INIT_PATHS:
                    parent = os.path.dirname(rel)
                    if kind != CHANGE_MODIFY and parent != "/" and parent not in changed_dirs:
                        changes.append({"Path": parent, "Kind": CHANGE_MODIFY})
                        changed_dirs.add(parent)
                    if not (stat.S_ISDIR(st.st_mode) and rel in changed_dirs):
                        changes.append({"Path": rel, "Kind": kind})
            if stat.S_ISDIR(st.st_mode) and not _is_whiteout(st):
                if kind is not None and rel not in _INIT_PATHS:
                    changed_dirs.add(rel)
                walk(entry.path, rel)

    walk(str(upper), "/")
    # Directories the runtime touched only to make its mount points are no change of the user's.
    reported = {c["Path"] for c in changes}
    out = []
    for c in changes:
        p = c["Path"]
        if c["Kind"] == CHANGE_MODIFY and p in ("/dev", "/etc", "/") :
            if not any(q.startswith(p + "/") for q in reported):
                continue
        out.append(c)
    out.sort(key=lambda c: c["Path"])
    return out


async def container_changes(engine: Any, rec: Any) -> list[dict[str, Any]]:
    import asyncio

    snap = engine.snapshotter
    mounts = await snap.mounts(rec.id)
    lowers = _lowers(mounts)
    upper = snap.upper_dir(rec.id)
    return await asyncio.to_thread(compute_changes, Path(upper), lowers)
