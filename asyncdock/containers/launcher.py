"""Turning a container record into a running process and back: rootfs mount, /etc files,
the OCI bundle, stdio pipes, `runtime create` + `start`; teardown after exit; cleanup after a
crash of the daemon."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..base import errors
from ..logs.base import DiscardingWriter, LogDriver
from ..runtime.base import OCIRuntime, RuntimeError_
from ..snapshots.base import Mount
from ..util.fstree import remove_tree_quietly, walk
from ..base.ids import short_id
from ..util.tasks import uncancellable
from .etcfiles import write_etc_files
from .links import NO_LINKS, at_start as links_at_start
from .models import ContainerRecord
from .stdio import open_stdio_pipes, start_stdio_pipes

if TYPE_CHECKING:
    from .live import Live
    from .supervisor import Supervisor
    from .spec import BindMount

log = logging.getLogger(__name__)


class LaunchError(Exception):
    """The container could not start; `error` is what the API answers, `exit_code` what the
    container records (127 for a missing executable, 126 when not executable, as Docker)."""

    def __init__(self, error: errors.EngineError, exit_code: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.message = error.message
        self.exit_code = exit_code


@dataclass
class Process:
    pid: int
    exit_future: asyncio.Future[int]
    output_done: list[asyncio.Future[None]] = field(default_factory=list)
    cgroups_path: str = ""


def cgroups_path(rec: ContainerRecord) -> str:
    parent = rec.host_config.cgroup_parent.rstrip("/") or "/asyncdock"
    if not parent.startswith("/"):
        parent = "/" + parent
    return f"{parent}/{rec.id}"


def _start_error(runtime: str, message: str) -> LaunchError:
    # runc's own messages already start with "runc create failed:"; crun's do not
    if not message.startswith(f"{runtime} create failed"):
        message = f"{runtime} create failed: {message}"
    text = f"OCI runtime create failed: {message}: unknown"
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return LaunchError(errors.InvalidParameter(text), 127)
    if "permission denied" in low:
        return LaunchError(errors.InvalidParameter(text), 126)
    return LaunchError(errors.SystemError_(text), 128)


async def launch(mgr: Supervisor, rec: ContainerRecord, lv: Live) -> Process:
    try:
        return await _launch(mgr, rec, lv)
    finally:
        # The runtime has bound the staged volume subpaths into the container (or failed):
        # their staging mounts on the host are no longer needed, as moby's setupMounts clean-up.
        try:
            await mgr.volumes.release_staging(rec.id)
        except OSError as e:
            log.warning("unmounting the subpath mounts of %s: %s", short_id(rec.id), e)


async def _launch(mgr: Supervisor, rec: ContainerRecord, lv: Live) -> Process:
    from ..snapshots.mount import is_mounted

    rt = mgr.runtimes[rec.runtime]
    bundle = mgr.bundles / rec.id
    rootfs = bundle / "rootfs"
    files_dir = mgr.store.dir(rec.id)
    rootfs.mkdir(parents=True, exist_ok=True)
    mounts = await mgr.snapshotter.mounts(rec.id)

    def ensure_rootfs() -> None:  # one thread hop for the check and the mount
        if not is_mounted(rootfs):
            _mount_rootfs(mounts, rootfs, rec.host_config.auto_remove)

    await asyncio.to_thread(ensure_rootfs)
    opened: list[int] = []
    created = False  # the runtime holds state for it: a failure from here on deletes that
    try:
        # The network side first: a published port already in use fails the start before the
        # runtime does anything (Docker's order).
        net = mgr.networks
        # the targets of legacy links must run on the default bridge (Docker's start errors)
        linked = links_at_start(rec, mgr.store.find, net.bridge_address, with_env=mgr.settings.legacy_link_env) \
            if rec.links else NO_LINKS
        sandbox = await net.container_start(rec.id)
        hc = rec.host_config
        await net.publish(rec.id, hc.port_bindings, rec.config.exposed_ports, hc.publish_all_ports)
        binds = await mgr.volumes.spec_binds(rec.id, rec.mounts)
        from .spec import ExecutableError

        def etc_files_and_spec() -> dict[str, Any]:  # one thread hop for both
            write_etc_files(rec, files_dir, net, linked.hosts)
            return _build_spec(mgr, rec, rootfs, files_dir, binds, sandbox.netns, linked.env)

        try:
            spec = await asyncio.to_thread(etc_files_and_spec)
        except ExecutableError as e:
            raise _start_error(rt.name, f"unable to start container process: {e.message}") from None
        rt.prepare_spec(rec.id, spec)
        (bundle / "config.json").write_bytes(msgspec.json.encode(spec))
        driver = mgr.logdrivers[rec.host_config.log_config.type]
        if rec.config.tty:
            return await _launch_tty(mgr, rec, lv, rt, bundle, files_dir, driver)
        # stdio: our ends are read by the pumps; the container's ends go to the runtime
        pipes = open_stdio_pipes(rec.config.open_stdin, opened)
        emit, pid_file = _open_log_and_pid_file(lv, rec, driver, files_dir, bundle)
        try:
            await rt.create(rec.id, bundle, pid_file=pid_file, stdio=pipes.child)
        except RuntimeError_ as e:
            raise _start_error(rt.name, e.message) from None
        created = True
        output_done, stdin = await start_stdio_pipes(pipes, opened, lv.hub, emit)
        if stdin is not None:
            lv.stdin_w = stdin
        pid = int(pid_file.read_text().strip())
        exit_future = mgr.exits.watch(pid)
        try:
            await rt.start(rec.id)
        except RuntimeError_ as e:
            raise _start_error(rt.name, e.message) from None
        return Process(pid, exit_future, output_done, cgroups_path(rec))
    except BaseException:
        if created:
            # a failed or cancelled start, or a pid file the runtime did not fill: its state
            # (and the container's init, if it got that far) must not outlive the start
            await _force_delete(rt, rec.id)
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass
        if lv.log_writer is not None:
            lv.log_writer.close()
            lv.log_writer = None
        await _release_net_and_volumes(mgr, rec)
        await _release_rootfs(mgr, rec)
        raise


def _mount_rootfs(mounts: list[Mount], rootfs: Path, throwaway: bool) -> None:
    """Mount the container's snapshot. A --rm container's writable layer is deleted with it,
    so its overlay is `volatile` (Linux 5.10+, as Podman does for --rm): no sync of the upper
    layer at unmount, which is on every such container's exit path. Plain mount where the
    kernel refuses the option."""
    from ..snapshots.mount import MountError, mount

    if throwaway and any(m.type == "overlay" for m in mounts):
        quick = [Mount(m.type, m.source, (*m.options, "volatile")) if m.type == "overlay" else m
                 for m in mounts]
        try:
            mount(quick, rootfs)
            return
        except MountError as e:
            if e.errno != errno.EINVAL:
                raise
    mount(mounts, rootfs)


def _open_log_and_pid_file(lv: Live, rec: ContainerRecord, driver: LogDriver, files_dir: Path,
                           bundle: Path) -> tuple[Callable[[str, list[bytes], int], None] | None, Path]:
    """Open the container's log writer (on `lv`, so teardown closes it) and clear the runtime's
    pid file; returns the pumps' log sink (None when the driver keeps nothing) and the pid
    file's path."""
    lv.log_writer = driver.open_writer(files_dir, rec.id, dict(rec.host_config.log_config.config or {}))
    writer = lv.log_writer
    pid_file = bundle / "init.pid"
    pid_file.unlink(missing_ok=True)
    if isinstance(writer, DiscardingWriter):
        return None, pid_file

    def emit(stream: str, lines: list[bytes], ts: int) -> None:
        writer.write_lines(stream, lines, ts)

    return emit, pid_file


