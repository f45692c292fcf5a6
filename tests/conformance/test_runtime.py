"""The OCI runtime conformance suite: every plugin of the asyncdock.runtimes group, built by its
factory as the engine builds it, plus the fake runtime (tests/support/fakeruntime.py), which
must behave like the real ones where a lifecycle test would notice: states, exit codes, errors.

Real runtimes need root, a busybox-static rootfs and the real kernel; checks that only make
sense with real processes (exec, cgroup files, the rootfs being looked at) are skipped for a
runtime whose `in_kernel` capability is False (the fake), never by its name. Every test
force-deletes what it left (runtime state, and so cgroups) even when it fails.

What crun and runc do differently (resume of a running container, update of a stopped one) is
not checked here: no caller may rely on it.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asyncdock.containers.spec import Resources
from asyncdock.plugins import RUNTIMES, InitContext
from asyncdock.runtime.base import OCIRuntime, ProbeResult, RuntimeError_
from asyncdock.runtime.cgroups import existing_cgroup_dirs
from asyncdock.runtime.reaper import is_child_subreaper, set_child_subreaper
from tests.support.plugins import registered
from tests.support.fakeruntime import Behaviour, FakeRuntime, Handler
from tests.support.runtimes import (BUSYBOX, TIMEOUT, Harness, build_busybox_rootfs, in_kernel,
                                    probe, probe_leftovers, read_line, wait_state)

pytestmark = pytest.mark.anyio

FAKE = "fake"
RUNTIME_IDS = [*registered(RUNTIMES), FAKE]


@dataclass(frozen=True)
class Program:
    """One container init, as argv for a real runtime and as the fake's behaviour."""

    argv: list[str]
    fake: Behaviour = field(default_factory=Behaviour)


SLEEP = Program(["/bin/sleep", "1000"])
EXIT_3 = Program(["/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 3"],
                 Behaviour(exit_code=3, stdout=b"to-out\n", stderr=b"to-err\n"))
TRAP_TERM = Program(["/bin/sh", "-c", 'trap "echo got-term; exit 42" TERM; echo ready; '
                                      "sleep 1000 & wait"],
                    Behaviour(stdout=b"ready\n",
                              on_signal={signal.SIGTERM: Handler(42, stdout=b"got-term\n")}))


@pytest.fixture(autouse=True)
def _restore_subreaper() -> Iterator[None]:
    """The engine's ExitWatcher makes this process a subreaper; the rest of the session should
    not inherit every orphan below it."""
    was = is_child_subreaper()
    yield
    set_child_subreaper(was)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        pytest.skip("needs busybox-static")
    return build_busybox_rootfs(tmp_path_factory.mktemp("rootfs"))


@pytest.fixture(params=RUNTIME_IDS)
async def h(request: pytest.FixtureRequest, rootfs: Path, tmp_path: Path) -> AsyncIterator[Harness]:
    work = tmp_path / "bundles"
    work.mkdir()
    state = tmp_path / "state"
    rt: OCIRuntime
    if request.param == FAKE:
        fake = FakeRuntime(root=state, behaviour=_fake_behaviour)
        rt, watch = fake, fake.watch
    else:
        if os.geteuid() != 0:
            pytest.skip("real runtimes need root")
        rt = registered(RUNTIMES)[request.param].factory(InitContext(root=state))
        if shutil.which(rt.path) is None:
            pytest.skip(f"{request.param} is not installed")
        watch = None
    assert isinstance(rt, OCIRuntime)
    harness = Harness(rt, rootfs, work, watch=watch, state_dir=state)
    try:
        yield harness
    finally:
        try:
            await harness.cleanup()
        finally:
            rt.close()


_PROGRAMS = {tuple(p.argv): p.fake for p in (SLEEP, EXIT_3, TRAP_TERM)}


def _fake_behaviour(container_id: str, spec: dict[str, object]) -> Behaviour:
    process = spec["process"]
    assert isinstance(process, dict)
    return _PROGRAMS[tuple(process["args"])]


async def create(h: Harness, program: Program, **kw: object) -> tuple[str, int, list[int]]:
    cid, pid, fds = await h.create(program.argv, **kw)
    h.watch(pid)
    return cid, pid, fds


async def exit_code(h: Harness, pid: int) -> int:
    async with asyncio.timeout(TIMEOUT):
        return await h.futures.pop(pid)


def close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def one_line(e: RuntimeError_) -> str:
    assert e.message and "\n" not in e.message.strip() and "Traceback" not in e.message, e.message
    return e.message


def needs_kernel(h: Harness) -> None:
    if not in_kernel(h.rt):
        pytest.skip("needs a runtime whose containers are real processes")


# ---------------------------------------------------------------------------------------------


