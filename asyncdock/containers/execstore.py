"""The exec instances of the containers: what `docker exec` created (its config and, once
started, its process's state), kept in memory as moby keeps them. The operations on them are in
exec.py."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..base import errors
from .stdio import OutputHub

KEEP_FINISHED_NS = 5 * 60 * 1_000_000_000  # exited execs are forgotten after 5 minutes


class ExecConfig(msgspec.Struct, rename="pascal"):
    user: str = ""
    privileged: bool = False
    tty: bool = False
    attach_stdin: bool = False
    attach_stderr: bool = False
    attach_stdout: bool = False
    detach: bool = False
    detach_keys: str = ""
    env: list[str] | None = None
    working_dir: str = ""
    cmd: list[str] | None = None
    console_size: list[int] | None = None


class ExecStartConfig(msgspec.Struct, rename="pascal"):
    detach: bool = False
    tty: bool = False
    console_size: list[int] | None = None


@dataclass
class ExecInstance:
    id: str
    container_id: str
    config: ExecConfig
    created_ns: int = field(default_factory=time.time_ns)
    started: bool = False
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    finished_ns: int = 0
    hub: OutputHub = field(default_factory=OutputHub)
    stdin_w: asyncio.WriteTransport | None = None
    console: Any = None
    running_event: asyncio.Event = field(default_factory=asyncio.Event)
    done_event: asyncio.Event = field(default_factory=asyncio.Event)

    def inspect(self) -> dict[str, Any]:
        cmd = list(self.config.cmd or [])
        pc: dict[str, Any] = {"tty": self.config.tty, "entrypoint": cmd[0] if cmd else "",
                              "arguments": cmd[1:], "privileged": self.config.privileged}
        if self.config.user:
            pc["user"] = self.config.user
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "ProcessConfig": pc,
            "OpenStdin": self.config.attach_stdin, "OpenStderr": self.config.attach_stderr,
            "OpenStdout": self.config.attach_stdout, "CanRemove": False, "ContainerID": self.container_id,
            "DetachKeys": self.config.detach_keys, "Pid": self.pid,
        }


class ExecStore:
    """The exec instances of the container manager's containers (moby keeps them in memory too)."""

    def __init__(self) -> None:
        self._by_id: dict[str, ExecInstance] = {}

    def add(self, ex: ExecInstance) -> None:
        self._gc()
        self._by_id[ex.id] = ex

    def get(self, ref: str) -> ExecInstance:
        ex = self._by_id.get(ref)
        if ex is None:
            raise errors.NotFound(f"No such exec instance: {ref}")
        return ex

    def for_container(self, cid: str) -> list[ExecInstance]:
        return [e for e in self._by_id.values() if e.container_id == cid]

    def forget_container(self, cid: str) -> None:
        for e in self.for_container(cid):
            if not e.running:
                self._by_id.pop(e.id, None)

    def _gc(self) -> None:
        now = time.time_ns()
        for e in list(self._by_id.values()):
            if e.finished_ns and now - e.finished_ns > KEEP_FINISHED_NS:
                self._by_id.pop(e.id, None)
