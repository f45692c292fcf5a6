"""The volume record and the VolumeDriver protocol plugins implement."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import msgspec


class Volume(msgspec.Struct, kw_only=True):
    name: str
    driver: str = "local"
    created_at: str = ""
    created_ns: int = 0
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None
    anonymous: bool = False
    # containers that reference it (in-use: remove refused with 409)
    users: list[str] = msgspec.field(default_factory=list)
    # image content was copied in already (Docker copies only into a new, empty volume)
    populated: bool = False


class VolumeDriver(Protocol):
    name: str

    def create(self, name: str, options: dict[str, str]) -> None:
        """Make the volume (blocking). Raise InvalidParameter for bad options."""

    def remove(self, name: str) -> None: ...

    def path(self, name: str) -> Path:
        """Where the data is (Mountpoint)."""

    def mount(self, name: str, ref: str, options: dict[str, str]) -> Path:
        """Make it usable for container `ref`; returns the host path to bind."""

    def unmount(self, name: str, ref: str) -> None: ...

    def usage(self, name: str) -> int:
        """Bytes used (-1 when unknown)."""
