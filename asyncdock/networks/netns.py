"""Named network namespaces: a new netns kept alive by a bind mount of its nsfs file at
<exec-root>/netns/<id> (what the OCI spec's `path` joins), and running code inside one.

Network namespaces are per thread: creating or entering one happens in a worker thread that
saves its own netns first and always returns to it, so the rest of the engine never notices.
All of it is system calls made in-process (unshare, mount, setns): no helper process, so
creating one costs well under a millisecond (measured 0.6 ms, most of it the kernel's unshare).
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc (find_library runs ldconfig: 14 ms at import)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)

T = TypeVar("T")


class NetnsError(OSError):
    pass


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise NetnsError(e, f"{what}: {os.strerror(e)}")


def _self_ns() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def create(path: Path) -> None:
    """A new, empty network namespace (loopback only, down) pinned at `path`. Blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    orig = os.open(_self_ns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        except NetnsError as e:
            path.unlink(missing_ok=True)
            raise NetnsError(e.errno, f"the kernel refused a new network namespace: {e}") from None
        try:
            _check(_libc.mount(_self_ns().encode(), bytes(path), None, MS_BIND, None), f"bind {path}")
        except NetnsError:
            path.unlink(missing_ok=True)
            raise
        finally:
            _restore(orig)
    finally:
        os.close(orig)


def _restore(orig: int) -> None:
    if _libc.setns(orig, CLONE_NEWNET) != 0:
        # A worker thread stuck in a container's netns would leak the container's network into
        # unrelated work: nothing sane is left to do.
        os.write(2, b"asyncdock: cannot return a thread to the host network namespace\n")
        os._exit(70)


def remove(path: Path) -> None:
    """Unpin and delete. Idempotent. Blocking."""
    rc = _libc.umount2(bytes(path), MNT_DETACH)
    if rc != 0:
        e = ctypes.get_errno()
        if e not in (errno.EINVAL, errno.ENOENT):
            raise NetnsError(e, f"unmount {path}: {os.strerror(e)}")
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def run_in(path: Path | str | int, fn: Callable[[], T]) -> T:
    """Call fn with this thread inside the netns at `path` (or of the open nsfs fd `path`);
    sockets it makes stay in that netns for good, whichever thread uses them later."""
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if not isinstance(path, int) else path
    orig = os.open(_self_ns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), f"setns {path}")
        try:
            return fn()
        finally:
            _restore(orig)
    finally:
        if not isinstance(path, int):
            os.close(target)
        os.close(orig)


def run_in_fresh(fn: Callable[[], T]) -> T:
    """Call fn with this thread inside a brand-new, unnamed netns that dies (with whatever fn
    made in it) once fn's sockets are closed: probes that must leave nothing on the host."""
    orig = os.open(_self_ns(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        except NetnsError as e:
            raise NetnsError(e.errno, f"the kernel refused a new network namespace: {e}") from None
        try:
            return fn()
        finally:
            _restore(orig)
    finally:
        os.close(orig)


def udp_socket_in(path: Path | str, addr: tuple[str, int]) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(addr)
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        return s

    return run_in(path, make)
