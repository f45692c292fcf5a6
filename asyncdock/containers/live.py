"""What the supervisor holds for a container only while the daemon runs: its lock, its output
hub, stdin, the exit and removal waiters, the monitor and restart tasks. Never saved: a new
daemon builds an empty one per container."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .stdio import OutputHub


@dataclass
class Live:
    """What exists only while the daemon runs: the process, its output, the waiters."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hub: OutputHub = field(default_factory=OutputHub)
    stdin_w: asyncio.WriteTransport | None = None
    stdin_queue: asyncio.Queue[bytes | None] | None = None
    exit_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    removed_waiters: list[asyncio.Future[int]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    monitor: asyncio.Task[None] | None = None
    restart_timer: asyncio.Task[None] | None = None
    removing: bool = False
    log_writer: Any = None
    pid: int = 0
    console: Any = None  # the pty master of a TTY container (containers/tty.py)
    health: Any = None  # health.HealthMonitor while a check runs
