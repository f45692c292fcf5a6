"""Atomic writes of state: temp file in the same directory, fsync, rename, fsync of the directory.

A crash at any point leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True, mode: int = 0o600) -> None:
    p = Path(path)
    # unique per call: two writers of one path in one process must not share a temp file
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except BaseException:
        # A full disk (ENOSPC) fails the write half-way: the old file stays as it was, and
        # the partial temp file must not stay behind holding the space the disk lacks.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(p.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: object, *, durable: bool = True) -> None:
    atomic_write_bytes(path, msgspec.json.encode(obj), durable=durable)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
