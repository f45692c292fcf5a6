"""The container lifecycle (ContainerManager: create, start, the exit, stop, kill, restart,
remove, wait, pause) on the fake runtime and clock: at each step, the record's state, inspect's
State, the events in order, and what the runtime was asked and still holds. Milliseconds, no
root, no kernel: stop timeouts run on the fake clock. The restart policies are in
test_restart_policies.py, failed starts in test_start_failures.py."""
from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from asyncdock.base import errors
from asyncdock.base.timefmt import rfc3339nano
from asyncdock.base.timefmt import ZERO_TIME
from tests.support.fakeclock import START_NS
from tests.support.fakeengine import fake_engine, in_turn, inspect_state
from tests.support.fakeruntime import Behaviour, Handler

STARTED = rfc3339nano(START_NS)  # the fake clock's time when nothing has advanced it


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def exits_on(sig: int, code: int) -> Behaviour:
    """Runs until `sig`, then exits with `code`."""
    return Behaviour(on_signal={sig: code})


def test_a_process_that_exits_by_itself(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: Behaviour(exit_code=3)) as e:
            rec = await e.create(name="quits")
            assert inspect_state(rec)["Status"] == "created" and inspect_state(rec)["StartedAt"] == ZERO_TIME
            assert e.took() == [("create", {})] and e.runtime_calls(rec) == []
            await e.mgr.start(rec)
            # The exit is due at the loop's next turn: the state is seen, and the clock moved,
            # before it.
            assert inspect_state(rec) == {
                "Status": "running", "Running": True, "Paused": False, "Restarting": False,
                "OOMKilled": False, "Dead": False, "Pid": rec.state.pid, "ExitCode": 0, "Error": "",
                "StartedAt": STARTED, "FinishedAt": ZERO_TIME}
            assert rec.state.pid >= 1 << 23 and rec.has_been_started  # the fake's pid, from its pid file
            e.clock.advance(2.5)
            assert await e.mgr.wait(rec, "not-running") == 3
            assert inspect_state(rec) == {
                "Status": "exited", "Running": False, "Paused": False, "Restarting": False,
                "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 3, "Error": "",
                "StartedAt": STARTED, "FinishedAt": rfc3339nano(START_NS + 2_500_000_000)}
            assert rec.finished_ns - rec.started_ns == 2_500_000_000
            assert e.statuses(rec) == ["created", "running", "exited"]
            assert e.took() == [("start", {}), ("die", {"exitCode": "3"})]
            # every event names the container, its image and name, at the fake clock's time
            history = [env.message for env in e.mgr.bus.history()]
            assert [(ev.actor.id, ev.actor.attributes["name"], ev.actor.attributes["image"], ev.time_nano)
                    for ev in history] == [(rec.id, "quits", "fake", START_NS)] * 2 + \
                [(rec.id, "quits", "fake", START_NS + 2_500_000_000)]
            await e.mgr.exit_cleaned(rec.id)
            assert e.runtime_calls(rec) == ["create", "start", "delete"]
            assert await e.rt.list() == [] and not (e.mgr.bundles / rec.id).exists()
            # started again: a new run, the old one's times replaced
            await e.mgr.start(rec)
            assert await e.mgr.wait(rec, "not-running") == 3
            assert inspect_state(rec)["StartedAt"] == rfc3339nano(START_NS + 2_500_000_000)
            assert e.runtime_calls(rec)[3:] == ["create", "start"]
    run(body())


def test_stop_of_a_process_that_exits_on_sigterm(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: exits_on(signal.SIGTERM, 42)) as e:
            rec = await e.create()
            await e.mgr.start(rec)
            e.took()
            await e.mgr.stop(rec, None)
            assert (rec.state.status, rec.state.running, rec.state.exit_code) == ("exited", False, 42)
            assert rec.manually_stopped and e.clock.sleeping == 0  # nothing waits on a time-out
            assert e.took() == [("kill", {"signal": "15"}), ("die", {"exitCode": "42"}), ("stop", {})]
            with pytest.raises(errors.NotModified):  # 304 for a stopped container
                await e.mgr.stop(rec, None)
            assert e.took() == []
    run(body())


def test_stop_sends_the_containers_stop_signal(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: exits_on(signal.SIGINT, 130)) as e:
            rec = await e.create(stop_signal="SIGINT")
            await e.mgr.start(rec)
            e.took()
            await e.mgr.stop(rec, None)
            assert rec.state.exit_code == 130
            assert e.took() == [("kill", {"signal": "2"}), ("die", {"exitCode": "130"}), ("stop", {})]
    run(body())


