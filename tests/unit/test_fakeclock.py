"""The tests' fake clock (tests/support/fakeclock.py): sleepers wake only when the test advances
time, exactly those whose deadline passed, in deadline order; no real waiting."""
from __future__ import annotations

import asyncio

import pytest

from asyncdock.base.clock import Clock, SystemClock, within
from tests.support.fakeclock import START_MONOTONIC, START_NS, FakeClock


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))  # type: ignore[arg-type]


def test_both_clocks_are_clocks() -> None:
    assert isinstance(FakeClock(), Clock)
    assert isinstance(SystemClock(), Clock)


def test_readings_move_only_with_advance() -> None:
    clock = FakeClock()
    assert clock.monotonic() == START_MONOTONIC and clock.time_ns() == START_NS
    clock.advance(2.5)
    assert clock.monotonic() == START_MONOTONIC + 2.5
    assert clock.time_ns() == START_NS + 2_500_000_000
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_advance_wakes_exactly_the_sleepers_whose_deadline_passed_in_deadline_order() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async def body() -> None:
        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("c", 3), ("a", 1), ("b", 2), ("a2", 1))]
        await clock.wait_sleeping(4)
        assert clock.deadlines() == [1, 1, 2, 3]
        assert clock.advance(0.5) == 0
        assert clock.deadlines() == [0.5, 0.5, 1.5, 2.5]
        assert clock.advance(1.5) == 3  # at 2.0: a, a2 (same deadline: in order of sleeping), b
        await asyncio.gather(*tasks[1:])
        assert woke == ["a", "a2", "b"] and clock.deadlines() == [1.0]
        assert clock.advance(1) == 1
        await tasks[0]
        assert woke == ["a", "a2", "b", "c"] and clock.sleeping == 0
    run(body())


def test_a_sleeper_that_goes_back_to_sleep_takes_its_deadline_from_the_clock_then() -> None:
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(10)
            ticks.append(clock.elapsed)

    async def body() -> None:
        task = asyncio.create_task(ticker())
        for _ in range(3):
            await clock.wait_sleeping()
            clock.advance(10)
        await clock.wait_sleeping()  # asleep again: it has ticked
        assert ticks == [10, 20, 30]
        # one big step wakes it once: it sleeps again from the time the step reached
        clock.advance(35)
        await clock.wait_sleeping()
        assert ticks == [10, 20, 30, 65] and clock.deadlines() == [10]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert clock.sleeping == 0  # a cancelled sleeper is gone
    run(body())


def test_zero_sleep_yields_without_time() -> None:
    clock = FakeClock()

    async def body() -> None:
        await clock.sleep(0)
        await clock.sleep(-1)
        assert clock.sleeping == 0 and clock.elapsed == 0
    run(body())


def test_within_times_out_on_the_given_clock_and_cancels_the_work() -> None:
    clock = FakeClock()
    never: asyncio.Future[None]

    async def body() -> None:
        nonlocal never
        never = asyncio.get_running_loop().create_future()
        waiter = asyncio.create_task(within(clock, 5, never))
        await clock.wait_sleeping()
        assert clock.advance(4.9) == 0 and clock.sleeping == 1
        clock.advance(0.1)
        with pytest.raises(TimeoutError):
            await waiter
        assert never.cancelled()

        async def quick() -> int:
            return 7
        assert await within(clock, 5, quick()) == 7
        assert clock.sleeping == 0  # its timer went with it
        assert await within(clock, None, quick()) == 7
    run(body())
