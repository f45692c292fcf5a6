"""`GET /containers/{id}/changes`: the container's writable layer against the image, from the
overlay upper directory (moby's overlay changes: whiteouts are deletions, a path also in a
lower layer is a change, anything else an addition, parents of additions and deletions are
changes)."""
from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..base import errors
from ..snapshots.base import Mount, Snapshotter
from ..snapshots.diff import INIT_PATHS
from .models import ContainerRecord
from .rootfs_fs import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, openat2

CHANGE_MODIFY, CHANGE_ADD, CHANGE_DELETE = 0, 1, 2

# What moby's init layer holds: not the user's changes (shared with commit's layer diff).
_INIT_PATHS = INIT_PATHS


def _lowers(mounts: list[Mount]) -> list[Path]:
    for m in mounts:
        if m.type == "overlay":
            for opt in m.options:
                if opt.startswith("lowerdir="):
                    return [Path(p) for p in opt[len("lowerdir="):].split(":") if p]
            return []
    raise errors.NotImplementedYet("container diff needs the overlay snapshotter")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(dir_fd: int) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(dir_fd, attr) == b"y":
                return True
        except OSError:
            pass
    return False


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def compute_changes(upper: Path, lowers: list[Path]) -> list[dict[str, Any]]:
    """Walked by directory fds, never by paths: a running container can swap a directory of
    its upper layer for a symlink at any time, and a lower layer's symlinks are the image's.
    Neither may make us list or stat a host directory."""
    upper_fd = os.open(upper, _DIR_FLAGS)
    lower_fds: list[int] = []
    try:
        for layer in lowers:
            with contextlib.suppress(OSError):
                lower_fds.append(os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        return _changes(upper_fd, lower_fds)
    finally:
        os.close(upper_fd)
        for fd in lower_fds:
            os.close(fd)


def _changes(upper_fd: int, lower_fds: list[int]) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    changed_dirs: set[str] = set()

    def in_lower(rel: str) -> os.stat_result | None:
        for lfd in lower_fds:
            try:
                # No symlink on the way: overlayfs does not merge through one either.
                fd = openat2(lfd, rel.lstrip("/"), os.O_PATH | os.O_NOFOLLOW,
                             resolve=RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
            except OSError:
                continue
            try:
                return os.fstat(fd)
            finally:
                os.close(fd)
        return None

    def listing(dir_fd: int) -> Iterator[os.DirEntry[str]]:
        try:
            return iter(sorted(os.scandir(dir_fd), key=lambda e: e.name))
        except OSError:
            return iter(())

    def visit(dir_fd: int, rel: str, entry: os.DirEntry[str]) -> int | None:
        """Record the change `entry` is, if any; the fd of a directory to descend into."""
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return None
        sub: int | None = None
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                return None  # gone, or no directory any more
        try:
            kind: int | None
            if _is_whiteout(st):
                kind = CHANGE_DELETE
            else:
                kind = CHANGE_ADD
                low = in_lower(rel)
                if low is not None:
                    kind = CHANGE_MODIFY
                    if stat.S_ISDIR(low.st_mode) and sub is not None and not _opaque(sub):
                        if low.st_mode == st.st_mode and low.st_mtime_ns == st.st_mtime_ns:
                            kind = None
            if kind is not None:
                if rel not in _INIT_PATHS:
                    parent = os.path.dirname(rel)
                    if kind != CHANGE_MODIFY and parent != "/" and parent not in changed_dirs:
                        changes.append({"Path": parent, "Kind": CHANGE_MODIFY})
                        changed_dirs.add(parent)
                    if not (sub is not None and rel in changed_dirs):
                        changes.append({"Path": rel, "Kind": kind})
            if sub is not None and kind is not None and rel not in _INIT_PATHS:
                changed_dirs.add(rel)
        except BaseException:
            if sub is not None:
                os.close(sub)
            raise
        return sub

    # Depth first, children in name order, with an explicit stack (one fd a level): a
    # container's tree can be deeper than Python's recursion limit.
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = [(upper_fd, "/", listing(upper_fd))]
    try:
        while stack:
            dir_fd, rel_dir, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if stack:  # the upper dir's fd is the caller's
                    os.close(dir_fd)
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir != "/" else f"/{entry.name}"
            sub = visit(dir_fd, rel, entry)
            if sub is not None:
                stack.append((sub, rel, listing(sub)))
    finally:
        for dir_fd, _, _ in stack[1:]:
            os.close(dir_fd)
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


async def container_changes(snap: Snapshotter, rec: ContainerRecord) -> list[dict[str, Any]]:
    import asyncio

    mounts = await snap.mounts(rec.id)
    lowers = _lowers(mounts)
    upper = snap.upper_dir(rec.id)
    return await asyncio.to_thread(compute_changes, Path(upper), lowers)
