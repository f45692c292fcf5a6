"""One `ast.parse` at a time, with no garbage collection inside it, to keep CPython 3.11's AST
constructor sane.

Python 3.11 (3.11.7 here) keeps the AST constructor's recursion counter in one process-wide
struct (CPython gh-106905, fixed in 3.11.8 and 3.12.2). The constructor is C code that runs no
Python code of its own, but its allocations can start the cyclic garbage collector, whose
finalizers do run Python code: an asyncio Task's `__del__` logging "Task exception was never
retrieved" formats a traceback, and the `traceback` module calls `ast.parse`, nested inside
the first one (or a switch to a thread that parses). The inner run resets the shared counter
and the outer one raises "SystemError: AST constructor recursion depth mismatch". When the
outer one was pytest formatting a failure, pytest died with INTERNALERROR and the failing
test's report was lost. Here `ast.parse` takes a lock and pauses the collector for the time
of the call, so no finalizer runs inside it; it costs nothing measurable.
"""

from __future__ import annotations

import ast
import gc
import sys
import threading
from typing import Any

_lock = threading.RLock()


def install() -> None:
    if sys.version_info >= (3, 12, 2) or (3, 11, 8) <= sys.version_info < (3, 12):
        return
    parse = ast.parse
    if getattr(parse, "_asyncdock_locked", False):
        return

    def locked_parse(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return parse(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    locked_parse._asyncdock_locked = True  # type: ignore[attr-defined]
    ast.parse = locked_parse  # type: ignore[assignment]
