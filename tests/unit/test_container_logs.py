"""Which records `docker logs` gets (containers/logread.py), without HTTP: Docker's tail, since
and until values over what the engine's own log drivers wrote, and the refusals that must come
before any stream starts."""
from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncdock.containers.logread import container_logs
from asyncdock.containers.models import ContainerConfig, ContainerRecord, HostConfig, LogConfig
from asyncdock.base.errors import InvalidParameter
from asyncdock.logs.base import LogDriver, LogNotReadable, LogRecord
from asyncdock.plugins import LOGDRIVERS, InitContext
from tests.support.logs import CID, DEADLINE, T0, write_all
from tests.support.plugins import registered

pytestmark = pytest.mark.anyio

SECOND = 1_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def drivers(tmp_path: Path) -> dict[str, LogDriver]:
    return {name: reg.factory(InitContext(root=tmp_path / "plugin-root"))
            for name, reg in registered(LOGDRIVERS).items()}


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "containers" / CID
    d.mkdir(parents=True)
    return d


def record(driver: str) -> ContainerRecord:
    return ContainerRecord(id=CID, name="/logs", created="", created_ns=0, image="busybox", image_id="",
                           path="sh", args=[], config=ContainerConfig(),
                           host_config=HostConfig(log_config=LogConfig(type=driver)))


def line(i: int) -> LogRecord:
    """Line i, i seconds after T0, stderr for every third."""
    return LogRecord(stream="stderr" if i % 3 == 0 else "stdout", data=f"line {i}\n".encode(),
                     time_ns=T0 + i * SECOND)


async def select(drivers: dict[str, LogDriver], log_dir: Path, rec: ContainerRecord, *, stdout: bool = True,
                 stderr: bool = True, tail: str = "all", since: str = "", until: str = "") -> list[int]:
    records = container_logs(drivers, log_dir, rec, stdout=stdout, stderr=stderr, follow=False,
                             tail=tail, since=since, until=until)
    with anyio.fail_after(DEADLINE):
        return [int(r.data.split()[1]) async for r in records]


@pytest.mark.parametrize("name", ["json-file", "local"])
async def test_tail_since_until_and_streams_select_records(drivers: dict[str, LogDriver], log_dir: Path,
                                                           name: str) -> None:
    write_all(drivers[name], log_dir, [line(i) for i in range(10)])
    rec = record(name)
    assert await select(drivers, log_dir, rec) == list(range(10))
    assert await select(drivers, log_dir, rec, tail="3") == [7, 8, 9]
    assert await select(drivers, log_dir, rec, tail="0") == []
    # "all", "" and a value that is not a count all mean every record
    for tail in ("all", "", "many"):
        assert await select(drivers, log_dir, rec, tail=tail) == list(range(10)), tail
    t0 = T0 // SECOND
    assert await select(drivers, log_dir, rec, since=str(t0 + 7)) == [7, 8, 9]
    assert await select(drivers, log_dir, rec, since=f"{t0 + 6}.5") == [7, 8, 9]
    # both bounds take the records at their time, as moby's `After(until)` test does
    assert await select(drivers, log_dir, rec, until=str(t0 + 2)) == [0, 1, 2]
    assert await select(drivers, log_dir, rec, since=str(t0 + 2), until=str(t0 + 5)) == [2, 3, 4, 5]
    assert await select(drivers, log_dir, rec, since="0", until="0") == list(range(10))  # "0": no bound
    assert await select(drivers, log_dir, rec, since=str(t0 + 2), tail="2") == [8, 9]
    assert await select(drivers, log_dir, rec, stderr=False) == [1, 2, 4, 5, 7, 8]
    assert await select(drivers, log_dir, rec, stdout=False) == [0, 3, 6, 9]


async def test_refusals_come_before_anything_is_read(drivers: dict[str, LogDriver], log_dir: Path) -> None:
    with pytest.raises(InvalidParameter, match="you must choose at least one stream"):
        container_logs(drivers, log_dir, record("json-file"), stdout=False, stderr=False, follow=False,
                       tail="all", since="", until="")
    # the stream check comes first, even for a driver that keeps nothing
    with pytest.raises(InvalidParameter, match="you must choose at least one stream"):
        container_logs(drivers, log_dir, record("none"), stdout=False, stderr=False, follow=False,
                       tail="all", since="", until="")
    for name in ("none", "not-installed"):
        with pytest.raises(LogNotReadable, match="configured logging driver does not support reading"):
            container_logs(drivers, log_dir, record(name), stdout=True, stderr=True, follow=False,
                           tail="all", since="", until="")
    # a driver that keeps nothing is refused before a bad time value is looked at
    with pytest.raises(LogNotReadable):
        container_logs(drivers, log_dir, record("none"), stdout=True, stderr=True, follow=False,
                       tail="all", since="yesterday", until="")
    with pytest.raises(InvalidParameter, match='failed to parse value as time or duration: "yesterday"'):
        container_logs(drivers, log_dir, record("json-file"), stdout=True, stderr=True, follow=False,
                       tail="all", since="yesterday", until="")
