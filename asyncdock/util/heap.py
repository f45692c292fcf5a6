"""Giving freed memory back to the system after a burst of large buffers.

Output moves in pieces of up to 256 KiB. glibc serves the first from mmap, but freeing one raises
its mmap threshold, so the rest come from the heap, and a heap with a few live objects left
between freed runs keeps its pages: the daemon stayed 15 MiB larger after a few hundred MB of
output. malloc_trim(0) returns every free page of every arena."""
from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to do
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def trim() -> None:
    """Return free heap pages to the system (a few ms on a large heap: call it after bulk work,
    not per request)."""
    if _TRIM is not None:
        _TRIM(0)
