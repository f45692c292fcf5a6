"""One daemon per data-root and per exec-root: an flock on a lock file in each, holding who owns it.

Both roots are locked because two daemons sharing either one destroy each other: a second daemon
on the exec-root of a first one would force-delete the first one's containers at start (they look
like a crash's leftovers), re-pin and later unmount its runtime binary, and unmount its bundles.

The flock is dropped by the kernel when the process dies, so a crash never leaves a stale lock.
The file names its owner (pid and sockets) so that a refused daemon can say whom to stop. The
owner is written by replacing the file (temp file, rename) while holding the lock on both the old
and the new inode, so a reader never sees a half-written owner; a daemon that locked the old
inode after the rename notices that the path names another inode and tries again.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .util.atomic import fsync_dir


class LockHeld(SystemExit):
    pass


class Owner(msgspec.Struct):
    pid: int = 0
    hosts: list[str] = msgspec.field(default_factory=list)


@dataclass
class RootLock:
    path: Path
    fd: int

    def release(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def read_owner(path: Path) -> Owner | None:
    """Who holds (or last held) the lock file at `path`; None when it names nobody."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        return msgspec.json.decode(raw, type=Owner)
    except msgspec.DecodeError:
        pass
    # Older daemons wrote the bare pid.
    text = raw.decode(errors="replace").strip()
    return Owner(pid=int(text)) if text.isdigit() else None


def _describe(owner: Owner | None) -> str:
    if owner is None or not owner.pid:
        return "another daemon"
    where = f", listening on {', '.join(owner.hosts)}" if owner.hosts else ""
    return f"another daemon (pid {owner.pid}{where})"


def acquire(root: Path, name: str, *, what: str, flag: str, hosts: list[str]) -> RootLock:
    """Lock `root/name` for this process, or raise LockHeld naming the holder. `what` names the
    root in the message ("data-root"), `flag` the option that picks another one."""
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = root / name
    owner = msgspec.json.encode(Owner(pid=os.getpid(), hosts=list(hosts)))
    for _ in range(10):  # bounded: each retry means another daemon replaced the file meanwhile
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"asyncdock: {_describe(read_owner(path))} is using {what} {root}; "
                           f"stop it or pass a different {flag}") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        try:
            new_fd = _replace_locked(path, owner)
        finally:
            os.close(fd)  # the new inode is locked (or we failed): the old one is done
        return RootLock(path, new_fd)
    raise LockHeld(f"asyncdock: cannot lock {path}: it keeps being replaced by another process")


def _replace_locked(path: Path, data: bytes) -> int:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new inode: nobody else can hold it
        os.write(fd, data + b"\n")
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    try:
        fsync_dir(path.parent)
    except OSError:
        pass  # the owner text is advice; the lock itself is the flock
    return fd
