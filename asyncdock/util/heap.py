"""Giving freed memory back to the system after a burst of large buffers.

Output moves in pieces of up to 256 KiB. glibc serves the first from mmap, but freeing one raises
its mmap threshold, so the rest come from the heap, and a heap with a few live objects left
between freed runs keeps its pages: the daemon stayed 15 MiB larger after a few hundred MB of
output. malloc_trim(0) returns every free page of every arena."""
from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    # Looked up at the first trim, not at import: this module sits on the start path.
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own libc, as the rest of the engine opens it
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to do
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def trim() -> None:
    """Return free heap pages to the system (a few ms on a large heap: call it after bulk work,
    not per request)."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)
