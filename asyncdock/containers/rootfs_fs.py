"""Paths inside a container's root, resolved by the kernel from a directory fd of that root.

Every lookup is `openat2(root_fd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the
container's symlinks are followed as the container would follow them, `/` and `..` stop at its
root, and /proc magic links (a running container's /proc/1/root, say) are refused. What is
opened is then used only through fd-relative calls (`dir_fd=`, `follow_symlinks=False`), so
no symlink, rename or mount in the container can point an engine operation at a host file;
and no file of the container is ever parsed or executed (issue 12: a chrooted helper used to
load the image's NSS modules as host root).

For a running container the root fd is `/proc/<pid>/root`: resolution from it stays in the
container's mount namespace, so its volumes are seen as the container sees them.
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat

_SYS_OPENAT2 = 437  # the same number on every architecture (new syscalls are unified)

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS

_MAX_SYMLINKS = 40  # the kernel's limit, for the one walk done in Python (resolved_path)
_EAGAIN_RETRIES = 64  # openat2 says EAGAIN when a rename raced the walk: try again, a bounded number of times


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def openat2(dir_fd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """openat2(2); raises OSError like os.open. O_CLOEXEC is always added."""
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)) else 0, resolve)
    for _ in range(_EAGAIN_RETRIES):
        fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(raw or b"."),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), os.fsdecode(raw))
    raise OSError(errno.EAGAIN, "the path kept changing while it was resolved", os.fsdecode(raw))


def open_root(path: str | os.PathLike[str]) -> int:
    """An O_PATH fd of a container's root directory (the anchor of every lookup below)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH, *, follow: bool = True) -> int:
    """Open `path` (absolute or not: both are taken from the container's root) inside the root.
    `follow=False`: a symlink as last component is opened itself (with O_PATH) or refused."""
    if not follow:
        flags |= os.O_NOFOLLOW
    return openat2(root_fd, path or "/", flags)


def open_dir(root_fd: int, path: str) -> int:
    """A readable (listable, fchmod/futimens-able) fd of the directory `path` inside the root."""
    return open_in_root(root_fd, path, os.O_RDONLY | os.O_DIRECTORY)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def resolved_path(root_fd: int, path: str) -> str:
    """The container path `path` resolves to, every symlink followed as the container would
    (moby's FollowSymlinkInScope). Only for what is reported (a stat's linkTarget): every
    operation opens through openat2 instead, which cannot be raced."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        try:
            pfd = open_in_root(root_fd, "/" + "/".join(resolved), os.O_PATH | os.O_DIRECTORY)
        except OSError:
            resolved.append(part)  # nothing (or no directory) there: no symlink to follow
            continue
        try:
            st = lstat_at(pfd, part)
            if st is None or not stat.S_ISLNK(st.st_mode):
                resolved.append(part)
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(part, dir_fd=pfd)
        finally:
            os.close(pfd)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return "/" + "/".join(resolved)


def clean_member_name(name: str) -> str:
    """A tar member's name as a path relative to the extraction point ("." for the point
    itself), as moby cleans it; ValueError if it climbs out or holds a NUL."""
    if "\0" in name:
        shown = name.replace("\0", "\\0")
        raise ValueError(f"invalid tar member name \"{shown}\": it holds a NUL byte")
    stripped = name.lstrip("/")
    rel = posixpath.normpath(stripped) if stripped.strip("/") else "."
    if rel == ".." or rel.startswith("../"):
        raise ValueError(f"invalid tar member name {name!r}: it climbs out of the extraction point")
    return rel
