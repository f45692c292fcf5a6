"""Files in and out of a container: docker cp (`GET/HEAD/PUT /containers/{id}/archive`) and
docker export, whose HTTP side is api/streams/archive.py.

docker cp works in the container's files as cpview.py mounts them for the time of a request
(its rootfs with its volumes, binds and /etc files, running or not, as Docker's view); docker
export in its rootfs alone (the run's mount, else its snapshot mounted). Everything is done in
the engine from a directory fd of that root, every path resolved by the kernel inside it
(rootfs_fs: openat2 RESOLVE_IN_ROOT), tar streams written and read by our own code with
numeric owners only (tarwrite, tarextract). There is no helper process and no chroot: a
chrooted helper that resolves user names loads the image's NSS modules as host root
(CVE-2019-14271's pattern, issue 12). Blocking work runs in worker threads, one bounded step
per hop, and a cancelled or failed transfer waits for its step before its fds are closed.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import posixpath
import stat as stat_mod
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..base import errors
from .cpview import container_files, covering_mount
from .models import ContainerRecord
from .rootfs_fs import open_dir, open_in_root, open_root, resolved_path
from ..base.timefmt import rfc3339nano
from .tarextract import BadArchive, ExtractFailed, extract
from ..util.tarwrite import tar_stream

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")

# Go's os.FileMode type bits
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27
_MODE_DEVICE = 1 << 26
_MODE_NAMED_PIPE = 1 << 25
_MODE_SOCKET = 1 << 24
_MODE_SETUID = 1 << 23
_MODE_SETGID = 1 << 22
_MODE_CHAR_DEVICE = 1 << 21
_MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    m = st_mode & 0o777
    if stat_mod.S_ISDIR(st_mode):
        m |= _MODE_DIR
    elif stat_mod.S_ISLNK(st_mode):
        m |= _MODE_SYMLINK
    elif stat_mod.S_ISBLK(st_mode):
        m |= _MODE_DEVICE
    elif stat_mod.S_ISCHR(st_mode):
        m |= _MODE_DEVICE | _MODE_CHAR_DEVICE
    elif stat_mod.S_ISFIFO(st_mode):
        m |= _MODE_NAMED_PIPE
    elif stat_mod.S_ISSOCK(st_mode):
        m |= _MODE_SOCKET
    if st_mode & stat_mod.S_ISUID:
        m |= _MODE_SETUID
    if st_mode & stat_mod.S_ISGID:
        m |= _MODE_SETGID
    if st_mode & stat_mod.S_ISVTX:
        m |= _MODE_STICKY
    return m


@contextlib.asynccontextmanager
async def container_root(mgr: Supervisor, rec: ContainerRecord, *,
                         for_export: bool = False) -> AsyncIterator[Path]:
    """The container's root for docker export. A container that is not running
    gets its snapshot mounted under the bundles directory (crash cleanup unmounts it), under
    the container's lock so that a start cannot race with the mount."""
    from ..snapshots.mount import is_mounted, mount, unmount

    lv = mgr.live(rec)
    if rec.state.running and lv.pid and not os.path.exists(f"/proc/{lv.pid}/root/"):
        # exited, not torn down yet: let the monitor finish, then it is a stopped container
        if lv.monitor is not None and not lv.monitor.done():
            await asyncio.wait({lv.monitor}, timeout=10)
    if rec.state.running and lv.pid:
        if for_export:
            rootfs = mgr.bundles / rec.id / "rootfs"
            if await asyncio.to_thread(is_mounted, rootfs):
                yield rootfs
                return
        else:
            yield Path(f"/proc/{lv.pid}/root")
            return
    async with lv.lock:
        # the rootfs of a run that just ended may still be mounted (an overlay's upper layer
        # cannot be mounted twice)
        await mgr.exit_cleaned(rec.id)
        target = mgr.bundles / f"{rec.id}-cp-{uuid.uuid4().hex[:8]}"
        mounts = await mgr.snapshotter.mounts(rec.id)
        target.mkdir(parents=True)
        try:
            await asyncio.to_thread(mount, mounts, target)
            try:
                yield target
            finally:
                await asyncio.to_thread(unmount, target)
        finally:
            with contextlib.suppress(OSError):
                target.rmdir()