async def _launch_tty(mgr: Supervisor, rec: ContainerRecord, lv: Live, rt: OCIRuntime, bundle: Path,
                      files_dir: Path, driver: LogDriver) -> Process:
    """`Tty`: the runtime makes the pty and sends us its master through the console socket; the
    output is raw (one stream), stdin goes to the master. Cleanup on failure is the caller's."""
    from .tty import ConsoleSocket, setup_console

    emit, pid_file = _open_log_and_pid_file(lv, rec, driver, files_dir, bundle)
    cs = ConsoleSocket()
    try:
        receiving = asyncio.ensure_future(cs.receive())
        try:
            await rt.create(rec.id, bundle, pid_file=pid_file, console_socket=cs.path)
            master = await asyncio.wait_for(receiving, 30)
        except RuntimeError_ as e:
            raise _start_error(rt.name, e.message) from None
        except (TimeoutError, asyncio.TimeoutError):
            await _force_delete(rt, rec.id)
            raise _start_error(rt.name, "the runtime sent no terminal on the console socket") from None
        except BaseException:
            await _force_delete(rt, rec.id)
            raise
        finally:
            if not receiving.done():
                receiving.cancel()
    finally:
        cs.close()
    try:
        console, output_done, stdin_transport = await setup_console(master, lv.hub, emit)
    except BaseException:
        await _force_delete(rt, rec.id)
        raise
    try:
        pid = int(pid_file.read_text().strip())
        exit_future = mgr.exits.watch(pid)
        await rt.start(rec.id)
    except BaseException as e:
        stdin_transport.close()
        await _force_delete(rt, rec.id)
        if isinstance(e, RuntimeError_):
            raise _start_error(rt.name, e.message) from None
        raise
    if rec.config.open_stdin:
        lv.stdin_w = stdin_transport
    else:
        stdin_transport.close()
    lv.console = console
    return Process(pid, exit_future, output_done, cgroups_path(rec))


