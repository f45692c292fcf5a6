"""Bounds on what one layer may write while it is unpacked: its uncompressed size
(`max-layer-size`) and the free space its file system must keep.

A layer blob is small on the wire but may expand without bound (a gzip of gigabytes of zeros is
a few MiB): the limits are counted on the decompressed stream, as it is produced, so such a
layer stops within one chunk of the limit instead of filling the disk. The free-space margin
stops a layer before the data root is completely full, so container records, the events
journal and the image store can still be written while the failed pull cleans up.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

# Uncompressed bytes between two statvfs() of the destination: one syscall per this much data
# is nothing next to writing it, and often enough to stop well inside the margin.
SPACE_CHECK_EVERY = 4 << 20
# The free space a layer must leave: this much, or a twentieth of a small file system.
FREE_SPACE_MARGIN = 64 << 20
NO_SPACE_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT))


class LayerTooLarge(ValueError):
    """The layer's uncompressed stream grew past the limit it was given (max-layer-size)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"layer expands to more than {limit} bytes uncompressed (max-layer-size)")
        self.limit = limit


class LayerNoSpace(OSError):
    """The destination's file system is full, or (`free` set) its free space fell below the
    margin."""

    def __init__(self, free: int | None = None) -> None:
        super().__init__(errno.ENOSPC, "no space left on device")
        self.free = free

    def __str__(self) -> str:
        return "no space left on device"


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes still usable on the file system holding `path` (root's reserved blocks left
    out: they are the system's, not the engine's)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def free_space_margin(path: str | os.PathLike[str]) -> int:
    st = os.statvfs(path)
    return min(FREE_SPACE_MARGIN, st.f_blocks * st.f_frsize // 20)


def guarded(chunks: Iterator[bytes], dest: Path, max_size: int, min_free: int) -> Iterator[bytes]:
    """Pass the uncompressed chunks through, raising LayerTooLarge once their total passes
    `max_size` (0: no limit) and LayerNoSpace once dest's free space is below `min_free` (0: no
    check)."""
    total = 0
    next_check = SPACE_CHECK_EVERY if min_free else -1
    for chunk in chunks:
        total += len(chunk)
        if max_size and total > max_size:
            raise LayerTooLarge(max_size)
        if 0 <= next_check <= total:
            next_check = total + SPACE_CHECK_EVERY
            free = free_bytes(dest)
            if free < min_free:
                raise LayerNoSpace(free)
        yield chunk
