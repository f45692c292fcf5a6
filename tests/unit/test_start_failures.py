"""Starts that fail, on the fake runtime: in the runtime's create (Docker's "OCI runtime create
failed" error, recorded in State.Error with the exit code Docker gives it), in its start, or
between the two (no pid file). Whatever failed, the runtime keeps no state of the container and
its bundle is gone; a later start works and clears the error. Milliseconds, no root."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asyncdock.base import errors
from asyncdock.base.timefmt import ZERO_TIME
from asyncdock.containers.models import HostConfig
from tests.support.fakeengine import FakeEngine, fake_engine, in_turn, inspect_state
from tests.support.fakeruntime import Behaviour, FakeRuntime

NOT_FOUND = 'exec: "/bin/app": executable file not found in $PATH'


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


async def left_nothing(e: FakeEngine, cid: str) -> None:
    assert await e.rt.list() == []
    assert not (e.mgr.bundles / cid).exists()


@pytest.mark.parametrize(("message", "error", "code"), [
    (NOT_FOUND, errors.InvalidParameter, 127),
    ('exec: "/bin/app": permission denied', errors.InvalidParameter, 126),
    ("unable to apply cgroup configuration: bad value", errors.SystemError_, 128),
])
def test_a_create_the_runtime_refuses(tmp_path: Path, message: str, error: type[errors.EngineError],
                                      code: int) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, in_turn(Behaviour(create_error=message), Behaviour())) as e:
            rec = await e.create()
            with pytest.raises(error) as err:
                await e.mgr.start(rec)
            text = f"OCI runtime create failed: fake create failed: {message}: unknown"
            assert str(err.value) == text
            state = inspect_state(rec)
            assert {k: state[k] for k in ("Status", "Running", "Pid", "ExitCode", "Error", "StartedAt")} == {
                "Status": "created", "Running": False, "Pid": 0, "ExitCode": code, "Error": text,
                "StartedAt": ZERO_TIME}
            assert not rec.has_been_started
            assert e.took() == [("create", {})]  # no start, no die
            assert e.runtime_calls(rec) == ["create"]
            await left_nothing(e, rec.id)
            await e.mgr.start(rec)  # the next start is a new run: the error goes
            state = inspect_state(rec)
            assert (state["Status"], state["ExitCode"], state["Error"]) == ("running", 0, "")
            await e.mgr.kill(rec, 9)
    run(body())


def test_a_failed_start_after_a_run_keeps_the_container_exited(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, in_turn(Behaviour(exit_code=0), Behaviour(create_error=NOT_FOUND))) as e:
            rec = await e.create()
            await e.mgr.start(rec)
            assert await e.mgr.wait(rec, "not-running") == 0
            with pytest.raises(errors.InvalidParameter):
                await e.mgr.start(rec)
            assert (rec.state.status, rec.state.exit_code) == ("exited", 127)
            assert rec.state.error.startswith("OCI runtime create failed: ")
            await e.mgr.exit_cleaned(rec.id)
            await left_nothing(e, rec.id)
    run(body())


def test_a_start_the_runtime_refuses_deletes_the_created_container(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: Behaviour(start_error="cannot start the init")) as e:
            rec = await e.create()
            with pytest.raises(errors.SystemError_) as err:
                await e.mgr.start(rec)
            assert str(err.value) == "OCI runtime create failed: fake create failed: cannot start the init: unknown"
            assert (rec.state.status, rec.state.exit_code) == ("created", 128)
            # what the runtime created is killed and deleted before the error is answered
            await left_nothing(e, rec.id)
            assert e.runtime_calls(rec) == ["create", "start", "kill", "delete"]
    run(body())


def test_a_runtime_create_that_leaves_no_pid_file_is_deleted(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: Behaviour(writes_pid_file=False)) as e:
            rec = await e.create()
            with pytest.raises(errors.SystemError_) as err:
                await e.mgr.start(rec)
            assert str(err.value).startswith("failed to start container: ")
            assert (rec.state.status, rec.state.exit_code, rec.state.error) == ("created", 128, str(err.value))
            await left_nothing(e, rec.id)
            assert e.runtime_calls(rec) == ["create", "kill", "delete"]  # never started
            assert e.took() == [("create", {})]
    run(body())


class StuckStart(FakeRuntime):
    """A runtime whose start never returns (a hung runtime binary)."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = asyncio.Event()

    async def start(self, container_id: str) -> None:
        self.calls.append(("start", container_id))
        self.starting.set()
        await asyncio.Event().wait()


def test_a_start_cancelled_in_the_runtime_deletes_the_created_container(tmp_path: Path) -> None:
    async def body() -> None:
        rt = StuckStart()
        async with fake_engine(tmp_path, runtime=rt) as e:
            rec = await e.create()
            starting = asyncio.ensure_future(e.mgr.start(rec))
            await rt.starting.wait()
            assert await rt.list() == [rec.id]
            starting.cancel()  # the client went away, or the daemon shuts down
            with pytest.raises(asyncio.CancelledError):
                await starting
            await left_nothing(e, rec.id)
            assert e.runtime_calls(rec) == ["create", "start", "kill", "delete"]
            assert rec.state.status == "created" and e.took() == [("create", {})]
    run(body())


def test_a_failed_start_of_an_auto_remove_container_removes_it(tmp_path: Path) -> None:
    async def body() -> None:
        async with fake_engine(tmp_path, lambda cid, spec: Behaviour(create_error=NOT_FOUND)) as e:
            rec = await e.create(host_config=HostConfig(auto_remove=True))
            removed = asyncio.ensure_future(e.mgr.wait(rec, "removed"))
            with pytest.raises(errors.InvalidParameter):
                await e.mgr.start(rec)
            assert await removed == 127
            assert e.mgr.store.find(rec.id) is None
            assert e.took() == [("create", {}), ("destroy", {})]
            await e.mgr.reclaimed()
            await left_nothing(e, rec.id)
    run(body())