@pytest.mark.parametrize(("stop_timeout", "t", "waited"), [
    (None, None, 10),  # Docker's default
    (1, None, 1),  # the container's StopTimeout
    (1, 3, 3),  # the request's t over it
])
def test_a_process_that_ignores_sigterm_is_killed_after_the_stop_timeout(
        tmp_path: Path, stop_timeout: int | None, t: int | None, waited: int) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path) as e:  # ignores every signal but SIGKILL
            rec = await e.create(stop_timeout=stop_timeout)
            await e.mgr.start(rec)
            e.took()
            stopping = asyncio.ensure_future(e.mgr.stop(rec, t))
            await e.clock.wait_sleeping()
            assert e.clock.deadlines() == [waited]
            assert e.clock.advance(waited - 0.01) == 0
            assert rec.state.running and (await e.rt.state(rec.id) or {})["status"] == "running"
            assert e.took() == [("kill", {"signal": "15"})] and not stopping.done()
            assert e.clock.advance(0.01) == 1
            await stopping
            assert (rec.state.status, rec.state.exit_code) == ("exited", 137)
            assert inspect_state(rec)["FinishedAt"] == rfc3339nano(START_NS + waited * 1_000_000_000)
            assert e.took() == [("kill", {"signal": "9"}), ("die", {"exitCode": "137"}), ("stop", {})]
            assert e.runtime_calls(rec) == ["create", "start", "kill", "kill"]
    run(body())


def test_stop_with_no_time_kills_at_once(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path) as e:
            rec = await e.create()
            await e.mgr.start(rec)
            e.took()
            await e.mgr.stop(rec, 0)
            assert rec.state.exit_code == 137 and e.clock.elapsed == 0
            assert e.took() == [("kill", {"signal": "15"}), ("kill", {"signal": "9"}),
                                ("die", {"exitCode": "137"}), ("stop", {})]
    run(body())


def test_kill_with_a_signal_the_process_handles_and_with_sigkill(tmp_path: Path) -> None:
    handles = Behaviour(on_signal={signal.SIGUSR1: Handler(None), signal.SIGHUP: 129})

    async def body() -> None:
        async with fake_engine(tmp_path, in_turn(handles, Behaviour())) as e:
            rec = await e.create()
            await e.mgr.start(rec)
            e.took()
            await e.mgr.kill(rec, signal.SIGUSR1)  # handled, and it goes on
            assert rec.state.running and (await e.rt.state(rec.id) or {})["status"] == "running"
            assert e.took() == [("kill", {"signal": "10"})]
            await e.mgr.kill(rec, signal.SIGHUP)  # it exits on this one
            assert await e.mgr.wait(rec, "not-running") == 129
            assert e.took() == [("kill", {"signal": "1"}), ("die", {"exitCode": "129"})]
            assert not rec.manually_stopped  # neither SIGKILL nor the stop signal

            await e.mgr.start(rec)  # now one that handles nothing
            e.took()
            await e.mgr.kill(rec, signal.SIGKILL)  # returns once the process is gone
            assert (rec.state.status, rec.state.exit_code, rec.manually_stopped) == ("exited", 137, True)
            assert e.took() == [("kill", {"signal": "9"}), ("die", {"exitCode": "137"})]
    run(body())


def test_kill_of_a_container_that_is_not_running(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: Behaviour(exit_code=0)) as e:
            rec = await e.create(name="web")
            for _ in range(2):  # created, then exited
                with pytest.raises(errors.Conflict) as err:
                    await e.mgr.kill(rec, signal.SIGKILL, "web")
                assert str(err.value) == f"Cannot kill container: web: Container {rec.id} is not running"
                with pytest.raises(errors.Conflict) as err:
                    await e.mgr.kill(rec, signal.SIGTERM)
                assert str(err.value) == f"Cannot kill container: {rec.id}: Container {rec.id} is not running"
                await e.mgr.start(rec)
                await e.mgr.wait(rec, "not-running")
            assert [a for a, _ in e.took()] == ["create", "start", "die", "start", "die"]
    run(body())


def test_restart_stops_then_starts(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: exits_on(signal.SIGTERM, 0)) as e:
            rec = await e.create()
            await e.mgr.restart(rec, None)  # of a created container: a start
            assert rec.state.running and e.took() == [("create", {}), ("start", {}), ("restart", {})]
            first_pid = rec.state.pid
            e.clock.advance(1)
            await e.mgr.restart(rec, None)
            assert e.took() == [("kill", {"signal": "15"}), ("die", {"exitCode": "0"}), ("stop", {}),
                                ("start", {}), ("restart", {})]
            assert rec.state.running and rec.state.pid != first_pid and rec.restart_count == 0
            assert not rec.manually_stopped  # the policy applies again
            assert inspect_state(rec)["StartedAt"] == rfc3339nano(START_NS + 1_000_000_000)
            assert e.statuses(rec) == ["created", "running", "exited", "running"]
            # the first run's state went before the second create
            assert e.runtime_calls(rec) == ["create", "start", "kill", "delete", "create", "start"]
            assert await e.rt.list() == [rec.id]
            await e.mgr.stop(rec, None)
    run(body())


