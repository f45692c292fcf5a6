"""Walking and removing directory trees of any depth, relative to directory fds.

Image layers and container files are the user's: a tree can be thousands of directories
deep. shutil.rmtree (Python 3.11) and os.walk recurse in Python, so such a tree raised
RecursionError, and path strings stop working past PATH_MAX (4096 bytes) anyway. The walk
here is a loop over an explicit stack of directories, each opened by name relative to its
parent's fd with O_NOFOLLOW: a symlink is an entry like any other, never a way out of the
tree. At most KEEP_OPEN + 2 fds are open whatever the depth: deeper levels are reached again
through ".." of the child, checked to be the very directory (device and inode) that was
descended through.

The tree must not change under the walk except by the caller's own removals (a container's
files after it stopped, a snapshot marked for removal): a directory moved away meanwhile
makes the walk fail rather than touch what is now elsewhere.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# Levels whose fd stays open for the whole walk; below them a directory keeps its fd only
# while it is the one being walked.
KEEP_OPEN = 32


class Entry(NamedTuple):
    """One entry of the tree. `dir_fd` (valid until the next entry is asked for) is the fd of
    the directory holding `name`. Directories come after everything in them (post-order),
    so a remover can rmdir them as they come; the top of the tree comes last."""

    dir_fd: int
    name: str
    st: os.stat_result | None  # None for a non-directory when the walk was told not to stat
    is_dir: bool


class _Frame:
    __slots__ = ("name", "st", "fd", "pending")

    def __init__(self, name: str, st: os.stat_result, fd: int | None) -> None:
        self.name = name
        self.st = st
        self.fd = fd
        self.pending: list[str] | None = None  # subdirectories not walked yet


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_dev == b.st_dev and a.st_ino == b.st_ino


def _open_parent(path: str | os.PathLike[str], dir_fd: int | None) -> tuple[int, str]:
    """(fd of the directory holding `path`, its last component). The components above the
    last are the caller's and may be symlinks (a data root under /var -> /srv, say)."""
    p = os.fspath(path)
    head, name = os.path.split(p.rstrip("/") or "/")
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "not a removable path", p)
    fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    return fd, name


