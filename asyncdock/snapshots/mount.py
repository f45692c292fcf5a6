"""Perform the mounts a snapshotter returns, and undo them. Blocking: callers run these in a thread.

The common case is one mount(2) call through ctypes (no fork/exec of mount(8): a container start
or a layer unpack does this on its hot path). Overlay option strings longer than one page (many
lower layers) cannot go through mount(2); for those we use the new mount API's `lowerdir+`
(Linux >= 6.8), and on older kernels moby's trick: relative lowerdirs from a common parent,
mounted by a child process whose cwd is that parent (chdir in a thread would move the whole
daemon's cwd).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from asyncdock.snapshots.base import Mount

log = logging.getLogger(__name__)

# <linux/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# option -> (clear?, flag); as containerd's mount_linux.go parseMountOptions
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# New mount API (syscall numbers are the same on every architecture for these).
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_SET_FLAG = 0
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
_AT_FDCWD = -100
_SYS_OPEN_TREE = 428
_SYS_MOUNT_SETATTR = 442
_OPEN_TREE_CLONE = 0x1
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
# MS_* flag -> MOUNT_ATTR_* for fsmount()
_ATTR_FOR_FLAG: tuple[tuple[int, int], ...] = (
    (MS_RDONLY, 0x1), (MS_NOSUID, 0x2), (MS_NODEV, 0x4), (MS_NOEXEC, 0x8),
    (MS_NOATIME, 0x10), (MS_STRICTATIME, 0x20), (MS_NODIRATIME, 0x80),
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# None until probed: does this kernel's overlay accept "lowerdir+" through fsconfig?
_lowerdir_plus: bool | None = None


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class MountError(OSError):
    """A mount or unmount failed; carries errno and the mount that failed."""


def _b(s: str | os.PathLike[str]) -> bytes:
    return os.fsencode(s)


def _raise_errno(what: str, target: str | os.PathLike[str]) -> None:
    err = ctypes.get_errno()
    raise MountError(err, f"{what}: {os.strerror(err)}", os.fspath(target))


def _parse(options: Iterable[str]) -> tuple[int, int, list[str]]:
    """Split mount(8)-style options into (flags, propagation flags, fs data options)."""
    flags = 0
    prop = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, f = _FLAGS[opt]
            flags = flags & ~f if clear else flags | f
        elif opt in _PROPAGATION:
            prop |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, prop, data


def mount(mounts: list[Mount], target: Path) -> None:
    """Mount each of `mounts` onto `target`, in order. On failure, undoes the ones already done."""
    done = 0
    try:
        for m in mounts:
            _mount_one(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            try:
                _umount2(target, MNT_DETACH)
            except OSError:
                log.warning("could not undo a partial mount at %s", target, exc_info=True)
        raise


def _mount_one(m: Mount, target: Path) -> None:
    flags, prop, data_opts = _parse(m.options)
    if m.type == "bind":
        flags |= MS_BIND  # the type says it even when the options do not
    data = ",".join(data_opts)
    if m.type == "overlay" and len(_b(data)) >= _PAGE_SIZE:
        _mount_long_overlay(m, target, flags, data_opts)
    else:
        fstype = "none" if flags & MS_BIND else m.type
        if _libc.mount(_b(m.source), _b(target), _b(fstype), flags, _b(data) if data else None) != 0:
            _raise_errno(f"mount {m.type} {m.source}", target)
    try:
        # A bind mount ignores MS_RDONLY (and the other per-mount flags) on creation: the kernel
        # only applies them on a remount of the bind.
        if flags & MS_BIND and flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC):
            rflags = MS_REMOUNT | MS_BIND | (flags & ~(MS_REC | MS_BIND))
            if _libc.mount(None, _b(target), None, rflags, None) != 0:
                _raise_errno("remount bind read-only", target)
        if prop and _libc.mount(None, _b(target), None, prop, None) != 0:
            _raise_errno("set mount propagation", target)
    except BaseException:
        # Never leave a half-configured mount (say, a bind that should have been read-only).
        _umount2(target, MNT_DETACH)
        raise


def _split_lowerdir(value: str) -> list[str]:
    """Split a lowerdir value on unescaped ':' (overlayfs lets paths escape ':' as '\\:')."""
    parts: list[str] = []
    cur: list[str] = []
    it = iter(value)
    for ch in it:
        if ch == "\\":
            cur.append(next(it, ""))
        elif ch == ":":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _mount_long_overlay(m: Mount, target: Path, flags: int, data_opts: list[str]) -> None:
    global _lowerdir_plus
    if _lowerdir_plus is not False:
        try:
            _mount_fsconfig(m, target, flags, data_opts)
            _lowerdir_plus = True
            return
        except MountError as e:
            # EINVAL on "lowerdir+" means an older kernel: remember and use the fallback. Other
            # errors on a kernel known to support it are real.
            if _lowerdir_plus is True or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                raise
            log.info("overlay lowerdir+ unavailable (%s); using relative lowerdirs", e)
            _lowerdir_plus = False
    _mount_relative(m, target, flags, data_opts)


def _syscall(nr: int, *args: object) -> int:
    # Variadic syscall(): pass every integer as a C long so the upper bits are defined.
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return int(_libc.syscall(ctypes.c_long(nr), *conv))


def _fs_messages(fd: int) -> str:
    """Read the error messages the kernel queued on an fs context (why fsconfig said EINVAL)."""
    msgs: list[str] = []
    os.set_blocking(fd, False)
    for _ in range(8):
        try:
            msgs.append(os.read(fd, 1024).decode(errors="replace").strip())
        except OSError:
            break
    return "; ".join(msgs)


def _mount_fsconfig(m: Mount, target: Path, flags: int, data_opts: list[str]) -> None:
    fsfd = _syscall(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC)
    if fsfd < 0:
        _raise_errno("fsopen overlay", target)
    try:
        def cfg(cmd: int, key: bytes | None, value: bytes | None, what: str) -> None:
            if _syscall(_SYS_FSCONFIG, fsfd, cmd, key, value, 0) < 0:
                err = ctypes.get_errno()
                raise MountError(err, f"{what}: {os.strerror(err)} {_fs_messages(fsfd)}".strip(),
                                 os.fspath(target))

        cfg(_FSCONFIG_SET_STRING, b"source", _b(m.source), "fsconfig source")
        for opt in data_opts:
            key, eq, value = opt.partition("=")
            if key == "lowerdir":
                for d in _split_lowerdir(value):
                    cfg(_FSCONFIG_SET_STRING, b"lowerdir+", _b(d), "fsconfig lowerdir+")
            elif eq:
                cfg(_FSCONFIG_SET_STRING, _b(key), _b(value), f"fsconfig {key}")
            else:
                cfg(_FSCONFIG_SET_FLAG, _b(key), None, f"fsconfig {key}")
        cfg(_FSCONFIG_CMD_CREATE, None, None, "fsconfig create")
        attrs = 0
        for flag, attr in _ATTR_FOR_FLAG:
            if flags & flag:
                attrs |= attr
        mfd = _syscall(_SYS_FSMOUNT, fsfd, _FSMOUNT_CLOEXEC, attrs)
        if mfd < 0:
            _raise_errno("fsmount overlay", target)
        try:
            if _syscall(_SYS_MOVE_MOUNT, mfd, b"", _AT_FDCWD, _b(target), _MOVE_MOUNT_F_EMPTY_PATH) < 0:
                _raise_errno("move_mount overlay", target)
        finally:
            os.close(mfd)
    finally:
        os.close(fsfd)


def _common_parent(paths: Sequence[str]) -> str:
    return os.path.commonpath([os.path.dirname(p.rstrip("/")) or "/" for p in paths])


def _mount_relative(m: Mount, target: Path, flags: int, data_opts: list[str]) -> None:
    dirs: list[str] = []
    for opt in data_opts:
        key, _, value = opt.partition("=")
        if key == "lowerdir":
            dirs.extend(_split_lowerdir(value))
        elif key in ("upperdir", "workdir"):
            dirs.append(value)
    base = _common_parent(dirs)

    def rel(p: str) -> str:
        return os.path.relpath(p, base).replace(":", "\\:")

    opts: list[str] = []
    for opt in data_opts:
        key, eq, value = opt.partition("=")
        if key == "lowerdir":
            opts.append("lowerdir=" + ":".join(rel(d) for d in _split_lowerdir(value)))
        elif key in ("upperdir", "workdir"):
            opts.append(f"{key}={rel(value)}")
        else:
            opts.append(opt)
    data = ",".join(opts)
    if len(_b(data)) >= _PAGE_SIZE:
        raise MountError(errno.E2BIG, "overlay options too long even with relative paths", os.fspath(target))
    # A child process so that only its cwd changes; libmount passes the options through as is.
    cmd = ["mount", "-i", "-n", "-t", m.type]
    named = [o for o, (clear, f) in _FLAGS.items() if not clear and f and flags & f == f]
    cmd += ["-o", ",".join(named + [data]), m.source, os.path.abspath(target)]
    res = subprocess.run(cmd, cwd=base, capture_output=True, text=True)
    if res.returncode != 0:
        raise MountError(errno.EIO, f"mount overlay (relative lowerdirs): {res.stderr.strip()}",
                         os.fspath(target))


def _umount2(target: str | os.PathLike[str], flags: int) -> None:
    if _libc.umount2(_b(target), flags | UMOUNT_NOFOLLOW) != 0:
        _raise_errno("umount", target)


def bind_onto(source: str | os.PathLike[str], target_fd: int, *, readonly: bool) -> int:
    """Bind the host path `source` (with its submounts) onto what `target_fd` (an O_PATH fd,
    opened by the caller inside a container's root) is: no path is walked at the target, so a
    symlink swapped in there cannot redirect the mount. The copy is private (nothing propagates
    from or to where `source` is mounted) and, when `readonly`, read-only through and through.
    Returns an O_PATH fd of the new mount's root, for detach_mount."""
    tfd = _syscall(_SYS_OPEN_TREE, _AT_FDCWD, _b(source), _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE)
    if tfd < 0:
        _raise_errno("open_tree", source)
    try:
        attr = _MountAttr(_MOUNT_ATTR_RDONLY if readonly else 0, 0, MS_PRIVATE, 0)
        if _syscall(_SYS_MOUNT_SETATTR, tfd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE, ctypes.byref(attr),
                    ctypes.sizeof(attr)) < 0:
            _raise_errno("mount_setattr", source)
        if _syscall(_SYS_MOVE_MOUNT, tfd, b"", target_fd, b"",
                    _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH) < 0:
            _raise_errno("move_mount", source)
    except BaseException:
        os.close(tfd)
        raise
    return tfd


def detach_mount(fd: int) -> None:
    """Lazily detach the mount whose root `fd` is (bind_onto's answer), with everything mounted
    below it, and close `fd`. Through the fd, not a path: the path may run through directories
    a container can change. No error if it is gone already."""
    try:
        if _libc.umount2(_b(f"/proc/self/fd/{fd}"), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise MountError(err, f"umount: {os.strerror(err)}", f"fd {fd}")
    finally:
        os.close(fd)


def make_private(target: str | os.PathLike[str]) -> None:
    """Make the mount at `target` private: what is mounted below it later stays here."""
    if _libc.mount(None, _b(target), None, MS_PRIVATE, None) != 0:
        _raise_errno("set mount propagation", target)


def unmount(target: Path, *, detach: bool = False) -> None:
    """Unmount everything stacked on `target`. No error if nothing is mounted there.

    EBUSY is retried briefly (a process may be just leaving the mount); `detach` does a lazy
    unmount instead, for crash cleanup.
    """
    flags = MNT_DETACH if detach else 0
    busy_tries = 0
    while True:
        try:
            _umount2(target, flags)
        except MountError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return  # not (or no longer) a mount point
            if e.errno == errno.EBUSY and busy_tries < 40:
                busy_tries += 1
                time.sleep(0.05)  # as containerd: up to 2 s for the last user to leave
                continue
            raise


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out = bytearray()
    raw = os.fsencode(field)
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and len(raw[i + 1:i + 4]) == 3 and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mount_points() -> list[str]:
    """Mount points of this mount namespace, in mount order (later entries sit on top)."""
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    return [_unescape(line.split(" ", 5)[4]) for line in lines if line]


def is_mounted(path: str | os.PathLike[str]) -> bool:
    p = os.path.realpath(path)
    return p in mount_points()


def unmount_all_under(path: str | os.PathLike[str]) -> list[str]:
    """Unmount every mount at or below `path` (crash cleanup), deepest and newest first.

    Returns the mount points that were unmounted. Busy mounts are detached lazily rather than
    left behind.
    """
    root = os.path.realpath(path)
    prefix = root.rstrip("/") + "/"
    found = [mp for mp in mount_points() if mp == root or mp.startswith(prefix)]
    # Newest first, so stacked mounts come off top-down and submounts before their parents.
    ordered = sorted(enumerate(found), key=lambda t: (-t[1].count("/"), -t[0]))
    done: list[str] = []
    for _, mp in ordered:
        try:
            _umount2(mp, 0)
        except MountError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                continue  # went away with its parent
            if e.errno != errno.EBUSY:
                raise
            _umount2(mp, MNT_DETACH)
        done.append(mp)
    return done