def test_remove(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: exits_on(signal.SIGTERM, 0)) as e:
            rec = await e.create(name="web")
            await e.mgr.start(rec)
            e.took()
            with pytest.raises(errors.Conflict) as err:
                await e.mgr.remove(rec)
            assert str(err.value) == (f"You cannot remove a running container {rec.id}. "
                                      "Stop the container before attempting removal or force remove")
            assert rec.state.running and e.took() == [] and e.mgr.get("web") is rec
            removed = asyncio.ensure_future(e.mgr.wait(rec, "removed"))
            await e.mgr.remove(rec, force=True)
            assert await removed == 137
            assert e.took() == [("kill", {"signal": "9"}), ("die", {"exitCode": "137"}), ("destroy", {})]
            assert e.mgr.store.find(rec.id) is None
            with pytest.raises(errors.NotFound):
                e.mgr.get("web")
            await e.mgr.reclaimed()  # the disk given back, after the exit's clean-up
            assert e.runtime_calls(rec) == ["create", "start", "kill", "delete"]
            assert await e.rt.list() == [] and not e.mgr.store.dir(rec.id).exists()
            again = await e.create(name="web")  # the name is free
            await e.mgr.remove(again)  # a created container goes without force
            assert e.took() == [("create", {}), ("destroy", {})] and e.runtime_calls(again) == []
    run(body())


def test_wait_conditions_resolve_at_their_transitions(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, in_turn(exits_on(signal.SIGTERM, 5), Behaviour(exit_code=6))) as e:
            rec = await e.create()
            assert await e.mgr.wait(rec, "not-running") == 0  # created: answered at once
            next_exit = asyncio.ensure_future(e.mgr.wait(rec, "next-exit"))
            removed = asyncio.ensure_future(e.mgr.wait(rec, "removed"))
            await e.mgr.start(rec)
            not_running = asyncio.ensure_future(e.mgr.wait(rec, "not-running"))
            e.clock.advance(30)
            assert not next_exit.done() and not not_running.done()
            await e.mgr.stop(rec, None)
            assert await next_exit == 5 and await not_running == 5
            assert not removed.done()
            assert await e.mgr.wait(rec, "not-running") == 5  # stopped: at once
            assert await e.mgr.wait(rec, "") == 5  # the API's default condition
            next_exit = asyncio.ensure_future(e.mgr.wait(rec, "next-exit"))  # of a stopped one
            await e.mgr.start(rec)
            assert await next_exit == 6
            assert not removed.done()
            await e.mgr.remove(rec)
            assert await removed == 6
            with pytest.raises(errors.InvalidParameter) as err:
                await e.mgr.wait(rec, "bogus")
            assert str(err.value) == 'invalid condition: "bogus"'
    run(body())


def test_pause_and_unpause(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: exits_on(signal.SIGTERM, 0)) as e:
            rec = await e.create()
            with pytest.raises(errors.Conflict) as err:
                await e.mgr.pause(rec)
            assert str(err.value) == f"Container {rec.id} is not running"
            await e.mgr.start(rec)
            e.took()
            await e.mgr.pause(rec)
            state = inspect_state(rec)
            assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True)
            assert (await e.rt.state(rec.id) or {})["status"] == "paused"
            assert e.took() == [("pause", {})]
            for action, text in [
                    (e.mgr.pause, f"Container {rec.id} is already paused"),
                    (e.mgr.start, "cannot start a paused container, try unpause instead"),
                    (e.mgr.remove, f"You cannot remove a paused container {rec.id}. Unpause and then stop "
                                   "the container before attempting removal or force remove")]:
                with pytest.raises(errors.Conflict) as err:
                    await action(rec)
                assert str(err.value) == text
            assert rec.state.paused and e.took() == []
            await e.mgr.unpause(rec)
            state = inspect_state(rec)
            assert (state["Status"], state["Running"], state["Paused"]) == ("running", True, False)
            assert (await e.rt.state(rec.id) or {})["status"] == "running"
            assert e.took() == [("unpause", {})]
            with pytest.raises(errors.Conflict) as err:
                await e.mgr.unpause(rec)
            assert str(err.value) == f"Container {rec.id} is not paused"
            # a stop of a paused container thaws it first, so its init sees the signal
            await e.mgr.pause(rec)
            e.took()
            await e.mgr.stop(rec, None)
            assert (rec.state.status, rec.state.paused, rec.state.exit_code) == ("exited", False, 0)
            assert e.took() == [("kill", {"signal": "15"}), ("die", {"exitCode": "0"}), ("stop", {})]
            await e.mgr.exit_cleaned(rec.id)
            assert e.runtime_calls(rec) == ["create", "start", "pause", "resume", "pause", "resume", "kill",
                                            "delete"]
    run(body())