def _split(path: str) -> tuple[str, str, str]:
    """moby's ResolvePath: absolute path (trailing `/` or `/.` kept), its dir and base."""
    abs_path = posixpath.join("/", path)
    cleaned = posixpath.normpath(abs_path)
    if abs_path.endswith("/.") and cleaned != "/":
        abs_path = cleaned + "/."
    elif abs_path.endswith("/") and cleaned != "/":
        abs_path = cleaned + "/"
    else:
        abs_path = cleaned
    d, base = posixpath.split(abs_path)
    return abs_path, d, base


def stat_path(root_fd: int, path: str) -> dict[str, Any]:
    """moby's ContainerStatPath: the last component is not followed, unless the path ends in
    `/` (then it must be a directory)."""
    abs_path, d, base = _split(path)
    if base == "":
        fd = open_in_root(root_fd, abs_path, os.O_PATH | os.O_DIRECTORY)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
    else:
        pfd = open_in_root(root_fd, d, os.O_PATH | os.O_DIRECTORY)
        try:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)
    link_target = resolved_path(root_fd, abs_path) if stat_mod.S_ISLNK(st.st_mode) else ""
    name = posixpath.basename(abs_path.rstrip("/")) if abs_path not in ("/",) else "/"
    if abs_path.endswith("/."):
        name = "."
    return {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
            "mtime": rfc3339nano(st.st_mtime_ns), "linkTarget": link_target}


def _not_found(path: str, name: str) -> errors.NotFound:
    return errors.NotFound(f"Could not find the file {path} in container {name}")


