"""Background work owned by the object that starts it.

asyncio.TaskGroup does not fit long-lived fire-and-forget work: it is a block that the owner
sits in, and one task's failure cancels all the others (a failed health probe must not stop a
container's supervision). A TaskSet is the looser owner: `spawn` starts a task and keeps a
reference to it until it ends (a task nobody references can be garbage-collected mid-flight), a
failure is logged when it happens instead of as "Task exception was never retrieved" whenever
the task is collected, and `close` lets what is left finish for a while, then cancels it and
awaits it, so nothing of the owner still runs once its shutdown returned.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from ..base.clock import Clock, SystemClock, within

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long close() waits for cancelled tasks to end before it gives up on them (logged): a task
# that swallows its cancellation, or is inside an uncancellable step, must not hang a shutdown.
CANCEL_WAIT = 10.0


class TaskSet:
    def __init__(self, owner: str, *, clock: Clock | None = None) -> None:
        self.owner = owner
        self._clock = clock if clock is not None else SystemClock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str,
              failure_level: int = logging.ERROR) -> asyncio.Task[T]:
        """Run `coro` as a task of this set. An exception it ends with is logged at
        `failure_level` (with its traceback at ERROR and above)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, failure_level))
        return task

    def _done(self, task: asyncio.Task[Any], level: int) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.log(level, "%s: %s failed: %s", self.owner, task.get_name(), exc,
                    exc_info=exc if level >= logging.ERROR else None)

    def pending(self) -> list[asyncio.Task[Any]]:
        return [t for t in self._tasks if not t.done()]

    async def wait(self, tasks: Iterable[asyncio.Task[Any]] | None = None,
                   timeout: float | None = None) -> set[asyncio.Task[Any]]:
        """Wait until `tasks` (default: every task of the set now) ended, for at most `timeout`
        seconds on the set's clock (None: as long as they take); returns those still running.
        Their outcome is not raised here (failures are logged as they happen)."""
        waiting = {t for t in (self._tasks if tasks is None else tasks) if not t.done()}
        if not waiting:
            return set()
        if timeout is not None and timeout <= 0:
            return waiting
        try:
            await within(self._clock, timeout, asyncio.wait(waiting))
        except TimeoutError:
            pass
        return {t for t in waiting if not t.done()}

    async def close(self, timeout: float | None = 0.0) -> None:
        """Let the tasks run for up to `timeout` seconds (None: as long as they take), then
        cancel what is left and await it (for at most CANCEL_WAIT seconds: what still runs then
        is logged and left). Tasks spawned meanwhile are cancelled at once."""
        grace = timeout
        while True:
            live = self.pending()
            if not live:
                return
            late = await self.wait(live, grace)
            if late and grace:
                log.warning("%s: still running after %gs, cancelled: %s", self.owner, grace, _names(late))
            for t in late:
                t.cancel()
            stuck = await self.wait(late, CANCEL_WAIT)
            if stuck:
                log.error("%s: did not end %gs after being cancelled: %s", self.owner, CANCEL_WAIT,
                          _names(stuck))
                return
            grace = 0.0


async def uncancellable(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even when the caller is cancelled meanwhile; the cancellation is
    raised once `aw` is done. For a step whose interruption would leave state behind (the
    runtime's delete of an exited container: cut off, its state directory stays)."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise  # `aw` itself was cancelled: nothing left to protect
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def _names(tasks: Iterable[asyncio.Task[Any]]) -> str:
    return ", ".join(sorted(t.get_name() for t in tasks))
