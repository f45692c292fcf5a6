"""The task owner of background work (asyncdock/util/tasks.py): failures logged as they happen,
close() lets work finish for its grace (on the set's clock), then cancels and awaits the rest;
uncancellable() finishes a step its caller's cancellation would cut off."""
from __future__ import annotations

import asyncio
import logging

import pytest

from asyncdock.util.tasks import TaskSet, uncancellable
from tests.support.fakeclock import FakeClock


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))  # type: ignore[arg-type]


def test_a_failure_is_logged_at_once_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    async def boom() -> None:
        raise RuntimeError("broken pipe")

    async def quiet() -> None:
        raise KeyError("expected")

    async def body() -> None:
        tasks = TaskSet("the owner")
        with caplog.at_level(logging.DEBUG, logger="asyncdock.util.tasks"):
            t = tasks.spawn(boom(), name="job 1")
            q = tasks.spawn(quiet(), name="job 2", failure_level=logging.DEBUG)
            await asyncio.wait({t, q})
        assert len(tasks) == 0  # forgotten once done
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert [r.getMessage() for r in errors] == ["the owner: job 1 failed: broken pipe"]
        assert errors[0].exc_info is not None
        debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
        assert [r.getMessage() for r in debug] == ["the owner: job 2 failed: 'expected'"]
        assert debug[0].exc_info is None
    run(body())


def test_close_lets_work_finish_within_its_grace() -> None:
    clock = FakeClock()

    async def body() -> None:
        go = asyncio.Event()
        finished: list[str] = []

        async def work() -> None:
            await go.wait()
            finished.append("work")

        tasks = TaskSet("owner", clock=clock)
        t = tasks.spawn(work(), name="work")
        closing = asyncio.create_task(tasks.close(timeout=30))
        await clock.wait_sleeping()  # the grace's timer runs
        assert not closing.done()
        go.set()
        await closing
        assert finished == ["work"] and not t.cancelled() and clock.sleeping == 0
    run(body())


def test_close_cancels_what_outlives_its_grace_and_awaits_it(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()

    async def body() -> None:
        cleaned: list[str] = []

        async def stubborn() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                await asyncio.sleep(0)  # clean-up that takes a loop turn: awaited by close
                cleaned.append("stubborn")

        async def spawner() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                tasks.spawn(stubborn(), name="late one")  # spawned while being cancelled

        tasks = TaskSet("owner", clock=clock)
        a = tasks.spawn(stubborn(), name="forever")
        tasks.spawn(spawner(), name="spawner")
        closing = asyncio.create_task(tasks.close(timeout=30))
        await clock.wait_sleeping()
        clock.advance(29)
        assert not closing.done() and not a.done()
        with caplog.at_level(logging.WARNING, logger="asyncdock.util.tasks"):
            clock.advance(1)
            await closing
        assert a.cancelled() and len(tasks) == 0
        assert cleaned == ["stubborn", "stubborn"]  # the late one too, cancelled and awaited
        assert "owner: still running after 30s, cancelled: forever, spawner" in caplog.text
    run(body())


def test_close_without_grace_cancels_at_once() -> None:
    async def body() -> None:
        tasks = TaskSet("owner")
        t = tasks.spawn(asyncio.Event().wait(), name="waiter")
        await tasks.close()
        assert t.cancelled()
    run(body())


def test_wait_returns_what_is_still_running() -> None:
    clock = FakeClock()

    async def body() -> None:
        go = asyncio.Event()
        tasks = TaskSet("owner", clock=clock)
        slow = tasks.spawn(go.wait(), name="slow")
        quick = tasks.spawn(asyncio.sleep(0), name="quick")
        waiting = asyncio.create_task(tasks.wait(timeout=5))
        await clock.wait_sleeping()
        assert quick.done()
        clock.advance(5)
        assert await waiting == {slow}
        assert await tasks.wait([quick], timeout=0) == set()
        go.set()
        assert await tasks.wait() == set()
    run(body())


def test_uncancellable_finishes_the_step_then_raises_the_cancellation() -> None:
    async def body() -> None:
        go, entered = asyncio.Event(), asyncio.Event()
        steps: list[str] = []

        async def delete() -> str:
            entered.set()
            await go.wait()
            steps.append("deleted")
            return "ok"

        async def cleanup() -> None:
            await uncancellable(delete())
            steps.append("after")  # never: the cancellation comes out once the delete is done

        t = asyncio.create_task(cleanup())
        await entered.wait()
        for _ in range(2):  # twice: still not cut off
            t.cancel()
            await asyncio.sleep(0)  # a loop turn: the cancellation reaches it
        assert not t.done() and steps == []
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert steps == ["deleted"]

        async def plain() -> str:
            return "value"
        assert await uncancellable(plain()) == "value"
    run(body())


def test_close_without_limit_waits_for_the_work_then_cancels_what_it_spawned() -> None:
    clock = FakeClock()

    async def body() -> None:
        go, entered = asyncio.Event(), asyncio.Event()
        done: list[str] = []

        async def delete() -> None:
            entered.set()
            await go.wait()
            done.append("deleted")
            tasks.spawn(asyncio.Event().wait(), name="spawned at the end")

        tasks = TaskSet("owner", clock=clock)
        tasks.spawn(delete(), name="delete")
        closing = asyncio.create_task(tasks.close(timeout=None))
        await entered.wait()  # the delete runs, and close waits for it
        clock.advance(3600)  # no timer: time does not end the wait
        assert not closing.done()
        go.set()
        await closing
        assert done == ["deleted"] and len(tasks) == 0 and clock.sleeping == 0
    run(body())
