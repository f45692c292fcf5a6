"""The health monitor's schedule (containers/health.py) on a fake clock: a probe every Interval,
killed after Timeout, Retries failures in a row for unhealthy, failures inside StartPeriod not
counted while starting, a probe every StartInterval while starting inside StartPeriod, Docker's
defaults for what is unset. The probes are real processes
(the runtime's exec is run on the host, see HostExecRuntime), their timing is the clock's."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from asyncdock.containers.health import (DEFAULT_INTERVAL, DEFAULT_RETRIES, DEFAULT_START_INTERVAL, DEFAULT_TIMEOUT,
                                         HEALTHY, STARTING, UNHEALTHY)
from asyncdock.containers.manager import ContainerManager
from asyncdock.containers.models import ContainerRecord, Health, HealthConfig, HealthLogEntry
from asyncdock.base.timefmt import rfc3339nano
from tests.support.fakeclock import FakeClock
from tests.support.fakeengine import container_manager, create
from tests.support.fakeruntime import FakeRuntime

S = 1_000_000_000  # HealthConfig's durations are nanoseconds


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


class HostExecRuntime(FakeRuntime):
    """The fake runtime with an exec: the process runs on the host (a fake container has no
    namespaces to join) and writes its pid file as the runtime's exec does."""

    def exec_argv(self, container_id: str, process_json: Path, *, pid_file: Path,
                  detach: bool = False, console_socket: Path | None = None) -> Sequence[str]:
        args = json.loads(Path(process_json).read_text())["args"]
        return ["/bin/sh", "-c", 'echo $$ > "$0"; exec "$@"', str(pid_file), *args]


