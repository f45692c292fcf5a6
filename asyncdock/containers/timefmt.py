"""Docker's time filters: `until`/`since` values are Unix timestamps (with a fraction), RFC 3339
dates, or Go durations relative to now ("10m", "1h30m")."""
from __future__ import annotations

import re
import time

from ..base.errors import InvalidParameter
from .status import parse_docker_time

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}


def parse_timestamp_filter(value: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch."""
    v = value.strip()
    now = time.time_ns() if now_ns is None else now_ns
    if re.fullmatch(r"\d+(\.\d+)?", v):
        secs, _, frac = v.partition(".")
        return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    if _DURATION.fullmatch(v) or re.fullmatch(rf"(?:{_DURATION.pattern})+", v):
        total = sum(int(float(n) * _UNITS[u]) for n, u in _DURATION.findall(v))
        return now - total
    try:
        return parse_docker_time(v)
    except (ValueError, TypeError):
        raise InvalidParameter(f"failed to parse value as time or duration: \"{value}\"") from None
