"""ContainerManager.shutdown: the running containers stop, then the exits' clean-ups (rootfs,
cgroups, the runtime's delete) finish before it returns; past its bound (on the manager's
clock) what is pending is named in the log and cancelled, and a cancelled clean-up still runs
the runtime's delete (a clean stop must not leave the runtime's state directory behind)."""
from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from asyncdock.containers import launcher
from asyncdock.containers.manager import SHUTDOWN_WAIT
from asyncdock.base.ids import short_id
from tests.support.fakeclock import FakeClock
from tests.support.fakeengine import container_manager, create
from tests.support.fakeruntime import FakeRuntime


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


class SlowDelete(FakeRuntime):
    """A runtime whose delete of an exited container waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.deleting = asyncio.Event()
        self.go = asyncio.Event()

    async def delete(self, container_id: str, *, force: bool = False, exited: bool = False) -> None:
        if exited:
            self.deleting.set()
            await self.go.wait()
        await super().delete(container_id, force=force, exited=exited)


def test_shutdown_returns_once_the_clean_up_after_the_exit_has_deleted_the_state(tmp_path: Path) -> None:
    async def body() -> None:
        clock, rt = FakeClock(), SlowDelete()
        mgr = container_manager(tmp_path, rt, clock)
        rec = await create(mgr, stop_timeout=0)
        await mgr.start(rec)
        closing = asyncio.create_task(mgr.shutdown())
        await rt.deleting.wait()
        await clock.wait_sleeping()  # shutdown waits, under its bound
        assert not closing.done() and await rt.list() == [rec.id]
        rt.go.set()
        await closing
        assert await rt.list() == []
        assert rec.state.status == "exited" and not rec.manually_stopped  # the policy stays
    run(body())


def test_past_its_bound_shutdown_names_what_is_pending_and_the_delete_still_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    entered, unblock = threading.Event(), threading.Event()
    real = launcher._rootfs_released

    def stuck_unmount(mgr: Any, rec: Any) -> None:  # an unmount that hangs (a busy mount)
        entered.set()
        unblock.wait()
        real(mgr, rec)

    monkeypatch.setattr(launcher, "_rootfs_released", stuck_unmount)

    async def body() -> None:
        clock, rt = FakeClock(), FakeRuntime()
        mgr = container_manager(tmp_path, rt, clock)
        rec = await create(mgr, stop_timeout=0)
        await mgr.start(rec)
        closing = asyncio.create_task(mgr.shutdown())
        try:
            await asyncio.to_thread(entered.wait)
            await clock.wait_sleeping()
            assert clock.deadlines() == [SHUTDOWN_WAIT]
            assert clock.advance(SHUTDOWN_WAIT - 1) == 0 and not closing.done()
            with caplog.at_level(logging.WARNING, logger="asyncdock.containers.manager"):
                clock.advance(1)
                await closing
        finally:
            unblock.set()
        assert f"shutdown: still pending after 45s, cancelled: exit clean-up of {short_id(rec.id)}" in caplog.text
        # cut off in its unmount, the clean-up still had the runtime forget the container
        assert await rt.list() == [] and rt.calls[-1] == ("delete", rec.id)
    run(body())
