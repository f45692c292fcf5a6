"""Restart policies' back-off (containers/backoff.py, ContainerManager._schedule_restart):
100 ms, doubling with each restart up to a minute, back to 100 ms after a run of 10 s; a
user's start resets it; on-failure stops after its maximum. Driven by a fake clock on the
fake runtime: the minute-long pauses take no time."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncdock.containers.backoff import RESET_AFTER, RESTART_BASE, RESTART_MAX, next_delay
from asyncdock.containers.manager import ContainerManager
from asyncdock.containers.models import ContainerRecord, HostConfig, RestartPolicy
from asyncdock.events.bus import Subscription
from tests.support.fakeclock import FakeClock
from tests.support.fakeengine import container_manager, create
from tests.support.fakeruntime import Behaviour, FakeRuntime

# 0.1, 0.2, 0.4, ... 51.2, then the cap
DOUBLING = [0.1 * 2 ** i for i in range(10)]


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def test_the_delay_rule() -> None:
    delays: list[float] = []
    d = None
    for _ in range(13):
        d = next_delay(d, 0.0)
        delays.append(d)
    assert delays == pytest.approx(DOUBLING + [RESTART_MAX] * 3)
    assert next_delay(RESTART_MAX, RESET_AFTER) == RESTART_BASE  # a run of 10 s resets it
    assert next_delay(0.4, RESET_AFTER - 0.001) == pytest.approx(0.8)


class Crashy:
    """The fake container's behaviour per start: exit 1 at once, or run until the test ends it."""

    def __init__(self) -> None:
        self.crash = True

    def __call__(self, cid: str, spec: dict[str, object]) -> Behaviour:
        return Behaviour(exit_code=1) if self.crash else Behaviour()


async def until_action(sub: Subscription, action: str) -> None:
    while (await sub.get()).message.action != action:
        pass


async def scenario(tmp_path: Path, policy: RestartPolicy,
                   body: Callable[[ContainerManager, ContainerRecord, FakeRuntime, FakeClock, Crashy, Subscription],
                                  Any]) -> None:
    clock = FakeClock()
    crashy = Crashy()
    rt = FakeRuntime(behaviour=crashy)
    mgr = container_manager(tmp_path, rt, clock)
    sub = mgr.bus.subscribe()
    rec = await create(mgr, stop_timeout=0, host_config=HostConfig(restart_policy=policy))
    try:
        await body(mgr, rec, rt, clock, crashy, sub)
    finally:
        await mgr.shutdown()
    assert await rt.list() == []  # nothing left in the runtime after the shutdown


async def next_restart(clock: FakeClock, sub: Subscription) -> float:
    """Wait for the restart timer to sleep; check nothing restarts before its deadline, then let it
    restart. Returns the delay it slept."""
    await clock.wait_sleeping()
    [delay] = clock.deadlines()
    assert clock.advance(delay * 0.99) == 0  # not yet
    assert clock.advance(delay * 0.01) == 1
    await until_action(sub, "restart")
    return delay


def test_a_crash_loop_backs_off_doubling_up_to_a_minute(tmp_path: Path) -> None:
    async def body(mgr: ContainerManager, rec: ContainerRecord, rt: FakeRuntime, clock: FakeClock,
                   crashy: Crashy, sub: Subscription) -> None:
        await mgr.start(rec)
        delays = [await next_restart(clock, sub) for _ in range(13)]
        assert delays == pytest.approx(DOUBLING + [RESTART_MAX] * 3)
        assert rec.restart_count == 13
        await clock.wait_sleeping()  # crashed again: restarting, not running
        assert rec.state.restarting and rec.state.status == "restarting" and not rec.state.running
    run(scenario(tmp_path, RestartPolicy("always", 0), body))


def test_a_run_of_ten_seconds_resets_the_back_off(tmp_path: Path) -> None:
    async def body(mgr: ContainerManager, rec: ContainerRecord, rt: FakeRuntime, clock: FakeClock,
                   crashy: Crashy, sub: Subscription) -> None:
        await mgr.start(rec)
        assert [await next_restart(clock, sub) for _ in range(4)] == pytest.approx(DOUBLING[:4])
        # the fourth restart runs; it crashes after a bit less than 10 s: no reset
        crashy.crash = False
        await clock.wait_sleeping()
        await next_restart(clock, sub)  # 1.6 s, this one runs
        clock.advance(RESET_AFTER - 0.5)
        rt.exit(rec.id, 1)
        await clock.wait_sleeping()
        assert clock.deadlines() == pytest.approx([DOUBLING[5]])
        await next_restart(clock, sub)
        # this run lasts 10 s on the clock: the next pause is the first one again
        clock.advance(RESET_AFTER)
        rt.exit(rec.id, 1)
        await clock.wait_sleeping()
        assert clock.deadlines() == pytest.approx([RESTART_BASE])
    run(scenario(tmp_path, RestartPolicy("always", 0), body))


def test_a_users_start_resets_the_back_off(tmp_path: Path) -> None:
    async def body(mgr: ContainerManager, rec: ContainerRecord, rt: FakeRuntime, clock: FakeClock,
                   crashy: Crashy, sub: Subscription) -> None:
        await mgr.start(rec)
        assert [await next_restart(clock, sub) for _ in range(3)] == pytest.approx(DOUBLING[:3])
        await clock.wait_sleeping()
        await mgr.stop(rec, 0)  # while it waits to restart
        assert clock.sleeping == 0 and rec.state.status == "exited"
        await mgr.start(rec)
        await clock.wait_sleeping()
        assert clock.deadlines() == pytest.approx([RESTART_BASE]) and rec.restart_count == 0
    run(scenario(tmp_path, RestartPolicy("always", 0), body))


def test_on_failure_stops_after_its_maximum(tmp_path: Path) -> None:
    async def body(mgr: ContainerManager, rec: ContainerRecord, rt: FakeRuntime, clock: FakeClock,
                   crashy: Crashy, sub: Subscription) -> None:
        await mgr.start(rec)
        assert [await next_restart(clock, sub) for _ in range(3)] == pytest.approx(DOUBLING[:3])
        await until_action(sub, "die")  # the third restart's run
        assert clock.sleeping == 0  # no fourth
        assert rec.state.status == "exited" and rec.state.exit_code == 1 and rec.restart_count == 3
    run(scenario(tmp_path, RestartPolicy("on-failure", 3), body))
