"""`docker stats`' documents (containers/stats.py readings) without HTTP, for a container that
is not running: Docker sends one blank reading and ends the stream, without waiting."""
from __future__ import annotations

import anyio
import pytest

from asyncdock.containers.manager import Live
from asyncdock.containers.models import ContainerConfig, ContainerRecord, HostConfig
from asyncdock.base.timefmt import ZERO_TIME
from asyncdock.containers.stats import readings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Stopped:
    """The container manager's live state of a container that has no process."""

    def live(self, rec: ContainerRecord) -> Live:
        return Live()


@pytest.mark.parametrize(("stream", "one_shot"), [(True, False), (False, False), (False, True)])
async def test_a_stopped_container_gets_one_blank_reading(stream: bool, one_shot: bool) -> None:
    rec = ContainerRecord(id="5" * 64, name="/idle", created="", created_ns=0, image="busybox", image_id="",
                          path="sh", args=[], config=ContainerConfig(), host_config=HostConfig())
    with anyio.fail_after(0.9):  # under the second between two readings: none was waited for
        docs = [d async for d in readings(Stopped(), rec, stream=stream, one_shot=one_shot)]
    assert len(docs) == 1
    doc = docs[0]
    assert doc["read"] == ZERO_TIME and doc["preread"] == ZERO_TIME
    assert doc["name"] == "/idle" and doc["id"] == rec.id and "networks" not in doc
    assert doc["cpu_stats"]["cpu_usage"]["total_usage"] == 0 and doc["memory_stats"] == {}
