"""A container's files as docker cp sees them (moby's openContainerFS): its rootfs with its
volumes, bind mounts and /etc files mounted at their destinations, a private view of its own
under the bundles directory for the time of one request.

The same view for a running and a stopped container, as Docker's: the volumes and bind mounts
are host directories, reachable without the container's processes. What the container's run
mounts itself is not in it (/proc, /sys, /dev, its tmpfs mounts, mounts made inside it): a
tmpfs path shows the rootfs directory under it, which is Docker's documented behaviour for
docker cp, and a copy of `/` does not walk the container's procfs.

Every mount point is opened inside the view's root with openat2 RESOLVE_IN_ROOT (rootfs_fs),
made there when missing (as moby's createIfNotExists), and mounted onto through its fd
(snapshots.mount.bind_onto), so a symlink in the rootfs or in a volume places a mount where the
container would see it and never on the host.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import posixpath
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from ..base import errors
from ..snapshots.base import Mount
from .models import ContainerRecord, MountPoint
from .rootfs_fs import open_in_root, open_root

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)

_ETC_FILES = ("hostname", "hosts", "resolv.conf")


class ViewMount(msgspec.Struct, frozen=True):
    source: str  # host path
    destination: str  # container path, clean and absolute
    readonly: bool


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def _mount_point_fd(root_fd: int, dest: str, is_dir: bool) -> int:
    """An O_PATH fd of `dest` inside the root, its directories (and, for a file mount, an
    empty file) made where missing, each under an fd already resolved inside the root."""
    want = os.O_PATH | (os.O_DIRECTORY if is_dir else 0)
    with contextlib.suppress(FileNotFoundError):
        return open_in_root(root_fd, dest, want)
    parts = [p for p in dest.split("/") if p]
    fd = open_in_root(root_fd, "/", os.O_PATH | os.O_DIRECTORY)
    done = "/"
    try:
        for i, comp in enumerate(parts):
            nxt = posixpath.join(done, comp)
            last = i == len(parts) - 1
            try:
                nfd = open_in_root(root_fd, nxt, want if last else os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                if last and not is_dir:
                    os.close(os.open(comp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755, dir_fd=fd))
                else:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = open_in_root(root_fd, nxt, want if last else os.O_PATH | os.O_DIRECTORY)
            os.close(fd)
            fd, done = nfd, nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach(root: Path, mounts: Sequence[ViewMount]) -> list[int]:
    """Mount each of `mounts` in the view at `root` (parents before what they hold); the fds
    of the new mounts, for detach. Blocking."""
    from ..snapshots.mount import bind_onto, detach_mount, make_private

    make_private(root)
    root_fd = open_root(root)
    fds: list[int] = []
    try:
        for m in sorted(mounts, key=lambda m: _depth(m.destination)):
            try:
                is_dir = os.path.isdir(m.source)
                if not is_dir and not os.path.exists(m.source):
                    raise OSError(errno.ENOENT, "the mount's source is gone")
                tfd = _mount_point_fd(root_fd, m.destination, is_dir)
                try:
                    fds.append(bind_onto(m.source, tfd, readonly=m.readonly))
                finally:
                    os.close(tfd)
            except OSError as e:
                raise errors.SystemError_(f"cannot mount {m.destination} for the copy: {e.strerror or e}") from None
    except BaseException:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                detach_mount(fd)
        raise
    finally:
        os.close(root_fd)
    return fds


def detach(fds: list[int]) -> None:
    from ..snapshots.mount import detach_mount

    for fd in reversed(fds):
        try:
            detach_mount(fd)
        except OSError:
            log.warning("could not detach a docker cp mount", exc_info=True)


def etc_mounts(files_dir: Path, rec: ContainerRecord, taken: set[str]) -> list[ViewMount]:
    """The /etc files the engine binds into a run (Docker's network mounts), where they exist
    and no mount of the user's is at their place."""
    out = []
    for name in _ETC_FILES:
        src = files_dir / name
        if f"/etc/{name}" not in taken and src.is_file():
            out.append(ViewMount(str(src), f"/etc/{name}", rec.host_config.readonly_rootfs))
    return out


def covering_mount(mounts: Sequence[MountPoint], path: str) -> MountPoint | None:
    """The user mount that holds the container path `path` (symlinks resolved already): the
    deepest whose destination is `path` or one of its parents (moby's HasResource)."""
    best: MountPoint | None = None
    for mp in mounts:
        dest = posixpath.normpath(mp.destination)
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            if best is None or _depth(dest) > _depth(posixpath.normpath(best.destination)):
                best = mp
    return best


@contextlib.asynccontextmanager
async def _view(mgr: Supervisor, rec: ContainerRecord, base: list[Mount], target: Path) -> AsyncIterator[Path]:
    """`base` (the rootfs) mounted at `target`, the container's mounts attached onto it."""
    from ..snapshots.mount import mount, unmount
    from ..util.tasks import uncancellable

    ref = target.name
    user = [mp for mp in rec.mounts if mp.type in ("volume", "bind")]
    target.mkdir(parents=True)
    try:
        await asyncio.to_thread(mount, base, target)
        try:
            binds = await mgr.volumes.spec_binds(rec.id, user, ref=ref)
            try:
                wanted = [ViewMount(b.source, posixpath.normpath(b.destination), b.readonly) for b in binds]
                wanted += etc_mounts(mgr.store.dir(rec.id), rec, {m.destination for m in wanted})
                fds = await asyncio.to_thread(attach, target, wanted)
                try:
                    yield target
                finally:
                    # A request cancelled on its client's hang-up (api/http.py) may be cancelled
                    # again while it cleans up: each step runs to its end regardless, or the
                    # view's mounts stay behind.
                    await uncancellable(asyncio.to_thread(detach, fds))
            finally:
                await uncancellable(mgr.volumes.release_mounts(rec.id, user, ref=ref))
        finally:
            await uncancellable(asyncio.to_thread(unmount, target))
    finally:
        with contextlib.suppress(OSError):
            target.rmdir()


@contextlib.asynccontextmanager
async def container_files(mgr: Supervisor, rec: ContainerRecord) -> AsyncIterator[Path]:
    """The container's files with its mounts, for the time of a docker cp request. A running
    container's view binds its mounted rootfs; a stopped one's mounts its snapshot, under the
    container's lock so that a start cannot race with the mount. Crash clean-up unmounts what
    is left under the bundles directory."""
    from ..snapshots.mount import is_mounted

    lv = mgr.live(rec)
    if rec.state.running and lv.pid and not os.path.exists(f"/proc/{lv.pid}/root/"):
        # exited, not torn down yet: let the monitor finish, then it is a stopped container
        if lv.monitor is not None and not lv.monitor.done():
            await asyncio.wait({lv.monitor}, timeout=10)
    target = mgr.bundles / f"{rec.id}-cp-{uuid.uuid4().hex[:8]}"
    if rec.state.running and lv.pid:
        rootfs = mgr.bundles / rec.id / "rootfs"
        if await asyncio.to_thread(is_mounted, rootfs):
            async with _view(mgr, rec, [Mount("bind", str(rootfs), ("bind",))], target) as root:
                yield root
            return
        # no rootfs mount of ours to bind (a run we did not mount): its live root, as it sees it
        yield Path(f"/proc/{lv.pid}/root")
        return
    async with lv.lock:
        # the rootfs of a run that just ended may still be mounted (an overlay's upper layer
        # cannot be mounted twice)
        await mgr.exit_cleaned(rec.id)
        mounts = await mgr.snapshotter.mounts(rec.id)
        async with _view(mgr, rec, mounts, target) as root:
            yield root
