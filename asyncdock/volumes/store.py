"""Volume records, one JSON file each under <data-root>/volumes/.meta/ (a volume name cannot
start with a dot, so this never meets a volume's own directory), written atomically."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

from ..util.atomic import atomic_write_json
from ..util.corrupt import move_aside
from .base import Volume

log = logging.getLogger(__name__)


class VolumeStore:
    def __init__(self, root: Path) -> None:
        self.meta = root / ".meta"
        self.meta.mkdir(parents=True, exist_ok=True)
        self.volumes: dict[str, Volume] = {}

    def load(self) -> None:
        for p in self.meta.glob("*.json"):
            try:
                v = msgspec.json.decode(p.read_bytes(), type=Volume)
            except (OSError, msgspec.DecodeError) as e:
                move_aside(p, e, "volume record")
                continue
            self.volumes[v.name] = v

    def save(self, v: Volume) -> None:
        atomic_write_json(self.meta / f"{v.name}.json", v)
        self.volumes[v.name] = v

    def delete(self, name: str) -> None:
        try:
            os.unlink(self.meta / f"{name}.json")
        except FileNotFoundError:
            pass
        self.volumes.pop(name, None)