def _reason(e: BaseException) -> str:
    """One line without host paths: an OSError's text without its file names."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# -- blocking work in worker threads -----------------------------------------------------------

async def _settle(fut: asyncio.Future[Any]) -> None:
    """Wait for a worker step that our caller no longer wants (a step is short and bounded):
    its fds must not be closed under it, nor a thread left running."""
    while not fut.done():
        try:
            await asyncio.wait({fut})
        except asyncio.CancelledError:
            continue
    if not fut.cancelled():
        fut.exception()  # retrieved: a failed step of a cancelled transfer is no news


async def _in_thread(fn: Callable[[], T]) -> T:
    fut = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await _settle(fut)
        raise


def _own_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run `fn` in a thread of its own: an upload waits on its client between chunks, and
    must not hold one of the shared executor's few workers meanwhile."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as e:  # handed to the loop, which re-raises it
            outcome = (False, e)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the daemon is exiting
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


class _Stepper:
    """A blocking generator of chunks, advanced one step per worker-thread hop."""

    def __init__(self, gen: Iterator[bytes]) -> None:
        self._gen = gen

    async def next(self) -> bytes | None:
        return await _in_thread(lambda: next(self._gen, None))


class _BodyFeed:
    """The request body as a blocking iterator for a worker thread: each chunk is fetched
    from the event loop on demand (so the client's upload is read only as fast as it is
    unpacked); abort() makes a waiting or later fetch fail at once."""

    class Aborted(Exception):
        pass

    def __init__(self, loop: asyncio.AbstractEventLoop, body: Any) -> None:
        self._loop = loop
        self._body = body
        self._lock = threading.Lock()
        self._aborted = False
        self._pending: concurrent.futures.Future[bytes] | None = None

    def chunks(self) -> Iterator[bytes]:
        while True:
            with self._lock:
                if self._aborted:
                    raise self.Aborted()
                fut = asyncio.run_coroutine_threadsafe(self._body.__anext__(), self._loop)
                self._pending = fut
            try:
                chunk = fut.result()
            except StopAsyncIteration:
                return
            except concurrent.futures.CancelledError:
                raise self.Aborted() from None
            finally:
                with self._lock:
                    self._pending = None
            yield chunk

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._pending is not None:
                self._pending.cancel()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._body.aclose()


def _export_entries(root_fd: int) -> Iterator[bytes]:
    """The whole root, its top-level entries named without a leading `./`."""
    fd = open_dir(root_fd, "/")
    try:
        names = sorted(e.name for e in os.scandir(fd))
        yield from tar_stream([(fd, n, n) for n in names])
    finally:
        os.close(fd)


def _get_entries(root_fd: int, path: str) -> Iterator[bytes]:
    abs_path, d, base = _split(path)
    if base == "":
        # "dir/" (or "/"): the directory, through a symlink if it is one, named as given
        fd = open_in_root(root_fd, abs_path, os.O_PATH | os.O_DIRECTORY)
        name, arc = ".", posixpath.basename(abs_path.rstrip("/")) or "."
    else:
        fd = open_in_root(root_fd, d, os.O_PATH | os.O_DIRECTORY)
        name = arc = base
    try:
        yield from tar_stream([(fd, name, arc)])
    finally:
        os.close(fd)


class TarCut(Exception):
    """A tar stream that failed after its first chunk. Once the head is out that can only cut the
    stream short (the client sees a truncated tar, as with dockerd): logged, never sent."""


class TarChunks:
    """A tar stream from a blocking generator: the first chunk made already (a failure at the
    start is still an error answer), the rest one worker-thread step per chunk."""

    def __init__(self, gen: Iterator[bytes], first: bytes, what: str) -> None:
        self._first: bytes | None = first
        self._stepper = _Stepper(gen)
        self._what = what

    def __aiter__(self) -> TarChunks:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            chunk = await self._stepper.next()
        except Exception as e:
            log.warning("%s failed: %s", self._what, _reason(e))
            log.debug("%s failed", self._what, exc_info=True)
            raise TarCut(self._what) from None
        if chunk is None:
            raise StopAsyncIteration
        return chunk


async def _open_root(root: Path) -> int:
    try:
        return await _in_thread(lambda: open_root(root))
    except OSError as e:
        # a running container that exited this instant
        raise errors.Conflict(f"cannot reach the container's files: {_reason(e)}") from None


class PathArchive:
    """A path in a container's root, found (`stat` is docker cp's answer to HEAD), to be archived."""

    def __init__(self, mgr: Supervisor, rec: ContainerRecord, root_fd: int, path: str, name_given: str,
                 stat: dict[str, Any]) -> None:
        self._mgr = mgr
        self._rec = rec
        self._root_fd = root_fd
        self._path = path
        self._name_given = name_given
        self.stat = stat

    @contextlib.asynccontextmanager
    async def tar(self) -> AsyncIterator[TarChunks]:
        """The path as a tar stream, its `archive-path` event sent (the caller's head goes out
        in the same step of the loop)."""
        path, rec = self._path, self._rec
        gen = _get_entries(self._root_fd, path)
        try:
            try:
                first = await _in_thread(lambda: next(gen, b""))
            except (FileNotFoundError, NotADirectoryError):
                raise _not_found(path, self._name_given) from None
            except Exception as e:
                log.debug("archive of %s failed", path, exc_info=True)
                raise errors.SystemError_(f"cannot archive {path}: {_reason(e)}") from None
            self._mgr.publish(rec, "archive-path")
            yield TarChunks(gen, first, f"archive of {path} in container {rec.id[:12]}")
        finally:
            gen.close()  # no step runs now (_in_thread waits for its step)


@contextlib.asynccontextmanager
async def path_archive(mgr: Supervisor, rec: ContainerRecord, path: str,
                       name_given: str) -> AsyncIterator[PathArchive]:
    """`path` in the container (docker cp out of it) for the time of a request; NotFound, naming
    the container as the client did (`name_given`), when nothing is there."""
    if not path:
        raise errors.InvalidParameter("path must not be empty")  # moby: "Bad parameters: ..."
    async with container_files(mgr, rec) as root:
        root_fd = await _open_root(root)
        try:
            try:
                info = await _in_thread(lambda: stat_path(root_fd, path))
            except (OSError, ValueError):
                raise _not_found(path, name_given) from None
            yield PathArchive(mgr, rec, root_fd, path, name_given, info)
        finally:
            os.close(root_fd)


def _check_writable(rec: ContainerRecord, resolved: str) -> None:
    """moby's checkWritablePath, on the extraction point with its symlinks resolved: a read-only
    mount refuses, a writable one takes it even on a read-only rootfs (both 400s, as Docker 29)."""
    mp = covering_mount(rec.mounts, resolved)
    if mp is not None:
        if not mp.rw:
            raise errors.InvalidParameter("mounted volume is marked read-only")
        return
    if rec.host_config.readonly_rootfs:
        raise errors.InvalidParameter("container rootfs is marked read-only")


async def put_archive(mgr: Supervisor, rec: ContainerRecord, path: str, name_given: str,
                      body: AsyncGenerator[bytes, None], *, no_overwrite: bool) -> None:
    """Unpack the tar `body` into the directory `path` of the container (docker cp into it),
    reading `body` only as fast as it is unpacked."""
    if not path:
        raise errors.InvalidParameter("path must not be empty")
    async with container_files(mgr, rec) as root:
        abs_path = posixpath.normpath(posixpath.join("/", path))
        root_fd = await _open_root(root)
        feed = _BodyFeed(asyncio.get_running_loop(), body)
        try:
            def dest() -> tuple[int, str]:
                fd = open_in_root(root_fd, abs_path, os.O_PATH)
                try:
                    return os.fstat(fd).st_mode, resolved_path(root_fd, abs_path)
                finally:
                    os.close(fd)

            try:
                mode, resolved = await _in_thread(dest)
            except (OSError, ValueError):
                raise _not_found(path, name_given) from None
            if not stat_mod.S_ISDIR(mode):
                raise errors.InvalidParameter("extraction point is not a directory")
            _check_writable(rec, resolved)
            fut = _own_thread(lambda: extract(root_fd, abs_path, feed.chunks(), no_overwrite=no_overwrite),
                              f"archive-put-{rec.id[:12]}")
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                feed.abort()
                await _settle(fut)
                raise
            except BadArchive as e:
                raise errors.InvalidParameter(str(e)) from None
            except ExtractFailed as e:
                raise errors.SystemError_(str(e)) from None
            except _BodyFeed.Aborted:
                raise asyncio.CancelledError from None
            except Exception as e:
                log.debug("extraction into %s failed", abs_path, exc_info=True)
                raise errors.SystemError_(f"extraction into {abs_path} failed: {_reason(e)}") from None
        finally:
            await feed.aclose()
            os.close(root_fd)
    mgr.publish(rec, "extract-to-dir")


@contextlib.asynccontextmanager
async def exported(mgr: Supervisor, rec: ContainerRecord) -> AsyncIterator[TarChunks]:
    """The container's whole root as a tar stream (docker export); its `export` event once the
    caller is done with it and the root is released."""
    async with container_root(mgr, rec, for_export=True) as root:
        root_fd = await _open_root(root)
        try:
            gen = _export_entries(root_fd)
            try:
                try:
                    first = await _in_thread(lambda: next(gen, b""))
                except Exception as e:
                    log.debug("export of %s failed", rec.id, exc_info=True)
                    raise errors.SystemError_(f"cannot export container {rec.id[:12]}: {_reason(e)}") from None
                yield TarChunks(gen, first, f"export of container {rec.id[:12]}")
            finally:
                gen.close()
        finally:
            os.close(root_fd)
    mgr.publish(rec, "export")
