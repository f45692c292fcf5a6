"""Restart policies end to end on the fake runtime and clock: which exits restart the container
(always, unless-stopped, on-failure with its maximum, no), what a manual stop, kill, restart or
removal does to them, pending or not. The back-off's schedule itself is test_restart_backoff.py's;
here the clock is advanced past each pause, and a cancelled restart shows as a clock with nobody
asleep and a runtime never asked to create again."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from asyncdock.base import errors
from asyncdock.containers.backoff import RESTART_BASE, RESTART_MAX
from asyncdock.containers.models import ContainerRecord, HostConfig, RestartPolicy
from tests.support.fakeengine import FakeEngine, fake_engine, in_turn, inspect_state
from tests.support.fakeruntime import Behaviour, BehaviourFn

RUNS = Behaviour(on_signal={signal.SIGTERM: 0})  # runs until stopped, exits 0 on SIGTERM
CRASHES = Behaviour(exit_code=1)


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def policy(name: str, retries: int = 0) -> HostConfig:
    return HostConfig(restart_policy=RestartPolicy(name, retries))


async def restarted(e: FakeEngine) -> float:
    """Once the restart is scheduled: the state it shows while it waits, then the clock moved
    past the pause and the restart done. Returns the pause."""
    await e.clock.wait_sleeping()
    [pause] = e.clock.deadlines()
    assert e.clock.advance(pause) == 1
    await e.until("restart")
    return pause


def creates(e: FakeEngine) -> int:
    return sum(1 for call, _ in e.rt.calls if call == "create")


def no_restart_comes(e: FakeEngine, rec: ContainerRecord) -> None:
    """No restart is pending (the policy's decision is taken, synchronously, at the exit): not
    restarting, nobody asleep, and past the longest pause nobody wakes."""
    assert not rec.state.restarting and e.clock.sleeping == 0
    assert e.clock.advance(RESTART_MAX + 1) == 0


def scenario(tmp_path: Path, behaviour: BehaviourFn, body: object) -> None:
    async def main() -> None:
        async with fake_engine(tmp_path, behaviour) as e:
            await body(e)  # type: ignore[operator]
    run(main())


def test_always_restarts_after_a_success_and_after_a_failure(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        await e.until("die")
        await e.clock.wait_sleeping()
        # While it waits: restarting, and inspect's Running stays true (Docker's SetRestarting)
        state = inspect_state(rec)
        assert (state["Status"], state["Running"], state["Restarting"], state["ExitCode"]) == \
            ("restarting", True, True, 0)
        assert await restarted(e) == pytest.approx(RESTART_BASE)
        assert rec.restart_count == 1
        await e.until("die")
        assert await restarted(e) == pytest.approx(2 * RESTART_BASE)
        assert rec.restart_count == 2 and rec.state.running and not rec.state.restarting
        assert e.took() == [("create", {}), ("start", {}), ("die", {"exitCode": "0"}),
                            ("start", {}), ("restart", {}), ("die", {"exitCode": "1"}),
                            ("start", {}), ("restart", {})]
        assert e.statuses(rec) == ["created", "running", "exited", "restarting", "running", "exited",
                                   "restarting", "running"]
        assert creates(e) == 3
        await e.mgr.stop(rec, None)  # a manual stop: no restart after it
        assert (rec.state.status, rec.state.exit_code, rec.state.restarting) == ("exited", 0, False)
        no_restart_comes(e, rec)
    scenario(tmp_path, in_turn(Behaviour(exit_code=0), CRASHES, RUNS), body)


def test_on_failure_gives_up_after_its_maximum(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("on-failure", 2))
        await e.mgr.start(rec)
        for _ in range(2):
            await e.until("die")
            await restarted(e)
        await e.until("die")  # the second retry's crash: the last
        state = inspect_state(rec)
        assert (state["Status"], state["Running"], state["Restarting"], state["ExitCode"]) == \
            ("exited", False, False, 1)
        assert rec.restart_count == 2
        assert [a for a, _ in e.took()] == ["create", "start", "die", "start", "restart", "die", "start",
                                            "restart", "die"]
        no_restart_comes(e, rec)
        assert creates(e) == 3
    scenario(tmp_path, lambda cid, spec: CRASHES, body)


@pytest.mark.parametrize(("name", "code"), [("no", 1), ("on-failure", 0)])
def test_exits_that_do_not_restart(tmp_path: Path, name: str, code: int) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy(name))
        await e.mgr.start(rec)
        assert await e.mgr.wait(rec, "not-running") == code
        assert (rec.state.status, rec.state.restarting, rec.restart_count) == ("exited", False, 0)
        no_restart_comes(e, rec)
        assert [a for a, _ in e.took()] == ["create", "start", "die"]
    scenario(tmp_path, lambda cid, spec: Behaviour(exit_code=code), body)


def test_unless_stopped_restarts_a_crash_but_not_after_a_manual_stop(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("unless-stopped"))
        await e.mgr.start(rec)
        await e.until("die")
        await restarted(e)
        assert rec.state.running and rec.restart_count == 1
        await e.mgr.stop(rec, None)
        assert (rec.state.status, rec.state.restarting, rec.manually_stopped) == ("exited", False, True)
        no_restart_comes(e, rec)
        assert creates(e) == 2
    scenario(tmp_path, in_turn(CRASHES, RUNS), body)


def test_a_manual_stop_during_the_back_off_cancels_the_restart(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        await e.until("die")
        await e.clock.wait_sleeping()
        e.took()
        await e.mgr.stop(rec, None)
        state = inspect_state(rec)
        assert (state["Status"], state["Running"], state["Restarting"], state["ExitCode"]) == \
            ("exited", False, False, 1)
        assert rec.manually_stopped and e.took() == [("stop", {})]
        no_restart_comes(e, rec)
        assert creates(e) == 1 and rec.restart_count == 0
    scenario(tmp_path, lambda cid, spec: CRASHES, body)


def test_remove_while_a_restart_is_pending(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        await e.until("die")
        await e.clock.wait_sleeping()
        e.took()
        with pytest.raises(errors.Conflict) as err:
            await e.mgr.remove(rec)
        assert str(err.value) == (f"You cannot remove a restarting container {rec.id}. "
                                  "Stop the container before attempting removal or force remove")
        assert rec.state.restarting and e.clock.sleeping == 1  # still pending
        await e.mgr.remove(rec, force=True)
        assert e.took() == [("destroy", {})] and e.mgr.store.find(rec.id) is None
        no_restart_comes(e, rec)
        assert creates(e) == 1
        await e.mgr.reclaimed()
        assert await e.rt.list() == []
    scenario(tmp_path, lambda cid, spec: CRASHES, body)


def test_a_kill_is_a_manual_stop_only_with_sigkill_or_the_stop_signal(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        await e.mgr.kill(rec, signal.SIGHUP)  # the process dies of it: a crash to the policy
        await e.until("die")
        await restarted(e)
        assert rec.state.running and rec.restart_count == 1
        await e.mgr.kill(rec, signal.SIGKILL)
        assert (rec.state.exit_code, rec.manually_stopped) == (137, True)
        no_restart_comes(e, rec)
        await e.mgr.start(rec)
        await e.mgr.kill(rec, signal.SIGTERM)  # the stop signal
        assert await e.mgr.wait(rec, "not-running") == 0
        assert (rec.state.exit_code, rec.manually_stopped) == (0, True)
        no_restart_comes(e, rec)
    scenario(tmp_path, lambda cid, spec: Behaviour(on_signal={signal.SIGHUP: 129, signal.SIGTERM: 0}),
             body)


def test_a_manual_restart_is_no_policy_restart(tmp_path: Path) -> None:
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        await e.mgr.restart(rec, None)
        assert rec.state.running and rec.restart_count == 0 and not rec.manually_stopped
        assert [a for a, _ in e.took()] == ["create", "start", "kill", "die", "stop", "start", "restart"]
        no_restart_comes(e, rec)  # the stop inside it was the user's
        await e.mgr.kill(rec, signal.SIGHUP)  # and the policy applies again after it
        await e.until("die")
        await restarted(e)
        assert rec.restart_count == 1
        await e.mgr.stop(rec, None)
    scenario(tmp_path, lambda cid, spec: Behaviour(on_signal={signal.SIGHUP: 129, signal.SIGTERM: 0}),
             body)



def test_a_manual_restart_resets_the_count_and_the_back_off(tmp_path: Path) -> None:
    """As a user's start: Docker's restart is a containerStart with resetRestartManager, which
    sets RestartCount back to 0 and drops the back-off."""
    async def body(e: FakeEngine) -> None:
        rec = await e.create(host_config=policy("always"))
        await e.mgr.start(rec)
        for _ in range(2):
            await e.until("die")
            await restarted(e)
        assert rec.restart_count == 2 and rec.state.running  # the third run, which runs on
        await e.mgr.restart(rec, None)
        assert rec.restart_count == 0 and rec.state.running
        e.took()
        await e.mgr.kill(rec, signal.SIGHUP)  # a crash: the back-off starts again at its first pause
        await e.until("die")
        assert await restarted(e) == pytest.approx(RESTART_BASE)
        assert rec.restart_count == 1
        await e.mgr.stop(rec, None)
    scenario(tmp_path, in_turn(CRASHES, CRASHES, Behaviour(on_signal={signal.SIGHUP: 129, signal.SIGTERM: 0})),
             body)
