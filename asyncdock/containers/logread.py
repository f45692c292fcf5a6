"""A container's logs read back (`docker logs`): which records, from what its log driver kept."""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from ..base import errors
from ..base.timefmt import parse_timestamp_filter
from ..logs.base import LogDriver, LogNotReadable, LogRecord, ReadOptions
from .models import ContainerRecord


def container_logs(drivers: Mapping[str, LogDriver], log_dir: Path, rec: ContainerRecord, *, stdout: bool,
                   stderr: bool, follow: bool, tail: str, since: str, until: str) -> AsyncIterator[LogRecord]:
    """The records of `rec` in `log_dir`, as Docker's values select them: `tail` a count or
    "all" ("" and anything unreadable are all too), `since`/`until` times or durations ("" and
    "0": no bound); with `follow`, on until the container stops. Raises before anything is read:
    InvalidParameter without a stream or with a bad time, LogNotReadable when the driver keeps
    nothing."""
    if not stdout and not stderr:
        raise errors.InvalidParameter("Bad parameters: you must choose at least one stream")
    driver = drivers.get(rec.host_config.log_config.type)
    if driver is None or driver.name == "none":
        raise LogNotReadable("configured logging driver does not support reading")
    try:
        tail_n = -1 if tail in ("all", "") else max(int(tail), 0)
    except ValueError:
        tail_n = -1
    opts = ReadOptions(stdout=stdout, stderr=stderr, follow=follow, tail=tail_n,
                       since_ns=parse_timestamp_filter(since) if since and since != "0" else 0,
                       until_ns=parse_timestamp_filter(until) if until and until != "0" else 0)
    return driver.read(log_dir, rec.id, opts, lambda: rec.state.running)
