"""A small tmpfs for tests that need a disk that fills up: mounted on a directory the test
owns, always unmounted afterwards, and a way to fill it to the last byte and free it again."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True, timeout=30)


def unmount(path: Path) -> None:
    """Unmount our tmpfs; lazily if something still holds it (the test has failed then, and
    the daemon's teardown reports what)."""
    proc = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    mount_tmpfs(path, size)
    try:
        yield path
    finally:
        unmount(path)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, chunk: int = 1 << 20) -> int:
    """Write `path` until the file system is full (every block and the last partial page);
    returns the bytes written. Bounded: a tmpfs holds at most its size."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        for size in (chunk, 4096, 1):  # big writes, then whatever fits in the last page
            block = bytes(size)
            while True:
                try:
                    n = os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                written += n
                if n < size:
                    break
    finally:
        os.close(fd)
    return written
