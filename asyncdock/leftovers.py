"""Clean-ups of what earlier runs (or failed removals) left behind, retried until they succeed.

A clean-up that fails -- a tree it cannot remove, a file system error, a bug -- must never stop
the daemon: the leftover costs disk, a daemon that does not start costs every container. So
each clean-up runs through `Leftovers.run`, which logs a failure in one line (the traceback at
debug level) and keeps the clean-up for the engine's housekeeping to try again, with a growing
pause, for as long as the daemon runs; whatever is still there at the next start is tried
again then.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# A clean-up answers True when nothing is left, False when something is (already logged by it,
# or worth a retry anyway); raising counts as False.
Cleanup = Callable[[], Awaitable[bool]]


class CleanupQueue(Protocol):
    """How a subsystem hands its clean-ups to the daemon's Leftovers (run now, retried later)."""

    async def run(self, what: str, cleanup: Cleanup) -> bool: ...


FIRST_RETRY = 30.0
MAX_RETRY = 600.0


@dataclass
class _Pending:
    cleanup: Cleanup
    failures: int
    due: float


class Leftovers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def pending(self) -> list[str]:
        return sorted(self._pending)

    async def run(self, what: str, cleanup: Cleanup) -> bool:
        """Run `cleanup` now; True if it finished. On failure it is kept for retry_due()
        (one entry per `what`: a newer cleanup replaces an older one of the same name)."""
        ok = await self._attempt(what, cleanup, failures=0)
        if ok:
            self._pending.pop(what, None)
        return ok

    async def retry_due(self) -> None:
        """Try again every kept clean-up whose pause is over."""
        now = self._clock()
        for what, p in list(self._pending.items()):
            if p.due > now or self._pending.get(what) is not p:
                continue
            if await self._attempt(what, p.cleanup, failures=p.failures):
                if self._pending.get(what) is p:
                    del self._pending[what]
                log.info("cleaned up %s after %d failed attempt(s)", what, p.failures)

    async def _attempt(self, what: str, cleanup: Cleanup, *, failures: int) -> bool:
        try:
            ok = bool(await cleanup())
            error = "" if ok else "something is left"
        except Exception as e:  # noqa: BLE001 - any failure is logged and retried, never raised
            ok = False
            error = f"{type(e).__name__}: {e}"
            log.debug("cleaning up %s", what, exc_info=True)
        if ok:
            return True
        failures += 1
        pause = min(FIRST_RETRY * 2 ** (failures - 1), MAX_RETRY)
        self._pending[what] = _Pending(cleanup, failures, self._clock() + pause)
        log.warning("cleaning up %s failed (%s); trying again in %.0f s", what, error, pause)
        return False