def _open_dir(name: str, dir_fd: int, *, chmod: bool) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        if not chmod:
            raise
    # A directory without search permission (possible for a user without CAP_DAC_OVERRIDE):
    # give it to its owner, through an O_PATH fd so that a symlink is never chmod'ed through.
    pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            raise OSError(errno.ENOTDIR, "not a directory", name)
        os.chmod(f"/proc/self/fd/{pfd}", 0o700)
    finally:
        os.close(pfd)
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def walk(path: str | os.PathLike[str], *, dir_fd: int | None = None, chmod: bool = False,
         one_file_system: bool = True, stat_leaves: bool = True) -> Iterator[Entry]:
    """Every entry under and including `path`, post-order, without following symlinks.

    `chmod`: open directories the walk may not search by making them the owner's (for
    removal). `one_file_system`: a directory on another device (a mount point inside the
    tree) is an error (EXDEV), not a place to go: a remover must never empty a mounted volume.
    `stat_leaves=False`: non-directories come with st None, told apart by the directory
    entry's type (one fstatat a file fewer, for a remover). Raises FileNotFoundError when
    `path` does not exist."""
    top_parent, top_name = _open_parent(path, dir_fd)
    frames: list[_Frame] = []
    try:
        st = os.stat(top_name, dir_fd=top_parent, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            yield Entry(top_parent, top_name, st, False)
            return
        fd = _open_dir(top_name, top_parent, chmod=chmod)
        frames.append(_Frame(top_name, os.fstat(fd), fd))
        dev = frames[0].st.st_dev
        while frames:
            f = frames[-1]
            assert f.fd is not None
            if f.pending is None:
                f.pending = []
                leaves: list[tuple[str, os.stat_result | None]] = []
                # Read the whole directory before handing anything out: the caller may unlink
                # as entries come, and getdents over a directory being changed may skip some.
                with os.scandir(f.fd) as it:
                    for e in it:
                        try:
                            if stat_leaves:
                                est: os.stat_result | None = e.stat(follow_symlinks=False)
                                is_dir = stat.S_ISDIR(est.st_mode)  # type: ignore[union-attr]
                            else:
                                est, is_dir = None, e.is_dir(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        if is_dir:
                            f.pending.append(e.name)
                        else:
                            leaves.append((e.name, est))
                for name, est in leaves:
                    yield Entry(f.fd, name, est, False)
            if f.pending:
                name = f.pending.pop()
                try:
                    cfd = _open_dir(name, f.fd, chmod=chmod)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    # replaced by a symlink or a file since the scan: a leaf after all
                    try:
                        lst = os.stat(name, dir_fd=f.fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield Entry(f.fd, name, lst, False)
                    continue
                cst = os.fstat(cfd)
                if one_file_system and cst.st_dev != dev:
                    os.close(cfd)
                    raise OSError(errno.EXDEV, "a mount point inside the tree", name)
                if len(frames) > KEEP_OPEN:
                    os.close(f.fd)
                    f.fd = None
                frames.append(_Frame(name, cst, cfd))
                continue
            # f is done: everything in it was handed out.
            frames.pop()
            if frames:
                parent = frames[-1]
                if parent.fd is None:
                    pfd = os.open("..", _DIR_FLAGS, dir_fd=f.fd)
                    if not _same(os.fstat(pfd), parent.st):
                        os.close(pfd)
                        raise OSError(errno.ESTALE, "directory moved during the walk", f.name)
                    parent.fd = pfd
                os.close(f.fd)
                f.fd = None
                yield Entry(parent.fd, f.name, f.st, True)
            else:
                os.close(f.fd)
                f.fd = None
                yield Entry(top_parent, top_name, f.st, True)
    finally:
        for f in frames:
            if f.fd is not None:
                os.close(f.fd)
        os.close(top_parent)


def _retrying_writable(op: str, name: str, dir_fd: int) -> None:
    fn = os.rmdir if op == "rmdir" else os.unlink
    try:
        fn(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        # a read-only directory (for a user the kernel checks permissions for): make it
        # writable, it goes next anyway
        os.fchmod(dir_fd, 0o700)
        try:
            fn(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def remove_tree(path: str | os.PathLike[str], *, dir_fd: int | None = None,
                missing_ok: bool = True) -> None:
    """Remove `path` and everything under it, whatever its depth, never following a symlink
    and never crossing into a mount point (EXDEV). A missing `path` is fine if `missing_ok`."""
    try:
        for e in walk(path, dir_fd=dir_fd, chmod=True, stat_leaves=False):
            _retrying_writable("rmdir" if e.is_dir else "unlink", e.name, e.dir_fd)
    except FileNotFoundError:
        # the walk itself skips what vanishes under it: only a missing top gets here
        if not missing_ok:
            raise


def remove_tree_quietly(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> bool:
    """remove_tree for best-effort cleanups: False (and the tree, or what is left of it, stays)
    on any error, which the caller logs or retries."""
    try:
        remove_tree(path, dir_fd=dir_fd)
    except OSError:
        return False
    return True


def disk_usage(path: Path | str, *, apparent: bool = False) -> int:
    """Bytes under `path` (not counting `path` itself), like du: allocated blocks (st_blocks),
    or st_size of everything but directories when `apparent`; each hard-linked inode once.
    A missing path is 0."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        top = os.stat(path, follow_symlinks=False)
        for e in walk(path, one_file_system=False):
            st = e.st
            assert st is not None
            if e.is_dir and (apparent or _same(st, top)):
                continue
            if st.st_nlink > 1 and not e.is_dir:
                k = (st.st_dev, st.st_ino)
                if k in seen:
                    continue
                seen.add(k)
            total += st.st_size if apparent else st.st_blocks * 512
    except FileNotFoundError:
        pass
    return total