def _build_spec(mgr: Supervisor, rec: ContainerRecord, rootfs: Path, files_dir: Path,
                binds: list[BindMount], netns: str, link_env: list[str] | None = None) -> dict[str, Any]:
    from .specinput import spec_input
    from .spec import build_spec

    return build_spec(spec_input(mgr, rec, rootfs, files_dir, cgroups_path(rec), binds=binds, netns=netns,
                                 link_env=link_env),
                      mgr.seccomp_profiles)


async def _release_net_and_volumes(mgr: Supervisor, rec: ContainerRecord) -> None:
    """The sandbox (netns, veths, port proxies) and the volume mounts of one run."""
    try:
        await mgr.networks.release(rec.id)
    except Exception as e:
        log.warning("releasing the network of %s: %s", short_id(rec.id), e)
    try:
        await mgr.volumes.release_mounts(rec.id, rec.mounts)
    except Exception as e:
        log.warning("releasing the volumes of %s: %s", short_id(rec.id), e)


async def _force_delete(rt: OCIRuntime, cid: str) -> None:
    try:
        await rt.kill(cid, 9, all_processes=True)
    except Exception:
        pass
    await _delete(rt, cid)


async def _delete(rt: OCIRuntime, cid: str, *, exited: bool = False) -> None:
    try:
        await rt.delete(cid, force=True, exited=exited)
    except Exception as e:
        # The runtime keeps its state for the container: the next daemon start's
        # cleanup_leftovers retries, but the user should see why it is still there.
        log.warning("deleting the runtime state of %s: %s", short_id(cid), e)


def _rootfs_released(mgr: Supervisor, rec: ContainerRecord) -> None:
    """Unmount the container's rootfs (nothing happens where it is not mounted) and remove its
    bundle. Blocking: run it in a thread."""
    from ..snapshots.mount import unmount

    bundle = mgr.bundles / rec.id
    unmount(bundle / "rootfs")
    remove_tree_quietly(bundle)


async def _release_rootfs(mgr: Supervisor, rec: ContainerRecord) -> None:
    await asyncio.to_thread(_rootfs_released, mgr, rec)


