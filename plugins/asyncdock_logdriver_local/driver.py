"""local: Docker's option rules and defaults (20 MiB x 5 files), our own record format."""
from __future__ import annotations

from pathlib import Path

from asyncdock.base.errors import InvalidParameter
from asyncdock.logs.files import (
    FILE_OPT_KEYS,
    FileLogDriver,
    FileOptions,
    parse_go_bool,
    parse_go_int,
    parse_size,
)

from .codec import LocalCodec

DEFAULT_MAX_SIZE = 20 * 1024 * 1024
DEFAULT_MAX_FILE = 5


class LocalDriver(FileLogDriver):
    name = "local"
    codec = LocalCodec()

    def file_path(self, log_dir: Path, container_id: str) -> Path:
        # Docker's place for it. Not exposed as LogPath (see log_path).
        return Path(log_dir) / "local-logs" / "container.log"

    def log_path(self, log_dir: Path, container_id: str) -> str:
        # Docker leaves LogPath empty for local on purpose: the file format is private.
        return ""

    def parse_options(self, opts: dict[str, str]) -> FileOptions:
        """Docker's rules and messages (local/config.go). `compress` defaults to true as in
        Docker, so `max-file=1` alone is refused as Docker refuses it; rotated files are kept
        uncompressed regardless. A max-size of 0 means no rotation."""
        for key in opts:
            if key not in FILE_OPT_KEYS:
                raise InvalidParameter(f"unknown log opt '{key}' for log driver local")
        max_size, max_file, compress = DEFAULT_MAX_SIZE, DEFAULT_MAX_FILE, True
        if "max-size" in opts:
            v = opts["max-size"]
            try:
                max_size = parse_size(v)
            except ValueError as e:
                raise InvalidParameter(f"invalid value for max-size: {v}: {e}") from None
        if "max-file" in opts:
            v = opts["max-file"]
            try:
                max_file = parse_go_int(v)
            except ValueError as e:
                raise InvalidParameter(f"invalid value for max-file: {v}: {e}") from None
            if max_file < 0:
                raise InvalidParameter("max-file must not be negative")
        if "compress" in opts:
            try:
                compress = parse_go_bool(opts["compress"])
            except ValueError as e:
                raise InvalidParameter(f"invalid boolean value for compress: {e}") from None
        if compress and max_file <= 1:
            raise InvalidParameter("compression cannot be enabled when max file count is 1")
        return FileOptions(max_size=max_size, max_file=max(1, max_file), compress=compress)
