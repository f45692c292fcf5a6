"""Running containers through an OCIRuntime plugin the way the engine does, for the runtime
tests (tests/integration/test_runtimes.py, tests/conformance/test_runtime.py).

`build_busybox_rootfs` makes the rootfs every such test runs from (busybox-static, one
symlink per applet, root and app users); `Harness` goes spec -> bundle -> create with our
pipes -> watch the init's pid -> start -> exit code -> delete, and checks that nothing of the
container is left (runtime state, cgroups). It works for the fake runtime too
(tests/support/fakeruntime.py): exits then come from the fake's `watch` instead of the
engine's subreaper, and the kernel-side checks are skipped (its `in_kernel` is False).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncdock.containers.spec import SpecInput, build_spec
from asyncdock.runtime.base import OCIRuntime, ProbeResult
from asyncdock.runtime.cgroups import existing_cgroup_dirs, oom_killed

BUSYBOX = Path("/bin/busybox")
TIMEOUT = 30.0


def build_busybox_rootfs(root: Path) -> Path:
    """busybox-static with one symlink per applet, /etc/passwd with root and app (1000),
    /etc/group with staff (50) holding app, and a non-executable /bin/notexec."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # the container's / must be traversable by uid 1000
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "app:x:1000:1000:app:/home/app:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\nstaff:x:50:app\n")
    (root / "bin/notexec").write_text("#!/bin/sh\n")
    return root


def in_kernel(rt: object) -> bool:
    """Whether the runtime's containers are real processes (the fake declares False)."""
    return bool(getattr(rt, "in_kernel", True))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    oom: bool


class Harness:
    """Runs containers the way the engine does: spec -> bundle -> create with our pipes ->
    watch the pid -> start -> exit code -> OOM check -> delete, then checks nothing is left.

    `watch(pid)` gives the init's exit code: the engine's ExitWatcher for a real runtime,
    the fake's own `watch` for the fake."""

    def __init__(self, rt: OCIRuntime, rootfs: Path, work: Path,
                 watch: Callable[[int], asyncio.Future[int]] | None = None,
                 state_dir: Path | None = None) -> None:
        self.rt = rt
        self.rootfs = rootfs
        self.work = work
        if watch is None:
            from asyncdock.runtime.reaper import ExitWatcher

            watch = ExitWatcher().watch
        self._watch = watch
        # where the runtime keeps a directory per container (--root)
        self.state_dir = state_dir if state_dir is not None else work.parent / "state"
        self.futures: dict[int, asyncio.Future[int]] = {}
        self.last_spec: dict[str, Any] = {}

    def watch(self, pid: int) -> None:
        """As the engine does: watch the init as soon as its pid is known, keep the future."""
        self.futures[pid] = self._watch(pid)

    def spec_input(self, args: list[str], cid: str, **kw: Any) -> SpecInput:
        kw.setdefault("env", ["PATH=/bin", "HOME=/root"])
        return SpecInput(rootfs=str(self.rootfs), args=args, cgroups_path=f"/asyncdock/{cid}",
                         hostname=cid[:12], **kw)

    def bundle(self, args: list[str], **kw: Any) -> tuple[str, Path]:
        """A fresh id and its bundle (config.json written, as the engine's launcher does)."""
        cid = f"adtest-{uuid.uuid4().hex[:12]}"
        bundle = self.work / cid
        bundle.mkdir()
        spec = build_spec(self.spec_input(args, cid, **kw))
        self.rt.prepare_spec(cid, spec)
        self.last_spec = spec
        (bundle / "config.json").write_text(json.dumps(spec))
        return cid, bundle

    async def create(self, args: list[str], **kw: Any) -> tuple[str, int, list[int]]:
        """Created (not started) container: (id, pid, [stdout_r, stderr_r])."""
        cid, bundle = self.bundle(args, **kw)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            await self.rt.create(cid, bundle, pid_file=bundle / "init.pid",
                                 stdio=(null, out_w, err_w))
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            for fd in (null, out_w, err_w):
                os.close(fd)
        pid = int((bundle / "init.pid").read_text())
        return cid, pid, [out_r, err_r]

    async def finish(self, cid: str, pid: int, fds: list[int]) -> Result:
        readers = [asyncio.create_task(asyncio.to_thread(read_all, fd)) for fd in fds]
        async with asyncio.timeout(TIMEOUT):
            code = await self.futures.pop(pid)
            out, err = await asyncio.gather(*readers)
        oom = oom_killed(f"/asyncdock/{cid}") if in_kernel(self.rt) else False
        await self.delete(cid)
        return Result(code, out, err, oom)

    async def delete(self, cid: str) -> None:
        await self.rt.delete(cid, force=True)
        # Asked of this container alone: `runc list` fails outright when another container's
        # state directory goes between its readdir and its stat (concurrent deletes).
        assert await self.rt.state(cid) is None, "runtime still knows the container"
        assert not (self.state_dir / cid).exists(), "runtime state left behind"
        if in_kernel(self.rt):
            assert existing_cgroup_dirs(f"/asyncdock/{cid}") == [], "cgroup left behind"
        shutil.rmtree(self.work / cid, ignore_errors=True)

    async def run(self, args: list[str], **kw: Any) -> Result:
        cid, pid, fds = await self.create(args, **kw)
        self.watch(pid)
        await self.rt.start(cid)
        return await self.finish(cid, pid, fds)

    async def sh(self, script: str, **kw: Any) -> Result:
        return await self.run(["/bin/sh", "-c", script], **kw)

    async def cleanup(self) -> None:
        """Whatever a failed test left: every container the runtime lists force-deleted (its
        cgroups go with the runtime's delete), and its init reaped."""
        for cid in await self.rt.list():
            await self.rt.delete(cid, force=True)
        # The killed inits are reaped by their watches (no zombie outlives the test).
        pending = list(self.futures.values())
        if pending:
            await asyncio.wait(pending, timeout=TIMEOUT)
        for fut in pending:
            fut.cancel()
        self.futures.clear()


