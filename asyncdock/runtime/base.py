"""The OCI runtime interface. Implementations (crun, runc) live in plugins/ and drive the
runtime's CLI: create/start/kill/delete/state/pause/resume/update/exec, with `--root` under the
engine's exec-root so that our state never mixes with another engine's.

Containers are created detached (`create` then `start`); the engine is the child subreaper, so
the container's init process becomes the engine's child once the runtime exits, and the engine
reaps it (see containers/reaper.py). No process per container stays behind.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec


class ProbeResult(msgspec.Struct, rename="pascal"):
    name: str
    path: str
    version: str = ""
    ok: bool = False
    # the "commit:" line of `<runtime> --version` (what Docker shows as the runtime's GitCommit)
    commit: str = ""
    error: str = ""
    # Seconds the probe container took from create to exit; shown by `docker info` / the bench.
    seconds: float = 0.0


class RuntimeError_(Exception):
    """A runtime command failed; `message` is what the runtime said (its last error line)."""

    def __init__(self, message: str, *, returncode: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode


@runtime_checkable
class OCIRuntime(Protocol):
    name: str
    path: str

    async def probe(self, work_dir: Path, rootfs: Path) -> ProbeResult:
        """Run a throw-away container (`/bin/true`-like) from `rootfs` to see that this runtime
        works on this host. Never raises; the result says why not."""
        ...

    async def create(self, container_id: str, bundle: Path, *, pid_file: Path,
                     stdio: tuple[int, int, int] | None = None,
                     console_socket: Path | None = None) -> None:
        """`<rt> create`: the init process waits at its exec fifo. `stdio` fds are handed to
        the runtime (and so to the container) when there is no terminal."""
        ...

    def prepare_spec(self, container_id: str, spec: dict[str, object]) -> None:
        """Adjust the OCI spec before the engine writes it to the bundle (e.g. crun's
        precompiled seccomp filter annotation)."""
        ...

    async def start(self, container_id: str) -> None: ...
    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None: ...
    async def delete(self, container_id: str, *, force: bool = False, exited: bool = False) -> None:
        """Forget a container. `exited`: its init is known to have exited and been reaped (by
        the engine, its subreaper), and the engine has removed its cgroups -- a runtime may
        take a shortcut then."""
        ...
    async def state(self, container_id: str) -> dict[str, object] | None: ...
    async def pause(self, container_id: str) -> None: ...
    async def resume(self, container_id: str) -> None: ...
    async def update(self, container_id: str, resources: dict[str, object]) -> None: ...
    async def list(self) -> list[str]: ...

    def close(self) -> None:
        """Undo whatever the runtime set up on the host; the engine calls it at shutdown."""
        ...

    def exec_argv(self, container_id: str, process_json: Path, *, pid_file: Path,
                  detach: bool = False, console_socket: Path | None = None) -> Sequence[str]:
        """argv of `<rt> exec --process FILE ...`: the engine spawns it with its own stdio."""
        ...
