"""One thread at a time in `ast.parse`, to keep CPython 3.11's AST constructor sane.

Python 3.11 (3.11.7 here) keeps the AST constructor's recursion counter in one process-wide
struct (CPython gh-106905, fixed in 3.11.8 and 3.12.2). When two threads build ASTs at once --
pytest formatting a failure (its traceback styles and the `traceback` module both call
`ast.parse`) while a fixture's thread formats a logged exception -- one of them sees the
other's counter and raises "SystemError: AST constructor recursion depth mismatch". pytest
then dies with INTERNALERROR and the failing test's own report is lost. A lock around
`ast.parse` makes the constructor's runs one at a time; it costs nothing measurable.
"""

from __future__ import annotations

import ast
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
            return parse(*args, **kwargs)

    locked_parse._asyncdock_locked = True  # type: ignore[attr-defined]
    ast.parse = locked_parse  # type: ignore[assignment]