async def probe(rt: OCIRuntime, work: Path, rootfs: Path) -> tuple[ProbeResult, list[str]]:
    """rt.probe(), and the ids of the containers it created (to look for what they left: other
    engines on this host probe too, under the same cgroup parent, at any time)."""
    ids: list[str] = []
    real_create = rt.create

    async def create(container_id: str, *args: Any, **kw: Any) -> None:
        ids.append(container_id)
        await real_create(container_id, *args, **kw)

    rt.create = create  # type: ignore[method-assign]
    try:
        return await rt.probe(work, rootfs), ids
    finally:
        del rt.create  # type: ignore[attr-defined]


def probe_leftovers(ids: list[str]) -> list[Path]:
    """Cgroup directories of those probe containers still there, in any hierarchy."""
    return [p for cid in ids for p in Path("/sys/fs/cgroup").glob(f"*/asyncdock/{cid}")]


def read_all(fd: int) -> str:
    chunks = []
    with os.fdopen(fd, "rb") as f:
        while data := f.read(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


async def read_line(fd: int) -> str:
    """One line from a pipe, without taking the fd over (the rest is read later)."""
    def read() -> str:
        buf = b""
        while not buf.endswith(b"\n"):
            c = os.read(fd, 1)
            if not c:
                break
            buf += c
        return buf.decode()
    async with asyncio.timeout(TIMEOUT):
        return await asyncio.to_thread(read)


async def wait_state(rt: OCIRuntime, cid: str, status: str) -> dict[str, object]:
    """Poll the runtime's state until it reports `status` (pause/resume are synchronous in
    both runtimes, so this normally answers at the first call)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            st = await rt.state(cid)
            assert st is not None
            if st["status"] == status:
                return st
            await asyncio.sleep(0.01)
