"""The log driver interface (plugins: json-file, local, none)."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import msgspec

from ..base.errors import NotImplementedYet

Stream = Literal["stdout", "stderr"]


class LogRecord(msgspec.Struct):
    stream: Stream
    data: bytes  # one line including its "\n" (a partial last line has none)
    time_ns: int


class ReadOptions(msgspec.Struct):
    stdout: bool = True
    stderr: bool = True
    since_ns: int = 0
    until_ns: int = 0  # 0: no bound
    tail: int = -1  # -1: all
    follow: bool = False


class LogNotReadable(NotImplementedYet):
    """The driver keeps nothing to read back (Docker: `configured logging driver does not support reading`)."""


@runtime_checkable
class LogWriter(Protocol):
    def write(self, record: LogRecord) -> None: ...
    def write_lines(self, stream: Stream, lines: list[bytes], time_ns: int) -> None:
        """The records of one piece of output (same stream and time), in order."""
        ...
    def close(self) -> None: ...


class DiscardingWriter:
    """The writer of a driver that keeps nothing (none): the output pump, seeing it, does not
    cut the output into records at all."""

    def write(self, record: LogRecord) -> None:
        pass

    def write_lines(self, stream: Stream, lines: list[bytes], time_ns: int) -> None:
        pass

    def close(self) -> None:
        pass


@runtime_checkable
class LogDriver(Protocol):
    name: str

    def log_path(self, log_dir: Path, container_id: str) -> str:
        """What inspect shows as LogPath ("" when the driver writes no file)."""
        ...

    def validate_options(self, opts: dict[str, str]) -> None:
        """Raise InvalidParameter for options the driver does not take (checked at create)."""
        ...

    def open_writer(self, log_dir: Path, container_id: str, opts: dict[str, str]) -> LogWriter: ...

    def read(self, log_dir: Path, container_id: str, options: ReadOptions,
             is_running: "IsRunning") -> AsyncIterator[LogRecord]:
        """Records in order; with follow, goes on until `is_running()` is false and the file is
        drained. Raises LogNotReadable for drivers that keep nothing."""
        ...

    def remove(self, log_dir: Path, container_id: str) -> None: ...


class IsRunning(Protocol):
    def __call__(self) -> bool: ...
