"""Container lifecycle, supervised by the asyncio core.

The engine runs containers detached through the OCI runtime (`create` + `start`) and, being the
child subreaper, becomes the parent of each container's init: it reaps it itself, so there is no
helper process per container. Every transition is saved atomically and published on the bus.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal as signal_mod
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import errors
from ..base.clock import within
from ..util.errtext import client_text, os_error_text
from ..util.fsflags import mark_topdir
from ..util.fstree import remove_tree
from ..base.ids import is_full_id, new_id, short_id
from ..util.tasks import TaskSet
from ..hostinfo import host_facts
from . import links as links_mod
from . import names as names_mod
from .backoff import next_delay
from .createplan import DaemonFacts, plan_create
from .deps import ContainerDeps
from .execstore import ExecStore
from .live import Live
from .models import RESTART_POLICIES, ContainerRecord, CreateRequest, HostConfig, MountPoint, State
from .resources import check_resources, check_update, update_resources
from .stdio import OutputHub
from .store import ContainerStore
from ..base.timefmt import ZERO_TIME, rfc3339nano

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10
# How long shutdown waits, in all, for the exits, the clean-ups after them and the reclaims of
# removed containers to finish before it cancels what is left.
SHUTDOWN_WAIT = 45.0


def parse_signal(value: str | int | None, default: int = signal_mod.SIGKILL) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, int):
        return value
    v = value.strip().upper()
    if v.isdigit():
        n = int(v)
        if n <= 0 or n > 64:
            raise errors.InvalidParameter(f"Invalid signal: {value}")
        return n
    if not v.startswith("SIG"):
        v = "SIG" + v
    sig = getattr(signal_mod, v, None)
    if sig is None:
        raise errors.InvalidParameter(f"Invalid signal: {value}")
    return int(sig)


class ContainerManager:
    def __init__(self, deps: ContainerDeps) -> None:
        self.settings = deps.settings
        self.bus = deps.bus
        self.images = deps.images
        self.runtimes = deps.runtimes
        self.snapshotter = deps.snapshotter
        self.networks = deps.networks
        self.volumes = deps.volumes
        self.logdrivers = deps.logdrivers
        self.exits = deps.exits
        self.leftovers = deps.leftovers
        self.clock = deps.clock
        host = host_facts()
        self.facts = DaemonFacts(
            default_runtime=deps.settings.default_runtime, runtimes=frozenset(deps.runtimes),
            log_drivers=deps.logdrivers, log_driver=deps.settings.log_driver, log_opts=deps.settings.log_opts,
            storage_driver=deps.settings.storage_driver, cpu_count=os.cpu_count() or 1,
            cgroup_v2=host.cgroup_version == "2", swap_limit=host.swap_limit)
        self.execs = ExecStore()  # the exec instances of its containers (moby keeps them in memory too)
        self.store = ContainerStore(deps.settings.data_root / "containers")
        self.bundles = deps.settings.exec_root / "bundles"
        self.bundles.mkdir(parents=True, exist_ok=True)
        mark_topdir(self.bundles)  # a bundle per container start (see util.fsflags)
        self._live: dict[str, Live] = {}
        # Supervision (monitors, restart timers, health checks, exec monitors), exit clean-ups
        # and reclaims: all of it, awaited or cancelled by shutdown.
        self._tasks = TaskSet("containers", clock=self.clock)
        self._cleanups: dict[str, asyncio.Task[Any]] = {}  # container id -> deferred cleanup
        self._reclaims: set[asyncio.Task[Any]] = set()  # snapshots of removed containers going
        from .seccomp import DefaultProfiles

        self.seccomp_profiles = DefaultProfiles()
        self._shutting_down = False
        self._backoff: dict[str, float] = {}

    # ---------------------------------------------------------------- helpers
    def live(self, rec: ContainerRecord) -> Live:
        lv = self._live.get(rec.id)
        if lv is None:
            lv = self._live[rec.id] = Live()
        return lv

    def get(self, ref: str) -> ContainerRecord:
        return self.store.get(ref)

    def counts(self) -> dict[str, int]:
        running = paused = 0
        total = 0
        for rec in self.store:
            total += 1
            if rec.state.paused:
                paused += 1
            elif rec.state.running:
                running += 1
        return {"total": total, "running": running, "paused": paused, "stopped": total - running - paused}

    def exec_ids(self, rec: ContainerRecord) -> list[str] | None:
        """For `ExecIDs` in container inspect (null when there are none, as Docker)."""
        if not rec.state.running:
            return None
        return [e.id for e in self.execs.for_container(rec.id)] or None

    def image_users(self, image_id: str) -> list[ContainerRecord]:
        return [r for r in self.store if r.image_id == image_id]

    def _attrs(self, rec: ContainerRecord, **extra: str) -> dict[str, str]:
        attrs = dict(rec.config.labels or {})
        attrs["image"] = rec.image
        attrs["name"] = rec.name.lstrip("/")
        attrs.update(extra)
        return attrs

    def publish(self, rec: ContainerRecord, action: str, **extra: str) -> None:
        """A `container` event of `rec` (its labels, image and name as attributes)."""
        self.bus.event("container", action, rec.id, self._attrs(rec, **extra), legacy_from=rec.image)

    def spawn(self, coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        """A background task of the supervisor (its task set: failures logged, cancelled and
        awaited at shutdown)."""
        return self._tasks.spawn(coro, name=name or coro.__qualname__)

    def defer_exit_cleanup(self, cid: str, coro: Any) -> None:
        """Run the cleanup of an exited container (rootfs mount, runtime state, cgroups) in the
        background; the next start of that container, its removal and the daemon's shutdown
        wait for it (exit_cleaned)."""
        task = self.spawn(_logged(coro, f"cleaning up after the exit of {short_id(cid)}"),
                          f"exit clean-up of {short_id(cid)}")
        self._cleanups[cid] = task

        def done(t: asyncio.Task[Any]) -> None:
            if self._cleanups.get(cid) is t:
                del self._cleanups[cid]
        task.add_done_callback(done)

    async def exit_cleaned(self, cid: str) -> None:
        task = self._cleanups.get(cid)
        if task is not None:
            await asyncio.shield(task)

    async def reclaimed(self) -> None:
        """Wait until the snapshots of removed containers are gone: the image layers under
        them can only go after (the image store asks before it removes layers)."""
        if self._reclaims:
            await asyncio.wait(set(self._reclaims))

    def _reclaim(self, cid: str, files: Path | None) -> None:
        """Give a removed container's disk back in the background: its files and, once the
        rootfs is unmounted, its snapshot. The container is already gone for every client
        (record, name, network and volumes); a crash before this ran leaves a renamed
        directory that the store's load() deletes and an active snapshot without a container,
        which recover() removes."""
        async def reclaim() -> None:
            if files is not None:
                try:
                    await asyncio.to_thread(remove_tree, files)
                except OSError as e:
                    # the snapshot goes on; the files are retried (and at the next start)
                    log.warning("cannot remove the files of removed container %s: %s",
                                short_id(cid), e)
                    await self.leftovers.run("files of removed containers",
                                                    self._purge_trash)
            await self.exit_cleaned(cid)
            try:
                await self.snapshotter.remove(cid)
            except errors.NotFound:
                pass

        task = self.spawn(_logged(reclaim(), f"giving back the disk of removed container {short_id(cid)}"),
                          f"reclaim of {short_id(cid)}")
        self._reclaims.add(task)
        task.add_done_callback(self._reclaims.discard)

    def _save(self, rec: ContainerRecord) -> None:
        self.store.save(rec)

    def save_state(self, rec: ContainerRecord) -> None:
        """Save a run-state transition (started, exited, restarting, paused, health): atomic but
        not fsynced. A daemon crash keeps the page cache, so the next start reads the new record
        or the old one; only a power loss may lose the transition, and recovery after a reboot
        rewrites every run state anyway (running -> exited 255). Two fsyncs fewer per start and
        per exit; what the user changed (create, rename, update, stop) stays durable.

        A failed write (a full disk) is logged and the transition goes on in memory: raising
        here would stop an exit from reaching its waiters (a `docker stop` would hang). The
        next save writes the whole record, and recovery fixes a stale run state at start."""
        try:
            self.store.save(rec, durable=False)
        except OSError as e:
            log.warning("cannot save the state of container %s (%s): %s", short_id(rec.id), rec.state.status,
                        errors.no_space(e) or e)

    # ---------------------------------------------------------------- create
    async def create(self, body: CreateRequest, name: str | None, *,
                     readonly_non_recursive: bool = False) -> ContainerRecord:
        """`docker create`: the record is the create plan's (createplan.py); around it, the I/O.
        Before it, the image resolved and the id and the name picked; after it, the checks that
        name other containers and networks, then the name reserved, the snapshot, network and
        mounts prepared, the record saved and the event published. `readonly_non_recursive`:
        its read-only binds are plain `ro`, as they were below API 1.44 (api/shapes.py)."""
        from ..images.resolve import image_not_found_message

        if not body.image:
            raise errors.InvalidParameter("Config.Image is empty")  # docker: "No command specified" comes later
        try:
            image = self.images.resolve(body.image)
        except errors.NotFound:
            raise errors.NotFound(image_not_found_message(body.image)) from None
        image_config = getattr(self.images.config(image), "config", None)
        cid = new_id()
        if name:
            full = names_mod.validate_name(name)
        else:
            full = names_mod.generate_name(self.store.name_taken, cid)
        rec = plan_create(body, image_config, image_id=image.id, cid=cid, name=full, now_ns=self.clock.time_ns(),
                          facts=self.facts, container_dir=self.store.dir(cid))
        hc = rec.host_config
        self._check_modes(hc)
        rec.links = links_mod.plan(rec, self.store.find)
        endpoints = body.networking_config.endpoints_config if body.networking_config else None
        self.networks.validate_mode(hc.network_mode, endpoints)
        self.store.reserve_name(full, cid)
        try:
            top = await self.images.ensure_layers(image)
            # The snapshot and the network record are independent writes (each fsynced): made
            # together. The container's own record comes last, so a crash never leaves a
            # record without its snapshot.
            results = await asyncio.gather(
                self.snapshotter.prepare(cid, top),
                self.networks.container_created(cid, full, hc.network_mode, endpoints, hc.extra_hosts),
                return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            try:
                if failed:
                    raise failed[0]
                rec.mounts = await self._prepare_mounts(rec, readonly_non_recursive)
                try:
                    await self.store.add(rec)
                except BaseException:
                    await self.volumes.container_removed(cid, rec.mounts, remove_anonymous=True)
                    raise
            except BaseException:
                await self.networks.container_removed(cid)
                if not isinstance(results[0], BaseException):
                    await self.snapshotter.remove(cid)
                raise
        except BaseException:
            self.store.release_name(full, cid)
            raise
        self.store.add_link_names(rec)
        self.publish(rec, "create")
        return rec

    async def _prepare_mounts(self, rec: ContainerRecord, readonly_non_recursive: bool = False) -> list[MountPoint]:
        """-v, --mount, the image's VOLUMEs and --volumes-from become mount points; new named or
        anonymous volumes get the image's content copied up (so the rootfs is mounted for that
        only when a volume is involved)."""
        hc, cfg = rec.host_config, rec.config
        volumes_from = []
        for ref in hc.volumes_from or []:
            name, _, mode = ref.partition(":")
            volumes_from.append((self.get(name).mounts, mode))
        needs_view = bool(cfg.volumes) or bool(volumes_from) or \
            any(not b.split(":", 1)[0].startswith("/") for b in hc.binds or []) or \
            any(m.type == "volume" for m in hc.mounts or [])
        kwargs: dict[str, Any] = dict(binds=hc.binds, mounts=hc.mounts, config_volumes=cfg.volumes,
                                      volumes_from=volumes_from, volume_driver=hc.volume_driver,
                                      readonly_non_recursive=readonly_non_recursive)
        if not needs_view:
            return await self.volumes.prepare_mounts(rec.id, **kwargs)
        mounts = await self.snapshotter.mounts(rec.id)
        async with self.volumes.copyup_view(rec.id, mounts) as view:
            return await self.volumes.prepare_mounts(rec.id, rootfs_view=view, **kwargs)

    def _check_modes(self, hc: HostConfig) -> None:
        """A container:<name> network, pid or ipc mode names a container that exists (the plan
        cannot tell: it sees no other container)."""
        for attr, label in (("network_mode", "network"), ("pid_mode", "pid"), ("ipc_mode", "ipc")):
            mode = getattr(hc, attr) or ""
            if mode.startswith("container:"):
                other = self.store.find(mode.split(":", 1)[1])
                if other is None:
                    raise errors.NotFound(f"No such container: {mode.split(':', 1)[1]}")

    # ---------------------------------------------------------------- start
    async def start(self, rec: ContainerRecord) -> None:
        lv = self.live(rec)
        async with lv.lock:
            if rec.state.paused:
                raise errors.Conflict("cannot start a paused container, try unpause instead")
            if rec.state.running:
                raise errors.NotModified()
            if lv.removing:
                raise errors.Conflict(f"container {rec.id} is marked for removal and cannot be started")
            # A start by the user resets the policy's count and back-off (Docker's
            # ResetRestartManager on containerStart).
            rec.restart_count = 0
            self._backoff.pop(rec.id, None)
            await self._start_locked(rec, lv)

    async def _start_locked(self, rec: ContainerRecord, lv: Live) -> None:
        from .launcher import LaunchError, launch

        if lv.restart_timer is not None and asyncio.current_task() is not lv.restart_timer:
            lv.restart_timer.cancel()
            lv.restart_timer = None
        rec.manually_stopped = False
        lv.hub = OutputHub() if lv.hub.closed else lv.hub
        await self.exit_cleaned(rec.id)  # the runtime must have forgotten the last run
        try:
            try:
                proc = await launch(self, rec, lv)
            except errors.EngineError as e:
                raise LaunchError(e, 128) from e
            except OSError as e:
                log.debug("starting %s", short_id(rec.id), exc_info=e)
                raise LaunchError(errors.SystemError_(f"failed to start container: {os_error_text(e)}"), 128) from e
        except LaunchError as e:
            # Every failed start in the log with its cause (the client may not be the one who
            # asked: a restart policy, a compose run).
            log.warning("container %s (%s): start failed: %s", short_id(rec.id), rec.name.lstrip("/"), e.message)
            rec.state.error = e.message
            rec.state.exit_code = e.exit_code
            rec.state.status = "created" if not rec.has_been_started else "exited"
            self.save_state(rec)
            lv.hub.close()
            if rec.host_config.auto_remove:
                self.spawn(self._auto_remove(rec), f"auto-remove of {short_id(rec.id)}")
            raise e.error from None
        now = self.clock.time_ns()
        rec.state = State(status="running", running=True, pid=proc.pid, started_at=rfc3339nano(now),
                          finished_at=ZERO_TIME, health=None)
        rec.started_ns = now
        rec.has_been_started = True
        from .health import HealthMonitor, effective

        check = effective(rec.config.healthcheck)
        if lv.health is not None:
            lv.health.stop()
            lv.health = None
        if check is not None:
            lv.health = HealthMonitor(self, rec, check)
            lv.health.start()
        self.save_state(rec)
        lv.pid = proc.pid
        lv.started.set()
        lv.monitor = self.spawn(self._monitor(rec, lv, proc), f"monitor of {short_id(rec.id)}")
        self.publish(rec, "start")

    async def _monitor(self, rec: ContainerRecord, lv: Live, proc: Any) -> None:
        code = await asyncio.shield(proc.exit_future)
        if lv.health is not None:
            lv.health.stop()
            lv.health = None
        # Output may still be buffered in the pipes: drain it, but never hang on a grandchild
        # that kept a copy of the fds (the pid namespace dies with its init, so it is short).
        if proc.output_done:
            await asyncio.wait(proc.output_done, timeout=2)
        from .launcher import teardown

        oom = await teardown(self, rec, proc)
        lv.hub.close()
        lv.started.clear()
        if lv.log_writer is not None:
            lv.log_writer.close()
            lv.log_writer = None
        if lv.stdin_w is not None:
            lv.stdin_w.close()
            lv.stdin_w = None
        now = self.clock.time_ns()
        health = rec.state.health
        rec.state = State(status="exited", exit_code=code, oom_killed=oom, started_at=rec.state.started_at,
                          finished_at=rfc3339nano(now), health=health)
        rec.finished_ns = now
        lv.pid = 0
        self.save_state(rec)
        if oom:
            self.publish(rec, "oom")
        self.publish(rec, "die", exitCode=str(code))
        for fut in lv.exit_waiters:
            if not fut.done():
                fut.set_result(code)
        lv.exit_waiters.clear()
        if self._shutting_down:
            return
        if rec.host_config.auto_remove and not lv.removing:
            self.spawn(self._auto_remove(rec), f"auto-remove of {short_id(rec.id)}")
        elif self._should_restart(rec, code):
            self._schedule_restart(rec, lv, now)

    # ---------------------------------------------------------------- restart policies
    def _should_restart(self, rec: ContainerRecord, code: int) -> bool:
        if rec.manually_stopped or self.live(rec).removing:
            return False
        pol = rec.host_config.restart_policy
        if pol.name in ("always", "unless-stopped"):
            return True
        if pol.name == "on-failure" and code != 0:
            return not pol.maximum_retry_count or rec.restart_count < pol.maximum_retry_count
        return False

    def _schedule_restart(self, rec: ContainerRecord, lv: Live, exited_ns: int) -> None:
        delay = next_delay(self._backoff.get(rec.id), (exited_ns - rec.started_ns) / 1e9)
        self._backoff[rec.id] = delay
        rec.state.restarting = True
        rec.state.status = "restarting"
        self.save_state(rec)

        async def later() -> None:
            await self.clock.sleep(delay)
            # From here the start is in flight: nobody cancels it (a cancel in the middle of a
            # launch would leak runtime state); stop/remove/shutdown set their flags and then
            # wait for the lock instead.
            lv.restart_timer = None
            async with lv.lock:
                if (rec.manually_stopped or lv.removing or self._shutting_down or rec.state.running
                        or not rec.state.restarting):
                    return
                rec.restart_count += 1
                try:
                    await self._start_locked(rec, lv)
                    self.publish(rec, "restart")
                except errors.EngineError as e:
                    log.warning("restart of %s failed: %s", short_id(rec.id), e)
                    rec.state.restarting = False
                    rec.state.status = "exited"
                    self.save_state(rec)

        lv.restart_timer = self.spawn(later(), f"restart of {short_id(rec.id)}")

    # ---------------------------------------------------------------- signals, stop, kill
    async def kill(self, rec: ContainerRecord, sig: int, ref: str | None = None) -> None:
        if not rec.state.running:
            raise errors.Conflict(f"Cannot kill container: {ref or rec.id}: Container {rec.id} is not running")
        stop_sig = parse_signal(rec.config.stop_signal, signal_mod.SIGTERM)
        if sig in (signal_mod.SIGKILL, stop_sig):
            rec.manually_stopped = True
        await self._signal(rec, sig)
        if sig == signal_mod.SIGKILL:
            await self._wait_exit(rec, 10)

    async def _signal(self, rec: ContainerRecord, sig: int) -> None:
        self.publish(rec, "kill", signal=str(sig))
        lv = self.live(rec)
        # With its own pid namespace, the init is the container: what the runtime's kill does
        # is one signal to it (SIGKILL takes the namespace's other processes with it), sent
        # here through the init's pidfd instead of a runtime process per kill. A shared pid
        # namespace needs the runtime's `kill --all`.
        if lv.pid and not rec.host_config.pid_mode and self.exits.send_signal(lv.pid, sig):
            return
        rt = self.runtimes[rec.runtime]
        try:
            await rt.kill(rec.id, sig, all_processes=sig == signal_mod.SIGKILL)
        except Exception as e:  # the process may have just exited; fall back to the pid
            if lv.pid:
                try:
                    os.kill(lv.pid, sig)
                except ProcessLookupError:
                    pass
            else:
                log.debug("kill %s: %s", short_id(rec.id), e)

    async def _wait_exit(self, rec: ContainerRecord, timeout: float | None) -> bool:
        if not rec.state.running:
            return True
        lv = self.live(rec)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        lv.exit_waiters.append(fut)
        try:
            # on the manager's clock: a stop's timeout is a wait on a period like the back-off
            await within(self.clock, timeout, asyncio.shield(fut))
            return True
        except TimeoutError:
            return False

    async def stop(self, rec: ContainerRecord, timeout: int | None, signal: str | None = None) -> None:
        """`signal` (API 1.42's parameter) overrides the container's stop signal."""
        lv = self.live(rec)
        if rec.state.restarting:
            rec.manually_stopped = True
            if lv.restart_timer is not None:
                lv.restart_timer.cancel()
                lv.restart_timer = None
            async with lv.lock:  # a policy start in flight completes (or gives up) first
                pass
            if not rec.state.running or rec.state.restarting:
                rec.state.restarting = False
                rec.state.status = "exited"
                rec.manually_stopped = True
                self._save(rec)
                self.publish(rec, "stop")
                return
        if not rec.state.running:
            raise errors.NotModified()
        rec.manually_stopped = True
        if timeout is None:
            timeout = rec.config.stop_timeout if rec.config.stop_timeout is not None else DEFAULT_STOP_TIMEOUT
        if rec.state.paused:
            await self._resume(rec)
        sig = parse_signal(signal or rec.config.stop_signal, signal_mod.SIGTERM)
        await self._signal(rec, sig)
        if not await self._wait_exit(rec, timeout if timeout >= 0 else None):
            await self._signal(rec, signal_mod.SIGKILL)
            await self._wait_exit(rec, 30)
        self.publish(rec, "stop")

    async def restart(self, rec: ContainerRecord, timeout: int | None, signal: str | None = None) -> None:
        try:
            await self.stop(rec, timeout, signal)
        except errors.NotModified:
            pass
        lv = self.live(rec)
        async with lv.lock:
            if not rec.state.running:
                # Docker's restart starts with resetRestartManager, as a user's start does
                rec.restart_count = 0
                self._backoff.pop(rec.id, None)
                await self._start_locked(rec, lv)
        self.publish(rec, "restart")

    # ---------------------------------------------------------------- update
    _UPDATABLE = {"CpuShares": "cpu_shares", "Memory": "memory", "NanoCpus": "nano_cpus",
                  "CpuPeriod": "cpu_period", "CpuQuota": "cpu_quota", "CpusetCpus": "cpuset_cpus",
                  "CpusetMems": "cpuset_mems", "MemoryReservation": "memory_reservation",
                  "MemorySwap": "memory_swap", "PidsLimit": "pids_limit", "BlkioWeight": "blkio_weight",
                  "CpuRealtimePeriod": "cpu_realtime_period", "CpuRealtimeRuntime": "cpu_realtime_runtime"}

    async def update(self, rec: ContainerRecord, body: dict[str, Any]) -> list[str] | None:
        """`POST /containers/{id}/update`: resources (applied to a running container through the
        runtime) and the restart policy, persisted (daemon/update.go)."""
        from .models import RestartPolicy

        lv = self.live(rec)
        hc = rec.host_config
        name = rec.name.lstrip("/")
        new = {attr: body[key] for key, attr in self._UPDATABLE.items() if body.get(key) not in (None, "", 0)}
        if body.get("PidsLimit") is not None and body.get("PidsLimit") != 0:
            new["pids_limit"] = body["PidsLimit"]

        def fail(msg: str) -> errors.EngineError:
            return errors.InvalidParameter(f"Cannot update container {rec.id}: {msg}")

        pol = body.get("RestartPolicy") or {}
        pol_name = pol.get("Name") or ""
        if pol_name:
            if pol_name not in RESTART_POLICIES:
                raise fail(f"invalid restart policy '{pol_name}'")
            if hc.auto_remove and pol_name != "no":
                raise fail("Restart policy cannot be updated because AutoRemove is enabled for the container")
        async with lv.lock:
            old = {attr: getattr(hc, attr) for attr in new}
            try:
                check_update(hc, new)
                for attr, v in new.items():
                    setattr(hc, attr, v)
                check_resources(hc, self.facts.cpu_count)  # the same checks as at create
            except errors.EngineError as e:
                for attr, v in old.items():
                    setattr(hc, attr, v)
                raise fail(e.message) from None
            if new and rec.state.running:
                try:
                    await self.runtimes[rec.runtime].update(rec.id, update_resources(hc))
                except Exception as e:
                    for attr, v in old.items():
                        setattr(hc, attr, v)
                    raise fail(client_text(e)) from None
            if pol_name:
                hc.restart_policy = RestartPolicy(pol_name, int(pol.get("MaximumRetryCount") or 0))
            self._save(rec)
        self.publish(rec, "update")
        log.debug("updated %s (%s)", short_id(rec.id), name)
        return None

    # ---------------------------------------------------------------- pause
    async def pause(self, rec: ContainerRecord) -> None:
        if not rec.state.running:
            raise errors.Conflict(f"Container {rec.id} is not running")
        if rec.state.paused:
            raise errors.Conflict(f"Container {rec.id} is already paused")
        await self.runtimes[rec.runtime].pause(rec.id)
        rec.state.paused = True
        rec.state.status = "paused"
        self.save_state(rec)
        self.publish(rec, "pause")

    async def unpause(self, rec: ContainerRecord) -> None:
        if not rec.state.paused:
            raise errors.Conflict(f"Container {rec.id} is not paused")
        await self._resume(rec)
        self.publish(rec, "unpause")

    async def _resume(self, rec: ContainerRecord) -> None:
        await self.runtimes[rec.runtime].resume(rec.id)
        rec.state.paused = False
        rec.state.status = "running" if rec.state.running else rec.state.status
        self.save_state(rec)

    # ---------------------------------------------------------------- wait
    async def wait(self, rec: ContainerRecord, condition: str) -> int:
        lv = self.live(rec)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        if condition == "removed":
            lv.removed_waiters.append(fut)
        elif condition == "next-exit":
            lv.exit_waiters.append(fut)
        elif condition in ("not-running", ""):
            if not rec.state.running and not rec.state.restarting:
                return rec.state.exit_code
            lv.exit_waiters.append(fut)
        else:
            raise errors.InvalidParameter(f"invalid condition: \"{condition}\"")
        return await fut

    # ---------------------------------------------------------------- remove, rename
    async def remove(self, rec: ContainerRecord, *, force: bool = False, volumes: bool = False) -> None:
        lv = self.live(rec)
        if lv.removing:
            raise errors.Conflict(f"removal of container {rec.id} is already in progress")
        if rec.state.paused and not force:
            raise errors.Conflict(f"You cannot remove a paused container {rec.id}. "
                                  "Unpause and then stop the container before attempting removal or force remove")
        if rec.state.restarting and not force:
            raise errors.Conflict(f"You cannot remove a restarting container {rec.id}. "
                                  "Stop the container before attempting removal or force remove")
        if rec.state.running and not force:
            raise errors.Conflict(f"You cannot remove a running container {rec.id}. "
                                  "Stop the container before attempting removal or force remove")
        lv.removing = True
        try:
            if lv.restart_timer is not None:
                lv.restart_timer.cancel()
                lv.restart_timer = None
            async with lv.lock:  # a policy start in flight completes (or gives up) first
                pass
            if rec.state.restarting and not rec.state.running:
                rec.state.restarting = False
                rec.state.status = "exited"
            if rec.state.running:
                rec.manually_stopped = True
                if rec.state.paused:
                    await self._resume(rec)
                await self._signal(rec, signal_mod.SIGKILL)
                if not await self._wait_exit(rec, 30):
                    raise errors.SystemError_(f"could not kill running container {rec.id}, cannot remove")
            if lv.monitor is not None and not lv.monitor.done():
                await asyncio.wait({lv.monitor}, timeout=30)
            await self._destroy(rec, lv, volumes=volumes)
        except BaseException:
            lv.removing = False
            raise

    async def _destroy(self, rec: ContainerRecord, lv: Live, *, volumes: bool = False) -> None:
        rec.state.status = "removing"
        driver = self.logdrivers.get(rec.host_config.log_config.type)
        if driver is not None:
            try:
                driver.remove(self.store.dir(rec.id), rec.id)
            except OSError:
                pass

        doomed = self.store.remove(rec)
        try:
            await self.networks.container_removed(rec.id)
            # anonymous volumes go with `rm -v` and with --rm, as Docker does
            await self.volumes.container_removed(
                rec.id, rec.mounts, remove_anonymous=volumes or rec.host_config.auto_remove)
        except Exception as e:
            log.warning("releasing networks/volumes of %s: %s", short_id(rec.id), e)
        self._reclaim(rec.id, doomed)
        self.execs.forget_container(rec.id)
        self._live.pop(rec.id, None)
        self.publish(rec, "destroy")
        for fut in lv.removed_waiters + lv.exit_waiters:
            if not fut.done():
                fut.set_result(rec.state.exit_code)

    async def _auto_remove(self, rec: ContainerRecord) -> None:
        if self.store.find(rec.id) is None:
            return
        try:
            await self.remove(rec, force=True)
        except errors.EngineError as e:
            log.debug("auto-remove of %s: %s", short_id(rec.id), e)

    async def rename(self, rec: ContainerRecord, new: str) -> None:
        if not new:
            raise errors.InvalidParameter("Neither old nor new names may be empty")
        full = names_mod.validate_name(new)
        old = rec.name
        if full == old:
            raise errors.Conflict("Renaming a container with the same name as its current name")
        self.store.reserve_name(full, rec.id)
        rec.name = full
        try:
            self._save(rec)
        except BaseException:
            rec.name = old
            self.store.release_name(full, rec.id)
            raise
        self.store.release_name(old, rec.id)
        self.store.drop_link_names(rec, old)  # they are /<name>/<alias>: they move with it
        self.store.add_link_names(rec)
        await self.networks.container_renamed(rec.id, full)
        self.publish(rec, "rename", oldName=old)

    async def remove_link(self, ref: str) -> None:
        """`docker rm --link /parent/alias` (moby rmLink): the parent forgets the link; a parent
        that runs keeps its /etc/hosts line until its next start, as in Docker."""
        self.store.get(ref)  # what the name names now: "No such container" otherwise
        parent_name, alias = links_mod.split_link_ref(ref)
        if not parent_name:
            raise errors.Conflict("Conflict, cannot remove the default link name of the container")
        full = links_mod.link_name(parent_name, alias)
        parent = self.store.find(parent_name)
        if parent is None:
            raise errors.NotFound(f"Cannot get parent {parent_name} for link name {full}")
        kept = [link for link in parent.links if link.alias != alias]
        if len(kept) != len(parent.links):
            before = parent.links
            parent.links = kept
            try:
                self._save(parent)
            except BaseException:
                parent.links = before
                raise
        self.store.drop_link_name(full)

    # ---------------------------------------------------------------- prune
    async def prune(self, filters: dict[str, list[str]]) -> tuple[list[str], int]:
        from ..base.filters import match_label

        until_ns = _until_filter(filters.get("until"))
        deleted: list[str] = []
        reclaimed = 0
        for rec in self.store:
            if rec.state.running or rec.state.paused or rec.state.restarting:
                continue
            if until_ns and rec.created_ns >= until_ns:
                continue
            labels = rec.config.labels or {}
            if "label" in filters and not match_label(labels, filters["label"]):
                continue
            if "label!" in filters and any(match_label(labels, [lab]) for lab in filters["label!"]):
                continue
            try:
                # dockerd sums the rw layers' SizeRw: file sizes, directories not counted
                reclaimed += await self.snapshotter.usage(rec.id, apparent=True)
            except Exception:
                pass
            try:
                await self.remove(rec)
                deleted.append(rec.id)
            except errors.EngineError:
                continue
        return deleted, reclaimed

    # ---------------------------------------------------------------- daemon start/stop
    async def recover(self) -> None:
        """After a clean stop nothing is running. After a crash, clean what the runtime, mounts
        and cgroups still hold, mark those containers exited (255, as Docker shows after such a
        loss) and apply restart policies."""
        from .launcher import cgroups_path, cleanup_leftovers, remove_cgroup_dirs

        records = self.store.load()
        leftovers = self.leftovers
        await leftovers.run("files of removed containers", self._purge_trash)

        async def runtime_leftovers() -> bool:
            await cleanup_leftovers(self, records)
            return True

        await leftovers.run("runtime state, mounts and bundles of the previous run",
                            runtime_leftovers)
        # a container whose record was unreadable keeps its writable layer (see store.load)
        await self._remove_orphan_snapshots({r.id for r in records} | self.store.unreadable)
        for rec in records:
            if rec.state.running or rec.state.paused:
                await asyncio.to_thread(_kill_leftover_processes, rec)
                await asyncio.to_thread(remove_cgroup_dirs, cgroups_path(rec))
        to_restart: list[ContainerRecord] = []
        for rec in records:
            if rec.host_config.auto_remove and rec.has_been_started:
                # --rm containers that were running when the daemon went away (Docker removes
                # them at restore too)
                rec.state.running = rec.state.paused = rec.state.restarting = False
                await self._destroy(rec, self.live(rec))
                continue
            if rec.state.running or rec.state.paused or rec.state.restarting:
                now = self.clock.time_ns()
                rec.state = State(status="exited", exit_code=255 if (rec.state.running or rec.state.paused) else rec.state.exit_code,
                                  started_at=rec.state.started_at, finished_at=rfc3339nano(now))
                rec.finished_ns = now
                self.save_state(rec)
                pol = rec.host_config.restart_policy.name
                if pol == "always" or (pol == "unless-stopped" and not rec.manually_stopped) or pol == "on-failure":
                    to_restart.append(rec)
            elif rec.host_config.restart_policy.name == "always" and rec.has_been_started and not rec.manually_stopped:
                to_restart.append(rec)
        for rec in to_restart:
            try:
                await self.start(rec)
            except errors.EngineError as e:
                log.warning("could not restart %s: %s", short_id(rec.id), e)

    async def _purge_trash(self) -> bool:
        return await asyncio.to_thread(self.store.purge_trash)

    async def _remove_orphan_snapshots(self, ids: set[str]) -> None:
        """Active snapshots named like a container that no longer exists: a removal the daemon
        did not finish (see _reclaim)."""
        snap = self.snapshotter
        for info in await snap.list():
            if info.kind == "active" and is_full_id(info.name) and info.name not in ids:
                log.info("removing the snapshot of removed container %s", short_id(info.name))
                try:
                    await snap.remove(info.name)
                except Exception as e:
                    log.warning("removing the snapshot of %s: %s", short_id(info.name), e)

    async def shutdown(self, timeout: float = SHUTDOWN_WAIT) -> None:
        """Stop the running containers (their policies kept for the next start), then let
        their exits be handled, the clean-ups after them (rootfs, cgroups, the runtime's state)
        and the reclaims of removed containers finish, for at most `timeout` seconds in all:
        what is pending then is logged by name and cancelled. Every other task of the manager
        (health checks, exec monitors, restart timers) is cancelled; all of them are awaited."""
        self._shutting_down = True
        for lv in list(self._live.values()):
            if lv.restart_timer is not None:
                lv.restart_timer.cancel()
                lv.restart_timer = None
        for lv in list(self._live.values()):
            async with lv.lock:  # starts in flight complete first, then they are stopped below
                pass
        running = [r for r in self.store if r.state.running]

        async def stop_one(rec: ContainerRecord) -> None:
            try:
                await self.stop(rec, None)
                # Docker keeps the policy for the next start: not a manual stop
                rec.manually_stopped = False
                self._save(rec)
            except errors.EngineError:
                pass
            except Exception as e:
                full = errors.no_space(e)
                if full is not None:  # the host's state, not a bug: no traceback
                    log.warning("stopping %s at shutdown: %s", short_id(rec.id), full)
                else:
                    log.exception("stopping %s at shutdown", short_id(rec.id))

        if running:
            await asyncio.gather(*(stop_one(r) for r in running))
        deadline = self.clock.monotonic() + timeout
        # A monitor that ends defers its exit's clean-up: asked again until nothing is owed.
        while owed := self._owed_at_shutdown():
            late = await self._tasks.wait(owed, max(0.0, deadline - self.clock.monotonic()))
            if late:
                log.warning("shutdown: still pending after %gs, cancelled: %s", timeout,
                            ", ".join(sorted(t.get_name() for t in late)))
                break
        await self._tasks.close()

    def _owed_at_shutdown(self) -> set[asyncio.Task[Any]]:
        """What shutdown lets finish: the exits' monitors, the clean-ups after them and the
        reclaims of removed containers."""
        owed = {lv.monitor for lv in self._live.values() if lv.monitor is not None}
        owed.update(self._cleanups.values())
        owed.update(self._reclaims)
        return {t for t in owed if not t.done()}


def _kill_leftover_processes(rec: ContainerRecord) -> None:
    """Processes of a container that was running when the daemon died and that the runtime's
    delete did not take with it (the runtime lost its state in the crash): killed, and waited
    for (boundedly) so that the cgroups can go."""
    from ..runtime.cgroups import cgroup_pids, kill_cgroup_processes
    from .launcher import cgroups_path

    path = cgroups_path(rec)
    if not kill_cgroup_processes(path):
        return
    log.info("killed the processes of %s left by a previous run", short_id(rec.id))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not cgroup_pids(path, nested=True):
            return
        time.sleep(0.02)  # the kernel takes a moment to reap a killed task out of its cgroup
    log.warning("processes of %s left by a previous run did not exit", short_id(rec.id))


def _until_filter(values: list[str] | None) -> int:
    if not values:
        return 0
    from ..base.timefmt import parse_timestamp_filter  # noqa: PLC0415

    return parse_timestamp_filter(values[-1])


async def _logged(coro: Any, what: str) -> None:
    try:
        await coro
    except Exception as e:
        log.warning("%s: %s", what, e)


if TYPE_CHECKING:
    from .supervisor import Supervisor

    def _supervises(mgr: ContainerManager) -> Supervisor:
        """For mypy: the manager is the Supervisor its helpers are typed against."""
        return mgr
