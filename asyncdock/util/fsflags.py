"""File flags set through FS_IOC_SETFLAGS (chattr): placement hints for ext4."""
from __future__ import annotations

import fcntl
import logging
import os
import struct
from pathlib import Path

log = logging.getLogger(__name__)

# <linux/fs.h>: FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (declared with `long`, but every file system
# reads and writes an int) and FS_TOPDIR_FL, chattr's +T.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def mark_topdir(path: Path) -> bool:
    """Set ext4's "top of directory hierarchy" flag (chattr +T) on `path`: each directory made
    in it then starts in a lightly used block group (the Orlov allocator's choice for top-level
    directories) instead of its parent's.

    Best effort: other file systems ignore or refuse the flag, and lose nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
        if flags & _FS_TOPDIR_FL:
            return True
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
        return True
    except OSError as e:
        # ENOTTY / EOPNOTSUPP: a file system without these flags (tmpfs, overlay, ...).
        log.debug("cannot set the top-dir flag on %s: %s", path, e.strerror)
        return False
    finally:
        os.close(fd)
