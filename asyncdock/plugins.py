"""Plugin discovery through entry points. The core depends on these interfaces, never on a plugin.

Each plugin module exposes `plugin`: a `Registration` whose `factory(ctx)` builds the
implementation. Groups: asyncdock.runtimes, asyncdock.snapshotters, asyncdock.logdrivers,
asyncdock.networks, asyncdock.volumes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

RUNTIMES = "asyncdock.runtimes"
SNAPSHOTTERS = "asyncdock.snapshotters"
LOGDRIVERS = "asyncdock.logdrivers"
NETWORKS = "asyncdock.networks"
VOLUMES = "asyncdock.volumes"


@dataclass
class InitContext:
    """What a plugin gets to build itself: its own state directory and its options."""

    root: Path
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    kind: str
    id: str
    factory: Callable[[InitContext], Any]
    description: str = ""
    # Whether the plugin can work on this host, given the directory it would keep its state in
    # (blocking; None: always). The engine asks before it picks a default.
    usable: Callable[[Path], bool] | None = None


def discover(group: str) -> dict[str, Registration]:
    found: dict[str, Registration] = {}
    for ep in entry_points(group=group):
        reg = ep.load()
        if not isinstance(reg, Registration):
            raise TypeError(f"entry point {ep.name} in {group} is not a Registration")
        found[ep.name] = reg
    return found