async def test_probe(h: Harness, tmp_path: Path) -> None:
    work = tmp_path / "probe"
    result, ids = await probe(h.rt, work, h.rootfs)
    assert isinstance(result, ProbeResult)
    assert result.ok, result.error
    assert (result.name, result.path) == (h.rt.name, h.rt.path)
    assert result.version and result.seconds > 0
    assert await h.rt.list() == []
    if in_kernel(h.rt):
        assert len(ids) == 1 and probe_leftovers(ids) == []
        assert not list(work.iterdir())  # the probe bundle is gone


async def test_lifecycle_states(h: Harness) -> None:
    """created -> running -> (SIGKILL) stopped, listed until deleted, then forgotten."""
    cid, pid, fds = await create(h, SLEEP)
    st = await h.rt.state(cid)
    assert st is not None
    assert (st["id"], st["status"], st["pid"]) == (cid, "created", pid)
    assert Path(str(st["bundle"])) == h.work / cid
    assert cid in await h.rt.list()
    await h.rt.start(cid)
    assert (await wait_state(h.rt, cid, "running"))["pid"] == pid
    await h.rt.kill(cid, signal.SIGKILL)
    assert await exit_code(h, pid) == 137
    st = await wait_state(h.rt, cid, "stopped")
    assert st["pid"] == 0
    assert cid in await h.rt.list()  # a stopped container stays until deleted
    await h.delete(cid)
    assert await h.rt.state(cid) is None
    await h.rt.delete(cid)  # idempotent
    await h.rt.delete(cid, force=True)
    close(fds)


async def test_exit_code_and_output_through_the_given_stdio(h: Harness) -> None:
    r = await h.run(EXIT_3.argv)
    assert (r.code, r.stdout, r.stderr) == (3, "to-out\n", "to-err\n")


async def test_init_ignores_a_signal_it_has_no_handler_for(h: Harness) -> None:
    """A pid namespace's init gets no default action for signals from outside: SIGTERM to a
    plain `sleep` does nothing (which is why `docker stop` escalates), SIGKILL ends it. Once
    kill(2) has returned the fate of a fatal signal is sealed, so the exit code tells which."""
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.start(cid)
    await h.rt.kill(cid, signal.SIGTERM)
    await h.rt.kill(cid, signal.SIGKILL)
    r = await h.finish(cid, pid, fds)
    assert r.code == 137


async def test_signal_handler_runs(h: Harness) -> None:
    cid, pid, fds = await create(h, TRAP_TERM)
    await h.rt.start(cid)
    assert await read_line(fds[0]) == "ready\n"
    await h.rt.kill(cid, signal.SIGTERM)
    r = await h.finish(cid, pid, fds)
    assert (r.code, r.stdout) == (42, "got-term\n")


async def test_kill_all_processes(h: Harness) -> None:
    cid, pid, fds = await create(h, TRAP_TERM)
    await h.rt.start(cid)
    assert await read_line(fds[0]) == "ready\n"
    await h.rt.kill(cid, signal.SIGKILL, all_processes=True)
    assert (await h.finish(cid, pid, fds)).code == 137


async def test_pause_resume(h: Harness) -> None:
    cid, pid, fds = await create(h, TRAP_TERM)
    await h.rt.start(cid)
    assert await read_line(fds[0]) == "ready\n"
    await h.rt.pause(cid)
    await wait_state(h.rt, cid, "paused")
    await h.rt.resume(cid)
    await wait_state(h.rt, cid, "running")
    # still alive and handling signals after the thaw
    await h.rt.kill(cid, signal.SIGTERM)
    r = await h.finish(cid, pid, fds)
    assert (r.code, r.stdout) == (42, "got-term\n")


