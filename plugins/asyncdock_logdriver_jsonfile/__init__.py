"""The json-file log driver (Docker's default): `<log_dir>/<id>-json.log`, one JSON object per
line in Docker's exact format, rotated to `.1`, `.2`, ... by max-size / max-file."""
from __future__ import annotations

from asyncdock.plugins import Registration

from .driver import JSONFileDriver

plugin = Registration(
    kind="logdriver",
    id="json-file",
    factory=lambda ctx: JSONFileDriver(),
    description="Docker's json-file format, byte-compatible, with rotation",
)

__all__ = ["JSONFileDriver", "plugin"]
