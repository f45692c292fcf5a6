"""Files in and out of a container: `GET/HEAD/PUT /containers/{id}/archive` (docker cp) and
`GET /containers/{id}/export`.

The container's root is its live root (`/proc/<pid>/root`, with its volumes and /etc files)
while it runs, else its snapshot mounted for the time of the request. Tar streams are made and
unpacked by a helper process chrooted into that root, as moby's chrootarchive does: whatever
symlinks the container holds, and whatever names the tar carries, nothing can reach the host.
Stat is done in the engine, resolving the path with the container's symlinks clamped at its
root (spec.resolve_in_rootfs) and never following the last component.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import posixpath
import stat as stat_mod
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .. import errors
from .models import ContainerRecord
from .spec import resolve_in_rootfs
from .status import rfc3339nano

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


# The helper, run as `python -c HELPER <mode> <root> ...`: everything it imports is imported
# before the chroot.
HELPER = r'''
import os, sys, tarfile, shutil, stat, pwd, grp, errno
mode, root = sys.argv[1], sys.argv[2]
os.chroot(root)
os.chdir("/")
def fail(msg, code=2):
    sys.stderr.write(msg)
    sys.stderr.flush()
    os._exit(code)
if mode == "get":
    dirpath, base, rebase = sys.argv[3], sys.argv[4], sys.argv[5]
    try:
        os.chdir(dirpath or "/")
        os.lstat(base)
    except OSError as e:
        fail("notfound:" + str(e.strerror))
    out = os.fdopen(1, "wb", buffering=1 << 16)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(base, arcname=rebase, recursive=True)
    out.flush()
elif mode == "export":
    out = os.fdopen(1, "wb", buffering=1 << 16)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(".")):
            tar.add(name, recursive=True)
    out.flush()
elif mode == "put":
    dest, no_overwrite = sys.argv[3], sys.argv[4] == "1"
    try:
        os.chdir(dest)
    except FileNotFoundError as e:
        fail("notfound:" + str(e.strerror))
    except NotADirectoryError:
        fail("notdir:extraction point is not a directory")
    here = os.getcwd()
    inp = os.fdopen(0, "rb", buffering=1 << 16)
    dirs = []
    with tarfile.open(fileobj=inp, mode="r|") as tar:
        for m in tar:
            name = os.path.normpath(m.name.lstrip("/")) if m.name.strip("/") else "."
            if name == ".." or name.startswith("../"):
                fail("bad:invalid tar member name %r: breakout" % m.name)
            if name == ".":
                continue
            m.name = name
            if m.islnk():
                link = os.path.normpath(m.linkname.lstrip("/"))
                if link == ".." or link.startswith("../"):
                    fail("bad:invalid hardlink %r -> %r: breakout" % (m.name, m.linkname))
                m.linkname = link
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                st = None
            except NotADirectoryError:
                st = None
            if st is not None:
                if no_overwrite and stat.S_ISDIR(st.st_mode) and not m.isdir():
                    fail("bad:cannot overwrite directory %r with non-directory %r" % ("/" + name, "/" + name))
                if no_overwrite and not stat.S_ISDIR(st.st_mode) and m.isdir():
                    fail("bad:cannot overwrite non-directory %r with directory %r" % ("/" + name, "/" + name))
                if not (stat.S_ISDIR(st.st_mode) and m.isdir()):
                    # replace, never write through what is there (a symlink, say)
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(name)
                    else:
                        os.unlink(name)
            parent = os.path.dirname(name)
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, 0o755, exist_ok=True)
            try:
                tar.extract(m, path="", set_attrs=True, numeric_owner=True,
                            **({"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}))
            except (OSError, tarfile.TarError) as e:
                fail("bad:" + str(e))
            if m.isdir():
                dirs.append(m)
    for m in reversed(dirs):
        try:
            os.utime(m.name, (m.mtime, m.mtime), follow_symlinks=False)
        except OSError:
            pass
else:
    fail("unknown mode")
'''


@contextlib.asynccontextmanager
async def container_root(mgr: Any, rec: ContainerRecord, *, for_export: bool = False) -> AsyncIterator[Path]:
    """The container's root for the time of an operation. A container that is not running
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
        mounts = await mgr.engine.snapshotter.mounts(rec.id)
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


def stat_path(root: Path, path: str) -> dict[str, Any]:
    abs_path, d, base = _split(path)
    resolved = resolve_in_rootfs(root, d)
    target = resolved / base if base else resolved
    st = os.lstat(target)
    link_target = ""
    if stat_mod.S_ISLNK(st.st_mode):
        full = resolve_in_rootfs(root, abs_path)
        rel = str(full.relative_to(root))
        link_target = "/" if rel == "." else "/" + rel
    name = posixpath.basename(abs_path.rstrip("/")) if abs_path not in ("/",) else "/"
    if abs_path.endswith("/."):
        name = "."
    return {"name": name, "size": st.st_size, "mode": go_file_mode(st.st_mode),
            "mtime": rfc3339nano(st.st_mtime_ns), "linkTarget": link_target}


