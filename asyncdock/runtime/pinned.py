"""A runtime binary pinned on a read-only bind mount of its own.

runc and crun protect the host binary against a container that would overwrite it through
/proc/self/exe (CVE-2019-5736): unless the binary they run from already sits on a read-only
mount, every invocation first makes a read-only bind mount of itself (crun) or a sealed memfd
copy (runc), and re-executes from it -- a second process image load on every create, start and
delete. Pinning the binary once on a read-only bind mount gives the same protection (a write
through /proc/self/exe fails with EROFS) and lets each invocation run straight away.

The pin keeps the inode it was made from: a runtime upgraded while the daemon runs is used from
the next daemon start on, as the shims of a running Docker keep theirs.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _mount(source: str | None, target: Path, flags: int) -> None:
    if _libc.mount(os.fsencode(source) if source else None, os.fsencode(target), None, flags,
                   None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or ''} on {target}: {os.strerror(err)}")


def unpin(dest: Path) -> None:
    """Undo pin() (also what a crashed daemon left). Never raises."""
    # A crashed daemon may have left more than one mount stacked there.
    for _ in range(8):
        if _libc.umount2(os.fsencode(dest), MNT_DETACH) != 0:
            break
    try:
        dest.unlink()
    except OSError:
        pass


def pin(binary: str, dest: Path) -> str | None:
    """Bind-mount `binary` read-only at `dest`; the path to run it from, or None (and the caller
    runs the binary as is) where bind mounts are not allowed."""
    unpin(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        dest.touch(mode=0o500)
        _mount(binary, dest, MS_BIND)
        try:
            _mount(None, dest, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError:
            unpin(dest)
            raise
    except OSError as e:
        log.info("running %s unpinned: %s", binary, e)
        try:
            dest.unlink()
        except OSError:
            pass
        return None
    return str(dest)
