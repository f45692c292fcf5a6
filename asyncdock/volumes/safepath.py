"""A path inside a volume, pinned for a bind mount (`VolumeOptions.Subpath`, moby's safepath).

A volume is written by its containers, so any component of a subpath may be a symlink a
container planted, or may be swapped for one between a check and the mount. The subpath is
therefore resolved twice, as moby does: first with the host's symlink rules, only to refuse
(with moby's texts) a path that does not exist or that ends outside the volume; then the
resolved relative path is opened from an O_NOFOLLOW directory fd of the volume with
`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so that a symlink
or a `..` met now fails instead of being followed. What was opened is bind-mounted from
`/proc/self/fd/N` (the kernel binds the opened object itself, never a path looked up again)
onto a staging point under the engine's exec-root, and the staging point is what the OCI
runtime binds into the container. The caller unmounts the staging points once the runtime
has made its own bind (`unstage_all`), and at daemon start whatever a killed daemon left.

Blocking: run in a thread.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from pathlib import Path

from ..base import errors
from ..containers.rootfs_fs import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, openat2


def is_local(subpath: str) -> bool:
    """Go's filepath.IsLocal on Linux: not empty, not absolute, no `..` above its start."""
    if not subpath or subpath.startswith("/"):
        return False
    clean = posixpath.normpath(subpath)
    return clean != ".." and not clean.startswith("../")


def _go_errno_text(err: int) -> str:
    # Go's syscall.Errno strings are strerror's, starting lower-case
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def _not_accessible(path: str, cause: str) -> errors.NotFound:
    return errors.NotFound(f"cannot access path {path}: {cause}")


def _escapes(base: str, subpath: str) -> errors.InvalidParameter:
    return errors.InvalidParameter(f"path concatenation escapes the base directory, base: {base}, subpath: {subpath}")


def _evaluate(base: str, subpath: str) -> tuple[str, str]:
    """moby's evaluatePath: (the volume's real path, the subpath relative to it after every
    symlink is resolved). Only a check: nothing is opened through this result's symlinks."""
    try:
        real_base = os.path.realpath(base, strict=True)
    except FileNotFoundError as e:
        raise _not_accessible(base, f"lstat {e.filename}: {_go_errno_text(errno.ENOENT)}") from None
    except OSError as e:
        raise errors.SystemError_(f"error while resolving symlinks in base directory {base!r}: "
                                  f"{_go_errno_text(e.errno or errno.EIO)}") from None
    combined = posixpath.join(real_base, subpath)
    try:
        resolved = os.path.realpath(combined, strict=True)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise _not_accessible(combined, f"lstat {e.filename}: {_go_errno_text(e.errno or errno.ENOENT)}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _not_accessible(combined, f"lstat {e.filename}: {_go_errno_text(errno.ELOOP)}") from None
        raise errors.SystemError_(f"error while resolving symlinks in combined path {combined!r}: "
                                  f"{_go_errno_text(e.errno or errno.EIO)}") from None
    rel = posixpath.relpath(resolved, real_base)
    if not is_local(rel):
        raise _escapes(real_base, subpath)
    return real_base, rel


def _open_beneath(base: str, rel: str, subpath: str) -> int:
    """An O_PATH fd of `rel` under `base`, or moby's error: nothing on the way may be a
    symlink (a component swapped since _evaluate) or step out of `base`."""
    try:
        base_fd = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _not_accessible(base, _go_errno_text(e.errno or errno.EIO)) from None
    try:
        return openat2(base_fd, rel, os.O_PATH,
                       resolve=RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise _escapes(base, subpath) from None
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            raise _not_accessible(posixpath.join(base, rel), _go_errno_text(e.errno)) from None
        raise errors.SystemError_(f"openat2 {rel}: {_go_errno_text(e.errno or errno.EIO)}") from None
    finally:
        os.close(base_fd)


def stage(base: Path, subpath: str, target: Path) -> Path:
    """Bind-mount `subpath` of the volume at `base` onto `target` (a new path, created here as
    a directory or an empty file to match what it binds) and return `target`."""
    from ..snapshots.mount import mount
    from ..snapshots.base import Mount

    real_base, rel = _evaluate(str(base), subpath)
    fd = _open_beneath(real_base, rel, subpath)
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        target.parent.mkdir(parents=True, exist_ok=True)
        if is_dir:
            target.mkdir(mode=0o700)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        try:
            # no MS_REC: the subpath alone, as moby (the runtime's rbind then has nothing below it)
            mount([Mount("bind", f"/proc/self/fd/{fd}", ())], target)
        except BaseException:
            _remove_point(target)
            raise
    finally:
        os.close(fd)
    return target


def _remove_point(p: Path) -> None:
    # rmdir or unlink, never a recursive delete: a point still mounted (its unmount failed)
    # shows the volume's files
    with contextlib.suppress(OSError):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()


def unstage_all(where: Path) -> None:
    """Unmount the staging points in `where` (one directory per container: its points are its
    direct entries) and remove them and `where` itself."""
    from ..snapshots.mount import unmount_all_under

    if not where.exists():
        return
    unmount_all_under(where)
    for entry in where.iterdir():
        _remove_point(entry)
    with contextlib.suppress(OSError):
        where.rmdir()