def stat_header(info: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(info, separators=(",", ":")).encode()).decode()


def _not_found(path: str, name: str) -> errors.NotFound:
    return errors.NotFound(f"Could not find the file {path} in container {name}")


async def _helper(*args: str, stdin: int = subprocess.DEVNULL) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", HELPER, *args, stdin=stdin, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)


async def _stream_helper(proc: asyncio.subprocess.Process, out: Any) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    err_task = asyncio.ensure_future(proc.stderr.read())
    try:
        while True:
            chunk = await proc.stdout.read(1 << 16)
            if not chunk:
                break
            await out.write(chunk)
        await proc.wait()
    except BaseException:
        await _kill(proc)
        raise
    finally:
        err = await err_task
    if proc.returncode:
        raise errors.SystemError_(err.decode(errors="replace").strip().partition(":")[2] or "archive failed")


async def serve_archive_get(req: Any, rec: ContainerRecord) -> Any:
    from ..api.http import Response

    mgr = req.engine.containers
    path = req.query.get("path", "")
    if not path:
        raise errors.InvalidParameter("path must not be empty")  # moby: "Bad parameters: ..."
    name_given = req.match["id"]
    async with container_root(mgr, rec) as root:
        try:
            info = await asyncio.to_thread(stat_path, root, path)
        except OSError:
            raise _not_found(path, name_given) from None
        header = ("X-Docker-Container-Path-Stat", stat_header(info))
        if req.method == "HEAD":
            return Response(200, b"", content_type="application/json", headers=[header])
        abs_path, d, base = _split(path)
        if base == "":
            # "dir/" (or "/"): the directory, through a symlink if it is one, named as given
            d, base, rebase = abs_path, ".", posixpath.basename(abs_path.rstrip("/")) or "."
        else:
            rebase = base
        proc = await _helper("get", str(root), d, base, rebase)
        assert proc.stdout is not None
        first = await proc.stdout.read(1 << 16)
        if not first:
            await proc.wait()
            err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
            if err.startswith("notfound:"):
                raise _not_found(path, name_given)
            if proc.returncode:
                raise errors.SystemError_(err.partition(":")[2] or "archive failed")
        out = await req.stream(content_type="application/x-tar", headers=[header])
        mgr._event(rec, "archive-path")
        await out.write(first)
        await _stream_helper(proc, out)
    return out


async def serve_archive_put(req: Any, rec: ContainerRecord) -> Any:
    from ..api.http import empty_response

    mgr = req.engine.containers
    path = req.query.get("path", "")
    if not path:
        raise errors.InvalidParameter("path must not be empty")
    no_overwrite = req.arg_bool("noOverwriteDirNonDir")
    name_given = req.match["id"]
    if rec.host_config.readonly_rootfs:
        raise errors.Forbidden("container rootfs is marked read-only")
    async with container_root(mgr, rec) as root:
        abs_path = posixpath.normpath(posixpath.join("/", path))
        try:
            st = await asyncio.to_thread(os.stat, resolve_in_rootfs(root, abs_path))
        except OSError:
            raise _not_found(path, name_given) from None
        if not stat_mod.S_ISDIR(st.st_mode):
            raise errors.InvalidParameter("extraction point is not a directory")
        proc = await _helper("put", str(root), abs_path, "1" if no_overwrite else "0", stdin=subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        err_task = asyncio.ensure_future(proc.stderr.read())
        try:
            async for chunk in req.body_chunks():
                if proc.returncode is not None:
                    continue
                proc.stdin.write(chunk)
                try:
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.close()
            await proc.wait()
        except BaseException:
            await _kill(proc)
            raise
        err = (await err_task).decode(errors="replace").strip()
        if proc.returncode:
            kind, _, msg = err.partition(":")
            if kind == "notfound":
                raise _not_found(path, name_given)
            if kind in ("bad", "notdir"):
                raise errors.InvalidParameter(msg)
            raise errors.SystemError_(err or "extraction failed")
    mgr._event(rec, "extract-to-dir")
    return empty_response(200)


async def serve_export(req: Any, rec: ContainerRecord) -> Any:
    mgr = req.engine.containers
    async with container_root(mgr, rec, for_export=True) as root:
        proc = await _helper("export", str(root))
        out = await req.stream(content_type="application/octet-stream")
        await _stream_helper(proc, out)
    mgr._event(rec, "export")
    return out


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """The helper of a transfer that failed or was cancelled: gone before the error goes on."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
