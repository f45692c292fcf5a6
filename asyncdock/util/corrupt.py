"""State found unreadable at start: logged and moved aside, never fatal.

Atomic writes (util/atomic.py) leave no torn file after a crash, but a failing disk, a full
file system in an earlier version or a person's editor can still leave a state file empty or
garbled. The daemon starts without it; the file stays next to where it was, renamed, for a
person to look at.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

SUFFIX = ".corrupt-"


def aside_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{SUFFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(2).hex()}")


def move_aside(path: Path, error: object, what: str) -> Path | None:
    """Rename the unreadable `path` out of the way; returns its new name (None if that failed,
    which is logged too: the caller goes on without the file either way)."""
    dest = aside_name(path)
    try:
        os.rename(path, dest)
    except OSError as e:
        log.error("unreadable %s %s (%s); could not move it aside: %s", what, path, error, e)
        return None
    log.error("unreadable %s %s (%s): moved aside to %s", what, path, error, dest.name)
    return dest
