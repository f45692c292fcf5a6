"""The build cache as `GET /system/df` reports it: Docker's CacheRecord wire model, and the
Protocol of what can list them (the builder), so the system route needs no builder import."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec


class BuildCacheRecord(msgspec.Struct, rename="pascal", kw_only=True):
    """moby's build.CacheRecord (swagger BuildCache): one cached build step."""

    id: str = msgspec.field(name="ID")
    parents: list[str] | None = None
    type: str = "regular"
    description: str = ""
    in_use: bool = False
    shared: bool = False
    size: int = 0
    created_at: str = "0001-01-01T00:00:00Z"
    last_used_at: str | None = None
    usage_count: int = 0


# A builder may hand back its own Structs of this shape or plain JSON objects.
BuildCacheItem = BuildCacheRecord | Mapping[str, object]


@runtime_checkable
class BuildCacheSource(Protocol):
    """What `docker system df` asks for the build cache (the engine or its builder offers it)."""

    def build_cache_records(self) -> Sequence[BuildCacheItem]: ...


def as_json(item: BuildCacheItem) -> dict[str, object]:
    if isinstance(item, BuildCacheRecord):
        out: dict[str, object] = msgspec.to_builtins(item)
        return out
    return dict(item)
