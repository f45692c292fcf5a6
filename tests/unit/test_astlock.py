"""tests/support/astlock.py: concurrent `ast.parse` calls no longer trip CPython 3.11's shared
AST recursion counter (the SystemError that crashed pytest while it formatted a failure)."""

from __future__ import annotations

import ast
import gc
import sys
import threading
from pathlib import Path

from tests.support import astlock

SOURCE = (Path(__file__).resolve().parents[2] / "asyncdock" / "containers" / "manager.py").read_text()


class _Finalised:
    """Runs Python code from the garbage collector, in the middle of a parse: there the
    interpreter switches threads inside the AST constructor, and there a finalizer that formats
    a traceback (asyncio's "Task exception was never retrieved") parses inside the parse."""

    def __del__(self) -> None:
        sum(range(200))
        ast.parse("x = [1, (2, 3)]")


def _parse_in_threads(threads: int = 3, rounds: int = 80) -> list[BaseException]:
    errors: list[BaseException] = []

    def churn() -> None:
        for _ in range(rounds):
            garbage = [_Finalised() for _ in range(50)]
            for g in garbage:
                g.cycle = g  # type: ignore[attr-defined]
            try:
                ast.parse(SOURCE)
            except SystemError as e:
                errors.append(e)
                return

    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50)
    try:
        workers = [threading.Thread(target=churn) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
    return errors


def test_concurrent_parses_raise_no_system_error() -> None:
    astlock.install()  # conftest installed it already; installing twice is harmless
    assert getattr(ast.parse, "_asyncdock_locked", False) or sys.version_info >= (3, 11, 8)
    assert _parse_in_threads() == []
