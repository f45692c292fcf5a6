"""The none log driver: output is discarded and `docker logs` is refused, as in Docker."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from asyncdock.logs.base import DiscardingWriter, IsRunning, LogNotReadable, LogRecord, ReadOptions
from asyncdock.plugins import Registration

NOT_READABLE = "configured logging driver does not support reading"


class NoneDriver:
    name = "none"

    def log_path(self, log_dir: Path, container_id: str) -> str:
        return ""

    def validate_options(self, opts: dict[str, str]) -> None:
        # Docker skips option validation for "none" entirely: anything is accepted.
        pass

    def open_writer(self, log_dir: Path, container_id: str, opts: dict[str, str]) -> DiscardingWriter:
        return DiscardingWriter()

    def read(self, log_dir: Path, container_id: str, options: ReadOptions,
             is_running: IsRunning) -> AsyncIterator[LogRecord]:
        # Raised at call time, not on first iteration, so the logs route can answer with an
        # error status before it has started a 200 stream.
        raise LogNotReadable(NOT_READABLE)

    def remove(self, log_dir: Path, container_id: str) -> None:
        pass


plugin = Registration(
    kind="logdriver",
    id="none",
    factory=lambda ctx: NoneDriver(),
    description="discards container output",
)

__all__ = ["NOT_READABLE", "NoneDriver", "plugin"]
