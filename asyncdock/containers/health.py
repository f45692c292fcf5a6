"""Health checks run by the engine, as Docker's daemon/health.go does.

One asyncio task per running container with a check: every Interval (every StartInterval while
the container is starting inside its StartPeriod) it runs the Test inside the container through the runtime's `exec` (a process.json derived from the container's own process:
same env, cwd, user, capabilities), records the result in `State.Health` (FailingStreak, the last
five results) and publishes `health_status: <status>` when the status changes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.clock import within
from ..util.errtext import client_text
from ..base.ids import short_id
from .models import Health, HealthLogEntry
from ..base.healthcheck import HealthConfig
from ..base.timefmt import rfc3339nano

if TYPE_CHECKING:
    from .supervisor import Supervisor
    from .models import ContainerRecord

log = logging.getLogger(__name__)

# Docker's defaults (api/types/container: DefaultHealthInterval etc.)
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096

STARTING, HEALTHY, UNHEALTHY = "starting", "healthy", "unhealthy"


def effective(hc: HealthConfig | None) -> HealthConfig | None:
    """The check to run, or None (no Test, or Test ["NONE"])."""
    if hc is None or not hc.test:
        return None
    if hc.test[0] == "NONE":
        return None
    return hc


def probe_argv(test: list[str]) -> list[str] | None:
    kind = test[0]
    if kind == "CMD":
        return list(test[1:]) or None
    if kind == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    # Docker treats a bare list as CMD (old API clients)
    return list(test) if kind not in ("NONE", "") else None


def _secs(ns: int, default: float) -> float:
    return ns / 1e9 if ns and ns > 0 else default


class HealthMonitor:
    def __init__(self, mgr: Supervisor, rec: ContainerRecord, cfg: HealthConfig) -> None:
        self.mgr = mgr
        self.rec = rec
        self.cfg = cfg
        self.interval = _secs(cfg.interval, DEFAULT_INTERVAL)
        self.timeout = _secs(cfg.timeout, DEFAULT_TIMEOUT)
        self.start_period = _secs(cfg.start_period, DEFAULT_START_PERIOD)
        self.start_interval = _secs(cfg.start_interval, DEFAULT_START_INTERVAL)
        self.retries = cfg.retries if cfg.retries > 0 else DEFAULT_RETRIES
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.rec.state.health = Health(status=STARTING)
        self.task = self.mgr.spawn(self._run(), f"health check of {short_id(self.rec.id)}")

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        clock = self.mgr.clock
        started = clock.monotonic()
        argv = probe_argv(list(self.cfg.test or []))
        if not argv:
            return
        while True:
            await clock.sleep(self._next_interval(clock.monotonic() - started))
            if not self.rec.state.running:
                return
            if self.rec.state.paused:
                continue
            start_ns = clock.time_ns()
            try:
                code, output = await self._probe(argv)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the probe itself could not run: a failure, as Docker
                log.debug("health probe of %s: %s", short_id(self.rec.id), e)
                code, output = -1, client_text(e)
            if not self.rec.state.running:
                return
            self._record(start_ns, code, output, in_start_period=clock.monotonic() - started < self.start_period)

    def _next_interval(self, elapsed: float) -> float:
        """The wait before the next probe, as moby's monitor chooses it: StartInterval while the
        container is still starting inside its StartPeriod, but never past the period's end
        (moby #52317: the regular schedule begins when the period does), Interval otherwise."""
        remaining = self.start_period - elapsed
        health = self.rec.state.health
        if remaining <= 0 or health is None or health.status != STARTING:
            return self.interval
        return min(self.start_interval, remaining)

    def _record(self, start_ns: int, code: int, output: str, *, in_start_period: bool) -> None:
        st = self.rec.state
        h = st.health or Health(status=STARTING)
        old = h.status
        h.log.append(HealthLogEntry(start=rfc3339nano(start_ns), end=rfc3339nano(self.mgr.clock.time_ns()),
                                    exit_code=code, output=output))
        del h.log[:-MAX_LOG_ENTRIES]
        if code == 0:
            h.failing_streak = 0
            h.status = HEALTHY
        elif not (in_start_period and h.status == STARTING):
            # failures inside the start period do not count while still starting
            h.failing_streak += 1
            if h.failing_streak >= self.retries:
                h.status = UNHEALTHY
        st.health = h
        self.mgr.save_state(self.rec)
        if h.status != old:
            self.mgr.publish(self.rec, f"health_status: {h.status}")

    async def _probe(self, argv: list[str]) -> tuple[int, str]:
        rec = self.rec
        mgr = self.mgr
        rt = mgr.runtimes[rec.runtime]
        bundle = mgr.bundles / rec.id
        process = _process_json(bundle, argv)
        tag = os.urandom(4).hex()
        pfile = bundle / f".health-{tag}.json"
        pid_file = bundle / f".health-{tag}.pid"
        pfile.write_text(json.dumps(process))
        proc = None
        try:
            proc = await asyncio.create_subprocess_exec(
                *rt.exec_argv(rec.id, pfile, pid_file=pid_file), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                out, _ = await within(mgr.clock, self.timeout, proc.communicate())
            except TimeoutError:
                await self._kill_exec(proc, pid_file)
                return -1, f"Health check exceeded timeout ({_fmt_secs(self.timeout)})"
            code = proc.returncode if proc.returncode is not None else -1
            if code < 0:
                code = 128 - code
            return code, out[:MAX_OUTPUT].decode(errors="replace")
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                try:
                    await self._kill_exec(proc, pid_file)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            raise
        finally:
            pfile.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)


    async def _kill_exec(self, proc: Any, pid_file: Path) -> None:
        """Kill the probe inside the container and let the runtime's exec (its parent) reap it
        and exit. Only if the relay does not go is it killed too; its orphaned probe is then
        re-parented to us (the subreaper) and must be reaped here: an unreaped zombie of the
        container's pid namespace would keep the container's init from ever finishing its exit."""
        pid = 0
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pid = 0
        try:
            await asyncio.wait_for(proc.wait(), 2)
            return
        except TimeoutError:
            pass
        fut = self.mgr.exits.watch(pid) if pid else None
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        if fut is not None:
            await asyncio.wait_for(asyncio.shield(fut), 5)


def _process_json(bundle: Path, argv: list[str]) -> dict[str, Any]:
    """The container's own process (env, cwd, user, capabilities, rlimits, no-new-privileges,
    apparmor) with the probe's argv and no terminal."""
    spec = json.loads((bundle / "config.json").read_text())
    process = dict(spec.get("process") or {})
    process["args"] = argv
    process["terminal"] = False
    process.pop("consoleSize", None)
    return process


def _fmt_secs(s: float) -> str:
    # Go's time.Duration String() for whole and fractional seconds ("30s", "1.5s", "500ms")
    if s >= 1:
        return f"{s:g}s"
    return f"{s * 1000:g}ms"
