"""Small helpers shared by the fixtures: polling with a deadline, free ports, child processes
that are always reaped (even when pytest dies between setup and teardown)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

# Polling interval of wait_until: short enough not to slow tests, long enough not to burn a core.
POLL_INTERVAL = 0.05


class WaitTimeout(TimeoutError):
    pass


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = POLL_INTERVAL,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` seconds pass.

    The tests' only way of waiting: never a fixed sleep, always a condition with a deadline.
    `on_timeout` may add diagnostics (a log tail) to the error.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}" + (f"\n{extra}" if extra else ""))
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. Only for servers we cannot hand a bound socket to
    (docker-registry); callers must retry on "address already in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


_live: set[subprocess.Popen[Any]] = set()
_live_lock = threading.Lock()


def spawn(cmd: Sequence[str], *, log: IO[Any] | None = None, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a long-running helper in its own session (so a Ctrl-C in the terminal reaches
    pytest, which then tears down in order, rather than every child at once)."""
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    with _live_lock:
        _live.add(proc)
    return proc


def terminate(proc: subprocess.Popen[Any], timeout: float = 15, sig: int = signal.SIGTERM) -> int:
    """Signal, wait up to `timeout`, then SIGKILL. Returns the exit status."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(timeout)
    finally:
        forget(proc)


def forget(proc: subprocess.Popen[Any]) -> None:
    with _live_lock:
        _live.discard(proc)


@atexit.register
def _reap_leftovers() -> None:
    # Last resort only: fixtures stop their processes at teardown; this catches an interpreter
    # that exits without running teardown.
    with _live_lock:
        procs = list(_live)
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