async def test_commands_refused_in_the_wrong_state(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.start(cid)
    with pytest.raises(RuntimeError_) as e:
        await h.rt.start(cid)
    one_line(e.value)
    with pytest.raises(RuntimeError_) as e:
        await h.rt.delete(cid)  # running: only a forced delete
    one_line(e.value)
    assert (await wait_state(h.rt, cid, "running"))["pid"] == pid
    await h.rt.kill(cid, signal.SIGKILL)
    assert await exit_code(h, pid) == 137
    await wait_state(h.rt, cid, "stopped")
    for refused in (h.rt.start(cid), h.rt.kill(cid, signal.SIGKILL), h.rt.pause(cid)):
        with pytest.raises(RuntimeError_) as e:
            await refused
        one_line(e.value)
    await h.delete(cid)
    close(fds)


async def test_unknown_id(h: Harness) -> None:
    """Every command on an id the runtime does not know fails with the runtime's one-line
    message naming the id or saying it does not exist; state, delete and list do not fail."""
    cid = "adtest-no-such-container"
    for refused in (h.rt.start(cid), h.rt.kill(cid, signal.SIGKILL), h.rt.pause(cid),
                    h.rt.resume(cid), h.rt.update(cid, {"pids": {"limit": 10}})):
        with pytest.raises(RuntimeError_) as e:
            await refused
        message = one_line(e.value)
        assert cid in message or "does not exist" in message, message
    assert await h.rt.state(cid) is None
    await h.rt.delete(cid)
    await h.rt.delete(cid, force=True)
    assert cid not in await h.rt.list()


async def test_create_of_an_existing_id_is_refused(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP)
    bundle = h.work / cid
    with pytest.raises(RuntimeError_) as e:
        await h.rt.create(cid, bundle, pid_file=bundle / "again.pid")
    one_line(e.value)
    # the first one is untouched
    st = await h.rt.state(cid)
    assert st is not None and (st["status"], st["pid"]) == ("created", pid)
    await h.rt.start(cid)
    await h.rt.kill(cid, signal.SIGKILL)
    assert (await h.finish(cid, pid, fds)).code == 137


async def test_delete_of_a_created_container_ends_its_init(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.delete(cid)  # no force needed: the init never ran the program
    assert await exit_code(h, pid) == 137
    await h.delete(cid)
    close(fds)


async def test_kill_of_a_created_container(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.kill(cid, signal.SIGKILL)
    assert await exit_code(h, pid) == 137
    await wait_state(h.rt, cid, "stopped")
    await h.delete(cid)
    close(fds)


async def test_forced_delete_of_a_running_container(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.start(cid)
    await h.delete(cid)  # force=True, and nothing of it is left (state dir, cgroups)
    assert await exit_code(h, pid) == 137
    assert await h.rt.state(cid) is None
    close(fds)


async def test_list(h: Harness) -> None:
    assert await h.rt.list() == []
    made = [await create(h, SLEEP) for _ in range(3)]
    await h.rt.start(made[0][0])
    assert sorted(await h.rt.list()) == sorted(cid for cid, _, _ in made)
    for cid, pid, fds in made:
        await h.delete(cid)
        assert await exit_code(h, pid) == 137
        close(fds)
    assert await h.rt.list() == []


async def test_update_resources(h: Harness) -> None:
    cid, pid, fds = await create(h, SLEEP, resources=Resources(pids_limit=10))
    await h.rt.start(cid)
    await h.rt.update(cid, {"pids": {"limit": 20}})
    if in_kernel(h.rt):
        pids_max = next(d / "pids.max" for d in existing_cgroup_dirs(f"/asyncdock/{cid}")
                        if (d / "pids.max").exists())
        assert pids_max.read_text().strip() == "20"
    else:
        assert h.rt.resources(cid) == {"pids": {"limit": 20}}  # type: ignore[attr-defined]
    await h.rt.kill(cid, signal.SIGKILL, all_processes=True)
    assert (await h.finish(cid, pid, fds)).code == 137


async def test_exec(h: Harness) -> None:
    needs_kernel(h)
    cid, pid, fds = await create(h, SLEEP)
    await h.rt.start(cid)
    spec = json.loads((h.work / cid / "config.json").read_text())
    process = dict(spec["process"], args=["/bin/sh", "-c", "echo exec-ok $(id -u); exit 5"])
    pjson = h.work / cid / "exec.json"
    pjson.write_text(json.dumps(process))
    argv = h.rt.exec_argv(cid, pjson, pid_file=h.work / cid / "exec.pid")
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert (proc.returncode, out) == (5, b"exec-ok 0\n"), err
    await h.rt.kill(cid, signal.SIGKILL)
    assert (await h.finish(cid, pid, fds)).code == 137


async def test_create_failure_carries_the_runtime_message(h: Harness) -> None:
    needs_kernel(h)  # the fake does not look into the rootfs
    with pytest.raises(RuntimeError_) as e:
        await h.create(["/nonexistent"])
    assert "nonexistent" in one_line(e.value)
    assert await h.rt.list() == []


async def test_concurrent_containers(h: Harness) -> None:
    """The engine starts many containers at once: creates, starts, kills and deletes of
    different containers overlap, and each keeps its own state, output and exit code."""
    async def one(i: int) -> tuple[int, str]:
        if i % 2:
            r = await h.run(EXIT_3.argv)
            return r.code, r.stdout
        cid, pid, fds = await create(h, TRAP_TERM)
        await h.rt.start(cid)
        assert await read_line(fds[0]) == "ready\n"
        await h.rt.kill(cid, signal.SIGTERM)
        r = await h.finish(cid, pid, fds)
        return r.code, r.stdout

    results = await asyncio.gather(*(one(i) for i in range(6)))
    assert results == [(42, "got-term\n"), (3, "to-out\n")] * 3
    assert await h.rt.list() == []
