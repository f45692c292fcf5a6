"""The engine's sense of time, injectable.

Restart back-off, health probes and the housekeeping loop wait on a period and stamp records
with the time. Through a Clock instead of `asyncio.sleep`/`time.time_ns` directly, a test can
hand them a fake one (tests/support/fakeclock.py) that moves only when the test advances it, so
a 60 s back-off or a 30 s health interval is checked without waiting for it.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations)."""

    def time_ns(self) -> int:
        """Wall-clock time in nanoseconds since the epoch (for timestamps)."""

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""


class SystemClock:
    """The real time: time.monotonic, time.time_ns and the event loop's sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def within(clock: Clock, seconds: float | None, aw: Awaitable[T]) -> T:
    """`aw`'s result, or TimeoutError once `seconds` passed on `clock` (None: no limit); on
    time-out `aw` is cancelled and awaited before the error is raised, as asyncio.timeout does."""
    if seconds is None:
        return await aw
    work = asyncio.ensure_future(aw)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not work.done():
            work.cancel()
            try:
                await work
            except asyncio.CancelledError:
                pass
    if work.cancelled() and timer.done() and not timer.cancelled():
        raise TimeoutError
    return work.result()
