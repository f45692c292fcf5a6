"""Where a layer's blobs came from and went to (dockerd's v2 metadata service, in one file).

    <root>/origins.json   {diff ID: [{"digest", "mediaType", "repository"}, ...]}

A pull records, for every layer, the blob it downloaded and the repository it came from
("127.0.0.1:5000/library/busybox"); a push records the blob it uploaded and the repository it
went to. A later push to another repository of the same registry mounts the blob from there
instead of uploading it, and a layer whose local blob is uncompressed (loaded from an archive)
finds the gzip blob an earlier push made of it, so a second push sends nothing and names the
same blobs (the same manifest, byte for byte). Newest entries last; a diff ID keeps at most
`MAX_PER_LAYER`.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from ..util.atomic import atomic_write_json
from ..util.corrupt import move_aside

MAX_PER_LAYER = 50


class BlobOrigin(msgspec.Struct, frozen=True):
    digest: str
    mediaType: str
    repository: str = ""  # "" for a blob made here that no registry holds yet


class _File(msgspec.Struct):
    layers: dict[str, list[BlobOrigin]] = msgspec.field(default_factory=dict)


class BlobOrigins:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._path = self.root / "origins.json"
        self._lock = asyncio.Lock()
        self._layers: dict[str, list[BlobOrigin]] = {}
        if self._path.exists():
            try:
                self._layers = msgspec.json.decode(self._path.read_bytes(), type=_File).layers
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
                move_aside(self._path, e, "blob origins file")

    def of(self, diff_id: str) -> list[BlobOrigin]:
        """What is known of a layer, newest first."""
        return list(reversed(self._layers.get(diff_id, [])))

    async def add(self, entries: list[tuple[str, BlobOrigin]]) -> None:
        """Record (diff ID, origin) pairs; an entry already known moves to the newest place."""
        async with self._lock:
            changed = False
            for diff_id, origin in entries:
                known = self._layers.setdefault(diff_id, [])
                if known and known[-1] == origin:
                    continue
                if origin in known:
                    known.remove(origin)
                known.append(origin)
                del known[:-MAX_PER_LAYER]
                changed = True
            if changed:
                snapshot = _File({k: list(v) for k, v in self._layers.items()})
                await asyncio.to_thread(atomic_write_json, self._path, snapshot)
