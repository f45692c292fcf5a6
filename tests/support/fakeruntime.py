"""A fake OCI runtime: the OCIRuntime protocol in-process, without a kernel.

For unit tests of the container lifecycle (a supervisor, restart policies, stop timeouts)
that must run in milliseconds: no runtime binary, no namespaces, no cgroups, no processes.
What a real runtime does that such tests see is modelled, and the runtime conformance suite
(tests/conformance/test_runtime.py) runs against this class too, so its state transitions
and errors are checked against crun's and runc's:

- `create` writes the pid file (a made-up pid, never a real process) and keeps dups of the
  stdio fds it is given, as the runtime's child would; state "created". A behaviour may make
  it fail (nothing kept, as a real runtime cleans up its own failed create) or leave the pid
  file unwritten (a runtime that died between its create and the pid file).
- `start`: state "running"; the process's output is written to those fds, and a process whose
  behaviour says it exits does so (after `delay`, on the event loop). A behaviour may make it
  fail instead (the container stays "created", for the caller to delete).
- `kill`: the process's reaction to the signal (its `on_signal` handler), else the kernel's
  rule for the init of a pid namespace: SIGKILL ends it (exit code 137), every other signal
  without a handler is ignored.
- At the exit the stdio fds are closed (readers see EOF), the exit code is delivered to
  `watch(pid)` futures (what the engine's ExitWatcher gives for a real pid) and the state
  becomes "stopped" until `delete`.
- pause/resume/update/list/state/delete and the errors for an unknown id or a wrong state,
  as RuntimeError_ with one line, as the real runtimes say it.

Where it lives: tests/support, not asyncdock/runtime. It is a test double: the engine must
never be able to discover or select it (it is registered under no entry point), and the
engine's own lifecycle tests import it from here as they import every other test helper.

`in_kernel = False` is the capability the conformance suite reads to skip checks that need a
kernel (exec through `exec_argv`, cgroup files, real signals); real runtimes have no such
attribute and are taken to run in the kernel.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal as signal_mod
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asyncdock.runtime.base import ProbeResult, RuntimeError_

__all__ = ["Behaviour", "BehaviourFn", "FakeRuntime", "Handler", "run_until_killed"]

# Above any real pid_max (4194304), so a fake pid can never name a real process.
_FIRST_PID = 1 << 23


@dataclass(frozen=True)
class Behaviour:
    """What the fake container's init does once started.

    exit_code: exit by itself with this code (after `delay` seconds); None: run until a
      signal ends it.
    stdout, stderr: written to the container's stdio at start.
    on_signal: a handler per signal: a Handler, or just the exit code it exits with.
      Signals not listed get the kernel's rule for a pid namespace's init (only SIGKILL,
      exit code 137, ends it).
    create_error, start_error: the runtime's create (or start) fails with this message, as
      RuntimeError_; a failed create keeps nothing, a failed start leaves it "created".
    writes_pid_file: False: create succeeds but the pid file stays unwritten.
    """

    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    on_signal: Mapping[int, Handler | int] = field(default_factory=dict)
    delay: float = 0.0
    create_error: str | None = None
    start_error: str | None = None
    writes_pid_file: bool = True


@dataclass(frozen=True)
class Handler:
    """What the init does on a signal: write, then exit with `exit_code` (None: go on)."""

    exit_code: int | None
    stdout: bytes = b""
    stderr: bytes = b""


BehaviourFn = Callable[[str, dict[str, object]], Behaviour]


def run_until_killed(container_id: str, spec: dict[str, object]) -> Behaviour:
    """The default behaviour: every container runs until it is killed."""
    return Behaviour()


@dataclass
class _Container:
    id: str
    bundle: Path
    pid: int
    behaviour: Behaviour
    stdio: list[int]
    status: str = "created"
    created: float = field(default_factory=time.time)
    exit_code: int | None = None
    resources: dict[str, object] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    exit_at_resume: int | None = None


class FakeRuntime:
    """OCIRuntime without a kernel (see the module's docstring)."""

    in_kernel = False

    def __init__(self, *, name: str = "fake", root: Path | None = None,
                 behaviour: BehaviourFn = run_until_killed) -> None:
        self.name = name
        self.path = "fake-runtime"
        self.root = root  # taken as the plugins' factories take one; nothing is kept on disk
        self.behaviour = behaviour
        self._containers: dict[str, _Container] = {}
        self._pids = itertools.count(_FIRST_PID)
        self._waiters: dict[int, list[asyncio.Future[int]]] = {}
        self._exited: dict[int, int] = {}
        # what the tests may look at
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    # -- the exit side: what the engine's ExitWatcher gives for real pids ----------------

    def watch(self, pid: int) -> asyncio.Future[int]:
        """A future of `pid`'s exit code (ExitWatcher.watch's contract)."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if pid in self._exited:
            fut.set_result(self._exited[pid])
        else:
            self._waiters.setdefault(pid, []).append(fut)
        return fut

    async def wait(self, pid: int) -> int:
        return await self.watch(pid)

    def exit(self, container_id: str, code: int) -> None:
        """Make a running container's init exit now with `code` (a test's crash, an OOM)."""
        c = self._get(container_id)
        if c.status not in ("running", "paused"):
            raise RuntimeError_(f"container {container_id} is not running")
        self._exit(c, code)

    def _exit(self, c: _Container, code: int) -> None:
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        c.status, c.exit_code = "stopped", code
        self._close_stdio(c)
        self._exited[c.pid] = code
        for fut in self._waiters.pop(c.pid, []):
            if not fut.done():
                fut.set_result(code)

    @staticmethod
    def _write(c: _Container, stdout: bytes, stderr: bytes) -> None:
        if len(c.stdio) == 3:
            for fd, data in ((c.stdio[1], stdout), (c.stdio[2], stderr)):
                if data:
                    os.write(fd, data)  # a pipe: small writes never block

    @staticmethod
    def _close_stdio(c: _Container) -> None:
        for fd in c.stdio:
            try:
                os.close(fd)
            except OSError:
                pass
        c.stdio = []

    # -- plumbing -----------------------------------------------------------------------

    def _get(self, container_id: str) -> _Container:
        c = self._containers.get(container_id)
        if c is None:
            # runc's words
            raise RuntimeError_(f"container {container_id} does not exist")
        return c

    def _require(self, c: _Container, *statuses: str, action: str) -> None:
        if c.status not in statuses:
            raise RuntimeError_(f"cannot {action} container {c.id}: it is {c.status}")

    # -- OCIRuntime -----------------------------------------------------------------------

    async def probe(self, work_dir: Path, rootfs: Path) -> ProbeResult:
        return ProbeResult(name=self.name, path=self.path, version="0.0.0-fake", ok=True,
                           seconds=0.0001)

    def prepare_spec(self, container_id: str, spec: dict[str, object]) -> None:
        pass

    async def create(self, container_id: str, bundle: Path, *, pid_file: Path,
                     stdio: tuple[int, int, int] | None = None,
                     console_socket: Path | None = None) -> None:
        self.calls.append(("create", container_id))
        await asyncio.sleep(0)  # a real create is a subprocess: never synchronous
        if container_id in self._containers:
            raise RuntimeError_(f"container with id exists: {container_id}")
        try:
            spec = json.loads((Path(bundle) / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise RuntimeError_(f"cannot load the bundle's config.json: {e}") from None
        if console_socket is not None:
            raise RuntimeError_("the fake runtime has no terminals")
        behaviour = self.behaviour(container_id, spec)
        if behaviour.create_error is not None:
            raise RuntimeError_(behaviour.create_error)
        # The runtime's child keeps its own copies; the caller closes its ends after create.
        fds = [os.dup(fd) for fd in stdio] if stdio is not None else []
        c = _Container(id=container_id, bundle=Path(bundle), pid=next(self._pids),
                       behaviour=behaviour, stdio=fds)
        if behaviour.writes_pid_file:
            Path(pid_file).write_text(str(c.pid))
        self._containers[container_id] = c

    async def start(self, container_id: str) -> None:
        self.calls.append(("start", container_id))
        await asyncio.sleep(0)
        c = self._get(container_id)
        self._require(c, "created", action="start")
        b = c.behaviour
        if b.start_error is not None:
            raise RuntimeError_(b.start_error)
        c.status = "running"
        self._write(c, b.stdout, b.stderr)
        if b.exit_code is not None:
            code = b.exit_code
            c.timer = asyncio.get_running_loop().call_later(b.delay, self._timed_exit, c, code)

    def _timed_exit(self, c: _Container, code: int) -> None:
        c.timer = None
        if c.status == "running":
            self._exit(c, code)
        elif c.status == "paused":
            c.exit_at_resume = code  # a frozen process cannot exit: it does once thawed

    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None:
        self.calls.append(("kill", container_id))
        await asyncio.sleep(0)
        c = self._get(container_id)
        self._require(c, "created", "running", "paused", action="kill")
        sig = int(signal)
        if sig == 0:
            return
        if sig == signal_mod.SIGKILL:
            self._exit(c, 128 + sig)
            return
        if c.status != "running" or sig not in c.behaviour.on_signal:
            # No handler: ignored, as by a pid namespace's init. Created: the program (and
            # its handlers) is not running yet. Paused: frozen (delivery at resume is not
            # modelled).
            return
        handler = c.behaviour.on_signal[sig]
        if isinstance(handler, int):
            handler = Handler(handler)
        self._write(c, handler.stdout, handler.stderr)
        if handler.exit_code is not None:
            self._exit(c, handler.exit_code)

    async def delete(self, container_id: str, *, force: bool = False, exited: bool = False) -> None:
        self.calls.append(("delete", container_id))
        await asyncio.sleep(0)
        c = self._containers.get(container_id)
        if c is None:
            return  # idempotent, as CLIRuntime.delete
        if c.status != "stopped":
            # As runc and crun: a created container's init (still at its exec fifo) is killed
            # by a plain delete; a running or paused one only with force.
            if c.status != "created" and not force:
                raise RuntimeError_(f"cannot delete container {container_id} that is not "
                                    f"stopped: {c.status}")
            self._exit(c, 128 + signal_mod.SIGKILL)
        del self._containers[container_id]

    async def state(self, container_id: str) -> dict[str, object] | None:
        await asyncio.sleep(0)
        c = self._containers.get(container_id)
        if c is None:
            return None
        return {"ociVersion": "1.0.2", "id": c.id, "status": c.status,
                "pid": c.pid if c.status != "stopped" else 0, "bundle": str(c.bundle),
                "rootfs": str(c.bundle / "rootfs"),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c.created))}

    async def pause(self, container_id: str) -> None:
        self.calls.append(("pause", container_id))
        await asyncio.sleep(0)
        c = self._get(container_id)
        self._require(c, "running", action="pause")
        c.status = "paused"

    async def resume(self, container_id: str) -> None:
        self.calls.append(("resume", container_id))
        await asyncio.sleep(0)
        c = self._get(container_id)
        self._require(c, "paused", action="resume")
        c.status = "running"
        if c.exit_at_resume is not None:
            self._exit(c, c.exit_at_resume)

    async def update(self, container_id: str, resources: dict[str, object]) -> None:
        self.calls.append(("update", container_id))
        await asyncio.sleep(0)
        c = self._get(container_id)
        self._require(c, "created", "running", "paused", action="update")
        c.resources = {**c.resources, **resources}

    def resources(self, container_id: str) -> dict[str, object]:
        """What updates have set (a real runtime writes them to cgroup files)."""
        return dict(self._get(container_id).resources)

    async def list(self) -> list[str]:
        await asyncio.sleep(0)
        return list(self._containers)

    def close(self) -> None:
        self.closed = True

    def exec_argv(self, container_id: str, process_json: Path, *, pid_file: Path,
                  detach: bool = False, console_socket: Path | None = None) -> Sequence[str]:
        # No process to join: an exec needs a kernel (the suite skips it for in_kernel=False).
        raise RuntimeError_(f"the fake runtime cannot exec in container {container_id}")