async def teardown(mgr: Supervisor, rec: ContainerRecord, proc: Process) -> bool:
    """After the init exited: was it an OOM kill (asked before the runtime's delete removes the
    cgroup), then network and volumes go -- what other containers may be waiting for (an
    address, a published port). The rootfs mount and bundle, the runtime's state and the cgroups
    go in the background (see release_after_exit). Returns OOMKilled."""
    from ..runtime.cgroups import oom_killed

    def oom_check() -> bool:
        try:
            return oom_killed(proc.cgroups_path)
        except OSError:
            return False

    rt = mgr.runtimes[rec.runtime]
    if rec.host_config.pid_mode:
        # Sharing another pid namespace: processes the init left behind survive it and may
        # still use the rootfs, so they are killed (and the state deleted) before it goes.
        oom = await asyncio.to_thread(oom_check)
        await _force_delete(rt, rec.id)
        mgr.defer_exit_cleanup(rec.id, asyncio.to_thread(remove_cgroup_dirs, proc.cgroups_path))
        await asyncio.gather(_release_net_and_volumes(mgr, rec), _release_rootfs(mgr, rec))
        return oom
    oom = oom_check()  # one read of a cgroup file: cheaper than a thread hop
    await _release_net_and_volumes(mgr, rec)
    mgr.defer_exit_cleanup(rec.id, release_after_exit(mgr, rec, rt, proc.cgroups_path))
    return oom


async def release_after_exit(mgr: Supervisor, rec: ContainerRecord, rt: OCIRuntime,
                             cgroups: str) -> None:
    """The rootfs mount and bundle, the cgroup directories, then the runtime's record of the
    exited container.

    Off the exit path, as Docker 20.10 reports the exit before its Cleanup: nothing the user
    waits for needs them gone. What does need them gone waits for this first (the next start
    of the container, its removal before its snapshot goes, a copy from the stopped
    container before it mounts the snapshot elsewhere). The kernel killed every process of the
    container's own pid namespace with its init, so there is no `kill --all` either. A crash
    before it ran is cleaned up at the next daemon start (cleanup_leftovers)."""
    # The cgroups before the runtime's record: a crash in between leaves the record, which the
    # next start's cleanup_leftovers hands to the runtime's delete (the crun plugin's delete
    # after an exit is the record's removal alone). A cancellation (a shutdown whose wait ran
    # out) must not skip the delete, nor cut it off halfway: a clean stop would leave the
    # runtime's state directory behind for the next start.
    try:
        results = await asyncio.gather(_release_rootfs(mgr, rec),
                                       asyncio.to_thread(remove_cgroup_dirs, cgroups),
                                       return_exceptions=True)
    finally:
        await uncancellable(_delete(rt, rec.id, exited=True))
    for r in results:
        if isinstance(r, BaseException):
            raise r


def remove_cgroup_dirs(cgroups_path: str) -> None:
    """The runtime's delete removes the container's cgroups; a kill during create or a crash may
    leave empty ones behind. Children first (a v1 directory can only go when it is empty)."""
    if not cgroups_path:
        return
    from ..runtime.cgroups import existing_cgroup_dirs

    try:
        dirs = existing_cgroup_dirs(cgroups_path)
    except OSError:
        return
    for d in dirs:
        # A container may nest cgroups as deep as it likes: an iterative walk, deepest first.
        try:
            for e in walk(d):
                if e.is_dir:
                    try:
                        os.rmdir(e.name, dir_fd=e.dir_fd)
                    except OSError:
                        pass
        except OSError:
            pass


async def cleanup_leftovers(mgr: Supervisor, records: list[ContainerRecord]) -> None:
    """What a crash left: runtime state (and processes), mounts and bundles."""
    from ..snapshots.mount import unmount_all_under

    for name, rt in mgr.runtimes.items():
        try:
            ids = await rt.list()
        except Exception as e:
            log.warning("listing %s containers: %s", name, e)
            continue
        for cid in ids:
            log.info("cleaning up %s container %s left by a previous run", name, short_id(cid))
            await _force_delete(rt, cid)
    await asyncio.to_thread(unmount_all_under, mgr.bundles)
    for d in mgr.bundles.iterdir() if mgr.bundles.exists() else ():
        if not remove_tree_quietly(d):
            log.warning("cannot remove the bundle %s left by a previous run; it is retried "
                        "at the next start", d)
