"""Retried clean-ups (asyncdock/leftovers.py): a failure is logged and kept, never raised."""
from __future__ import annotations

import asyncio
import logging

import pytest

from asyncdock.leftovers import FIRST_RETRY, MAX_RETRY, Leftovers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_failing_cleanup_is_logged_kept_and_retried_with_growing_pauses(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    left = Leftovers(clock)
    calls: list[float] = []
    fixed_after = 4

    async def cleanup() -> bool:
        calls.append(clock.now)
        if len(calls) < fixed_after:
            raise RecursionError("maximum recursion depth exceeded")
        return True

    async def body() -> None:
        with caplog.at_level(logging.WARNING, logger="asyncdock.leftovers"):
            assert await left.run("snapshot directories", cleanup) is False
        assert left.pending() == ["snapshot directories"]
        assert "snapshot directories failed (RecursionError" in caplog.text
        await left.retry_due()  # not due yet
        assert len(calls) == 1
        for pause in (FIRST_RETRY, 2 * FIRST_RETRY, 4 * FIRST_RETRY):
            n = len(calls)
            clock.now += pause - 1
            await left.retry_due()
            assert len(calls) == n  # nothing before its time
            clock.now += 1
            await left.retry_due()
            assert len(calls) == n + 1
        assert len(calls) == fixed_after and len(left) == 0
    asyncio.run(body())


def test_pause_is_capped_and_false_means_not_done() -> None:
    clock = Clock()
    left = Leftovers(clock)
    runs = 0

    async def cleanup() -> bool:
        nonlocal runs
        runs += 1
        return False

    async def body() -> None:
        await left.run("x", cleanup)
        for _ in range(12):
            clock.now += MAX_RETRY
            await left.retry_due()
        assert runs == 13 and left.pending() == ["x"]
        # done at once: nothing kept
        async def ok() -> bool:
            return True
        assert await left.run("x", ok) is True and len(left) == 0
    asyncio.run(body())
