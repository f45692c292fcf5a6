"""A Clock (asyncdock/clock.py) whose time moves only when the test says so.

`sleep(s)` waits until the test's `advance` has moved the clock past the sleeper's deadline;
nothing waits in real time. `advance` is synchronous and deterministic: it wakes, in deadline
order (then in the order they went to sleep), exactly the sleepers whose deadline has passed;
the woken tasks run at the loop's next turns. A test that must know a task is asleep before
it advances (or the task would take its deadline from the advanced time) awaits
`wait_sleeping(n)`, which returns once `n` sleepers wait.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]

# Start values: a plausible wall time (2023-11-14T22:13:20Z) and a monotonic reading that is
# not 0, so code that treats 0 as "never" is not fooled.
START_NS = 1_700_000_000 * 1_000_000_000
START_MONOTONIC = 1000.0


class FakeClock:
    def __init__(self, *, start_ns: int = START_NS, start_monotonic: float = START_MONOTONIC) -> None:
        self._start_ns = start_ns
        self._start_monotonic = start_monotonic
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []

    # -- the Clock protocol -----------------------------------------------------------------

    def monotonic(self) -> float:
        return self._start_monotonic + self._elapsed

    def time_ns(self) -> int:
        return self._start_ns + round(self._elapsed * 1e9)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # as asyncio.sleep(0): one turn of the loop, no time
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._seq), fut))
        self._notify()
        await fut  # a cancelled sleeper's future is cancelled with it and skipped later

    # -- the test's side --------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds advanced since the clock was made."""
        return self._elapsed

    def deadlines(self) -> list[float]:
        """How long each waiting sleeper has left, soonest first."""
        return sorted(d - self._elapsed for d, _, f in self._sleepers if not f.done())

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> int:
        """Move the clock on by `seconds` and wake the sleepers whose deadline has passed;
        returns how many were woken."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._elapsed += seconds
        woken = 0
        while self._sleepers and self._sleepers[0][0] <= self._elapsed + 1e-12:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
                woken += 1
        return woken

    async def wait_sleeping(self, count: int = 1) -> None:
        """Return once at least `count` sleepers wait on this clock."""
        if self.sleeping >= count:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append((count, fut))
        await fut

    def _notify(self) -> None:
        n = self.sleeping
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for count, fut in self._watchers:
            if fut.done():
                continue
            if n >= count:
                fut.set_result(None)
            else:
                keep.append((count, fut))
        self._watchers = keep