class Probes:
    """The probe results as the manager saves them: what the tests wait on."""

    def __init__(self, mgr: ContainerManager) -> None:
        self.results: list[HealthLogEntry] = []
        self.health: list[Health] = []
        self._saved = asyncio.Event()
        save = mgr.save_state

        def saving(rec: ContainerRecord) -> None:
            save(rec)
            h = rec.state.health
            if h is not None and h.log and (not self.results or h.log[-1] is not self.results[-1]):
                self.results.append(h.log[-1])
                self.health.append(Health(status=h.status, failing_streak=h.failing_streak))
                self._saved.set()

        mgr.save_state = saving  # type: ignore[method-assign]

    async def wait(self, count: int) -> Health:
        """The health once `count` probes are recorded."""
        while len(self.results) < count:
            self._saved.clear()
            await self._saved.wait()
        return self.health[count - 1]


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.rt = HostExecRuntime()
        self.mgr = container_manager(tmp_path, self.rt, self.clock)
        self.probes = Probes(self.mgr)
        self.code = tmp_path / "probe-exit-code"  # what the next probe exits with ("hang": runs on)
        self.code.write_text("0")
        # a hanging probe says here that it runs (its pid file is written by then)
        self.running = tmp_path / "probe-running"
        os.mkfifo(self.running)
        self.events: list[str] = []
        self._sub = self.mgr.bus.subscribe(lambda m: getattr(m, "action", "").startswith("health_status"))

    async def start(self, **check: int) -> ContainerRecord:
        script = (f'read c < {self.code}; '
                  f'[ "$c" = hang ] && {{ echo > {self.running}; exec sleep 60; }}; exit "$c"')
        rec = await create(self.mgr, stop_timeout=0, healthcheck=HealthConfig(test=["CMD-SHELL", script], **check))
        await self.mgr.start(rec)
        assert rec.state.health is not None and rec.state.health.status == STARTING
        return rec

    async def probe(self, after: float, code: str) -> Health:
        """Let `after` seconds pass (the monitor's interval must be up then, not before) with
        the next probe exiting `code`; the health once it is recorded."""
        self.code.write_text(code)
        n = len(self.probes.results)
        await self.clock.wait_sleeping()
        assert self.clock.deadlines() == pytest.approx([after])
        assert self.clock.advance(after - 0.001) == 0
        assert self.clock.advance(0.001) == 1
        return await self.probes.wait(n + 1)

    async def hanging_probe_runs(self) -> None:
        await asyncio.to_thread(self.running.read_text)

    def status_events(self) -> list[str]:
        while (env := self._sub.get_nowait()) is not None:
            self.events.append(env.message.action)
        return self.events

    async def close(self) -> None:
        try:
            # a reader still waiting for a probe that never came: let it go
            os.close(os.open(self.running, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass  # nobody reads it
        await self.mgr.shutdown()


def test_every_interval_a_probe_and_retries_failures_make_unhealthy(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            await s.start(interval=5 * S, timeout=3 * S, retries=2)
            h = await s.probe(5, "0")
            assert h.status == HEALTHY and h.failing_streak == 0
            entry = s.probes.results[-1]
            assert entry.exit_code == 0 and entry.start == rfc3339nano(s.clock.time_ns())
            h = await s.probe(5, "1")
            assert h.status == HEALTHY and h.failing_streak == 1  # one failure of two allowed
            h = await s.probe(5, "1")
            assert h.status == UNHEALTHY and h.failing_streak == 2
            h = await s.probe(5, "1")
            assert h.status == UNHEALTHY and h.failing_streak == 3
            h = await s.probe(5, "0")
            assert h.status == HEALTHY and h.failing_streak == 0
            assert s.status_events() == ["health_status: healthy", "health_status: unhealthy",
                                         "health_status: healthy"]  # on changes only
            assert s.clock.elapsed == pytest.approx(25)
        finally:
            await s.close()
    run(body())


def test_a_probe_past_its_timeout_is_killed_and_fails(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            rec = await s.start(interval=10 * S, timeout=4 * S, retries=1)
            s.code.write_text("hang")
            await s.clock.wait_sleeping()
            s.clock.advance(10)
            await s.hanging_probe_runs()
            await s.clock.wait_sleeping()  # under its timeout's timer
            assert s.clock.deadlines() == [4]
            assert s.clock.advance(3.999) == 0
            assert s.probes.results == []
            s.clock.advance(0.001)
            h = await s.probes.wait(1)
            assert h.status == UNHEALTHY and h.failing_streak == 1
            entry = s.probes.results[0]
            assert entry.exit_code == -1 and entry.output == "Health check exceeded timeout (4s)"
            assert list((s.mgr.bundles / rec.id).glob(".health-*")) == []  # its files went with it
            # the schedule goes on from the time the probe ended
            h = await s.probe(10, "0")
            assert h.status == HEALTHY
        finally:
            await s.close()
    run(body())


def test_failures_in_the_start_period_do_not_count_while_starting(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            await s.start(interval=10 * S, start_period=25 * S, start_interval=10 * S, retries=1)
            for _ in range(2):  # at 10 s and 20 s: inside the start period
                h = await s.probe(10, "1")
                assert h.status == STARTING and h.failing_streak == 0
            h = await s.probe(5, "1")  # at 25 s, when the period ends: past it, counted
            assert h.status == UNHEALTHY and h.failing_streak == 1
        finally:
            await s.close()
    run(body())


def test_once_healthy_a_failure_counts_even_inside_the_start_period(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            await s.start(interval=10 * S, start_period=60 * S, start_interval=2 * S, retries=1)
            h = await s.probe(2, "0")
            assert h.status == HEALTHY
            h = await s.probe(10, "1")  # at 12 s, still inside the start period
            assert h.status == UNHEALTHY and h.failing_streak == 1
        finally:
            await s.close()
    run(body())


def test_unset_interval_timeout_and_retries_take_dockers_defaults(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            rec = await s.start()
            mon = s.mgr.live(rec).health
            assert (mon.interval, mon.timeout, mon.retries) == (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_RETRIES)
            for streak in range(1, DEFAULT_RETRIES + 1):
                h = await s.probe(DEFAULT_INTERVAL, "1")
                assert h.failing_streak == streak
                assert h.status == (UNHEALTHY if streak == DEFAULT_RETRIES else STARTING)
        finally:
            await s.close()
    run(body())


def test_while_starting_inside_the_start_period_probes_come_every_start_interval(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            await s.start(interval=30 * S, start_period=10 * S, start_interval=3 * S, retries=1)
            for _ in range(2):  # at 3 s and 6 s: StartInterval, not Interval
                h = await s.probe(3, "1")
                assert h.status == STARTING and h.failing_streak == 0
            h = await s.probe(3, "0")  # at 9 s: healthy, so the regular Interval from now on
            assert h.status == HEALTHY
            h = await s.probe(30, "0")
            assert h.status == HEALTHY and s.clock.elapsed == pytest.approx(39)
        finally:
            await s.close()
    run(body())


def test_the_start_interval_stops_at_the_end_of_the_start_period(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            await s.start(interval=20 * S, start_period=5 * S, start_interval=3 * S, retries=1)
            h = await s.probe(3, "1")  # at 3 s: inside the period
            assert h.status == STARTING and h.failing_streak == 0
            h = await s.probe(2, "1")  # at 5 s, the period's end (not 6 s): counted
            assert h.status == UNHEALTHY and h.failing_streak == 1
            h = await s.probe(20, "1")  # past the period: Interval, even while not healthy
            assert h.failing_streak == 2
        finally:
            await s.close()
    run(body())


def test_an_unset_start_interval_is_five_seconds_and_needs_a_start_period(tmp_path: Path) -> None:
    async def body() -> None:
        s = Setup(tmp_path)
        try:
            rec = await s.start(interval=30 * S, start_period=60 * S)
            assert s.mgr.live(rec).health.start_interval == DEFAULT_START_INTERVAL == 5
            h = await s.probe(5, "1")
            assert h.status == STARTING
        finally:
            await s.close()
        s = Setup(tmp_path / "no-period")
        try:
            await s.start(interval=30 * S, start_interval=1 * S)  # no StartPeriod: no effect
            h = await s.probe(30, "0")
            assert h.status == HEALTHY
        finally:
            await s.close()
    run(body())
