"""The build cache in `GET /system/df`: whichever of the engine or its builder offers
`build_cache_records()` (base/buildcache.BuildCacheSource) is asked; without one, nothing is
cached. Records are Docker's CacheRecord (msgspec Structs or plain JSON objects)."""
from __future__ import annotations

from collections.abc import Sequence

from asyncdock.api.routes.system import build_cache_usage
from asyncdock.base.buildcache import BuildCacheItem, BuildCacheRecord, BuildCacheSource
from asyncdock.base.filters import bool_or_default
from asyncdock.base.errors import InvalidParameter

import pytest


class Builder:
    def build_cache_records(self) -> Sequence[BuildCacheItem]:
        return [
            BuildCacheRecord(id="a" * 25, description="RUN make", size=300, in_use=True,
                             created_at="2024-01-01T00:00:00Z", last_used_at="2024-01-02T00:00:00Z",
                             usage_count=2),
            BuildCacheRecord(id="b" * 25, parents=["a" * 25], description="COPY . /src", size=50, shared=True),
            {"ID": "c" * 25, "Type": "regular", "Description": "RUN test", "InUse": False, "Shared": False,
             "Size": 7, "CreatedAt": "2024-01-03T00:00:00Z", "LastUsedAt": None, "UsageCount": 1},
        ]


class EngineWithBuilder:
    builder = Builder()


class EngineWithout:
    builder = None


def test_records_come_from_the_builder_in_dockers_shape() -> None:
    assert isinstance(Builder(), BuildCacheSource)
    records, usage = build_cache_usage(EngineWithBuilder())
    assert list(records[0]) == ["ID", "Parents", "Type", "Description", "InUse", "Shared", "Size", "CreatedAt",
                                "LastUsedAt", "UsageCount"]
    assert records[0]["Parents"] is None and records[1]["Parents"] == ["a" * 25]
    assert records[0]["Type"] == "regular" and records[0]["UsageCount"] == 2
    assert records[2]["ID"] == "c" * 25
    # active: in use; reclaimable: neither in use nor shared
    assert usage == {"ActiveCount": 1, "Items": records, "Reclaimable": 7, "TotalCount": 3, "TotalSize": 357}


def test_no_builder_no_cache() -> None:
    assert build_cache_usage(EngineWithout()) == ([], {})
    assert build_cache_usage(object()) == ([], {})


def test_an_engine_that_offers_the_records_itself() -> None:
    class Engine(Builder):
        builder = None

    records, usage = build_cache_usage(Engine())
    assert len(records) == 3 and usage["TotalCount"] == 3


def test_bool_or_default_as_moby() -> None:
    assert bool_or_default(None, "dangling", True) is True
    assert bool_or_default(["false"], "dangling", True) is False
    assert bool_or_default(["1", "maybe"], "dangling", False) is True
    for values in (["true", "false"], ["maybe"]):
        with pytest.raises(InvalidParameter, match=r"^invalid filter 'dangling=\["):
            bool_or_default(values, "dangling", True)
    with pytest.raises(InvalidParameter, match="^invalid filter 'dangling'$"):
        bool_or_default([], "dangling", True)
