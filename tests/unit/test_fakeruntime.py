"""The fake runtime's own controls, beyond the OCIRuntime protocol that
tests/conformance/test_runtime.py checks it against: timed exits, exits a test forces, exit
codes for late watchers, the pipes' EOF at exit, the calls it saw. Milliseconds, no kernel."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from asyncdock.runtime.base import OCIRuntime, RuntimeError_
from tests.support.fakeruntime import Behaviour, FakeRuntime, Handler


def bundle(tmp_path: Path, cid: str, args: list[str]) -> Path:
    b = tmp_path / cid
    b.mkdir()
    (b / "config.json").write_text(json.dumps({"process": {"args": args}}))
    return b


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 5))  # type: ignore[arg-type]


def test_behaviour_per_container_timed_exit_and_eof(tmp_path: Path) -> None:
    behaviours = {"quick": Behaviour(exit_code=7, delay=0.01, stdout=b"hi\n"),
                  "stubborn": Behaviour(on_signal={signal.SIGTERM: Handler(None, stderr=b"no\n")})}
    rt = FakeRuntime(behaviour=lambda cid, spec: behaviours[cid])
    assert isinstance(rt, OCIRuntime) and rt.in_kernel is False

    async def body() -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        b = bundle(tmp_path, "quick", ["/bin/x"])
        await rt.create("quick", b, pid_file=b / "pid", stdio=(w, w, w))
        os.close(w)  # as the engine does after create: the "process" keeps its own copies
        pid = int((b / "pid").read_text())
        assert pid >= 1 << 23  # never a real process
        fut = rt.watch(pid)
        await rt.start("quick")
        assert await fut == 7
        assert os.read(r, 100) == b"hi\n" and os.read(r, 100) == b""  # EOF once it exited
        os.close(r)
        assert await rt.watch(pid) == 7  # a watcher after the exit still gets the code
        assert (await rt.state("quick") or {})["status"] == "stopped"

        b = bundle(tmp_path, "stubborn", ["/bin/y"])
        await rt.create("stubborn", b, pid_file=b / "pid")
        pid = int((b / "pid").read_text())
        await rt.start("stubborn")
        await rt.kill("stubborn", signal.SIGTERM)  # handled, goes on
        await rt.kill("stubborn", signal.SIGINT)  # no handler: ignored, as by an init
        assert (await rt.state("stubborn") or {})["status"] == "running"
        rt.exit("stubborn", 139)  # a test's crash
        assert await rt.watch(pid) == 139
        with pytest.raises(RuntimeError_):
            rt.exit("stubborn", 1)
        for cid in await rt.list():
            await rt.delete(cid)
        assert await rt.list() == []
    run(body())
    assert [c for c, _ in rt.calls] == ["create", "start", "create", "start", "kill", "kill",
                                        "delete", "delete"]
    rt.close()
    assert rt.closed


def test_update_is_recorded(tmp_path: Path) -> None:
    rt = FakeRuntime()

    async def body() -> None:
        b = bundle(tmp_path, "c", ["/bin/x"])
        await rt.create("c", b, pid_file=b / "pid")
        await rt.update("c", {"pids": {"limit": 5}})
        await rt.update("c", {"memory": {"limit": 1 << 20}})
        assert rt.resources("c") == {"pids": {"limit": 5}, "memory": {"limit": 1 << 20}}
        with pytest.raises(RuntimeError_, match="cannot load the bundle"):
            await rt.create("d", tmp_path / "nowhere", pid_file=tmp_path / "pid")
        await rt.delete("c")
    run(body())


def test_a_paused_container_exits_once_resumed(tmp_path: Path) -> None:
    rt = FakeRuntime(behaviour=lambda cid, spec: Behaviour(exit_code=0, delay=0.005,
                                                           on_signal={signal.SIGTERM: 3}))

    async def body() -> None:
        b = bundle(tmp_path, "c", ["/bin/x"])
        await rt.create("c", b, pid_file=b / "pid")
        fut = rt.watch(int((b / "pid").read_text()))
        await rt.kill("c", signal.SIGTERM)  # created: the program's handler is not there yet
        await rt.start("c")
        await rt.pause("c")
        while rt._containers["c"].timer is not None:  # bounded by run()'s 5 s
            await asyncio.sleep(0.001)
        assert not fut.done()  # frozen: the exit waits
        await rt.resume("c")
        assert await fut == 0
        await rt.delete("c")
    run(body())


def test_failures_a_behaviour_asks_for(tmp_path: Path) -> None:
    behaviours = {"no-create": Behaviour(create_error="exec: no such file"),
                  "no-start": Behaviour(start_error="cannot start"),
                  "no-pid": Behaviour(writes_pid_file=False)}
    rt = FakeRuntime(behaviour=lambda cid, spec: behaviours[cid])

    async def body() -> None:
        b = bundle(tmp_path, "no-create", ["/bin/x"])
        with pytest.raises(RuntimeError_, match="^exec: no such file$"):
            await rt.create("no-create", b, pid_file=b / "pid")
        assert await rt.list() == [] and not (b / "pid").exists()  # a failed create keeps nothing

        b = bundle(tmp_path, "no-start", ["/bin/x"])
        await rt.create("no-start", b, pid_file=b / "pid")
        with pytest.raises(RuntimeError_, match="^cannot start$"):
            await rt.start("no-start")
        assert (await rt.state("no-start") or {})["status"] == "created"
        await rt.delete("no-start")

        b = bundle(tmp_path, "no-pid", ["/bin/x"])
        await rt.create("no-pid", b, pid_file=b / "pid")
        assert not (b / "pid").exists() and await rt.list() == ["no-pid"]
        await rt.delete("no-pid")
        assert await rt.list() == []
    run(body())
