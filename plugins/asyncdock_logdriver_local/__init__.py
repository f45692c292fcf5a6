"""The local log driver: compact length-prefixed msgpack records in
`<log_dir>/local-logs/container.log`, rotated like json-file (default 20 MiB x 5)."""
from __future__ import annotations

from asyncdock.plugins import Registration

from .driver import LocalDriver

plugin = Registration(
    kind="logdriver",
    id="local",
    factory=lambda ctx: LocalDriver(),
    description="compact binary records (length-prefixed msgpack), with rotation",
)

__all__ = ["LocalDriver", "plugin"]
