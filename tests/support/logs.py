"""Writing and reading a log driver's records whole, for the log driver tests (the conformance
suite and the file drivers' own unit tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from asyncdock.logs.base import LogDriver, LogRecord, ReadOptions

CID = "4f1c" + "0" * 60
T0 = 1_795_857_224_000_000_000  # 2026-11-28T09:13:44Z
DEADLINE = 10.0


def stopped() -> bool:
    return False


async def read_all(driver: LogDriver, log_dir: Path, **opts: Any) -> list[LogRecord]:
    with anyio.fail_after(DEADLINE):
        return [r async for r in driver.read(log_dir, CID, ReadOptions(**opts), stopped)]


def write_all(driver: LogDriver, log_dir: Path, records: list[LogRecord],
              opts: dict[str, str] | None = None) -> None:
    w = driver.open_writer(log_dir, CID, opts or {})
    for r in records:
        w.write(r)
    w.close()
