"""What the container supervisor (manager.py) offers the modules it drives: the launcher, exec,
health checks, the spec input, attach, stats and archive take a `Supervisor`, never the
ContainerManager class itself, so that none of them imports the manager, which imports them (no
import cycle, and a test may hand them a small stand-in). ContainerManager satisfies it."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from ..base.clock import Clock
from ..snapshots.base import Snapshotter
from .deps import ContainerSettings, ExitWatch, LogDrivers, NetworkAttacher, RuntimeSet, VolumeMounter
from .execstore import ExecStore
from .live import Live
from .models import ContainerRecord
from .seccomp import DefaultProfiles
from .store import ContainerStore


class Supervisor(Protocol):
    settings: ContainerSettings
    store: ContainerStore
    bundles: Path  # <exec-root>/bundles: one OCI bundle per running container
    runtimes: RuntimeSet
    snapshotter: Snapshotter
    networks: NetworkAttacher
    volumes: VolumeMounter
    logdrivers: LogDrivers
    exits: ExitWatch
    clock: Clock
    execs: ExecStore
    seccomp_profiles: DefaultProfiles

    def get(self, ref: str) -> ContainerRecord: ...

    def live(self, rec: ContainerRecord) -> Live: ...

    def publish(self, rec: ContainerRecord, action: str, **extra: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]: ...

    def save_state(self, rec: ContainerRecord) -> None: ...

    def defer_exit_cleanup(self, cid: str, coro: Coroutine[Any, Any, Any]) -> None: ...

    async def exit_cleaned(self, cid: str) -> None: ...
