"""json-file: options exactly as Docker validates them, everything else in asyncdock.logs.files."""
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

from .codec import JSONLineCodec



class JSONFileDriver(FileLogDriver):
    name = "json-file"
    codec = JSONLineCodec()

    def file_path(self, log_dir: Path, container_id: str) -> Path:
        return Path(log_dir) / f"{container_id}-json.log"

    def parse_options(self, opts: dict[str, str]) -> FileOptions:
        """Docker's rules and messages (jsonfilelog.New / ValidateLogOpt). Defaults: no size
        limit, one file. `compress` is validated as Docker does but rotated files are kept
        uncompressed."""
        for key in opts:
            if key not in FILE_OPT_KEYS:
                raise InvalidParameter(f"unknown log opt '{key}' for json-file log driver")
        try:
            max_size = -1
            if "max-size" in opts:
                max_size = parse_size(opts["max-size"])
                if max_size <= 0:
                    raise ValueError("max-size must be a positive number")
            max_file = 1
            if "max-file" in opts:
                max_file = parse_go_int(opts["max-file"])
                if max_file < 1:
                    raise ValueError("max-file cannot be less than 1")
            compress = False
            if "compress" in opts:
                compress = parse_go_bool(opts["compress"])
                if compress and (max_file == 1 or max_size == -1):
                    raise ValueError("compress cannot be true when max-file is less than 2 "
                                     "or max-size is not set")
        except ValueError as e:
            raise InvalidParameter(str(e)) from None
        return FileOptions(max_size=max_size, max_file=max_file, compress=compress)
