"""Docker's time strings: RFC 3339 times, Go's HumanDuration, and the `since`/`until` filter values.

Every function takes its inputs explicitly (including `now`) so the output is a pure function of
them: the ps table tests pin exact strings without sleeping or mocking the clock.

Times are integer nanoseconds since the Unix epoch throughout, the same unit as
`LogRecord.time_ns`. Go's zero `time.Time` (0001-01-01T00:00:00Z, what Docker shows as
`FinishedAt` of a container that never stopped) is `ZERO_TIME_NS`.
"""
from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from .errors import InvalidParameter

NS_PER_SECOND = 1_000_000_000
_NS_PER_MINUTE = 60 * NS_PER_SECOND
_NS_PER_HOUR = 60 * _NS_PER_MINUTE

ZERO_TIME = "0001-01-01T00:00:00Z"
# Go's zero time.Time as Unix nanoseconds. Python ints do not overflow, so it round-trips
# through rfc3339nano / parse_docker_time like any other instant.
ZERO_TIME_NS = -62_135_596_800 * NS_PER_SECOND

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TimeLike = int | str | None
"""An instant: Unix nanoseconds, a Docker/RFC 3339 string, or None for Go's zero time."""


# --------------------------------------------------------------------------- formatting

@lru_cache(maxsize=1024)
def _format_seconds(seconds: int) -> str:
    # Cached because log writers stamp thousands of records within the same second.
    # datetime instead of time.gmtime: it pads year 1 as "0001" (glibc's %Y does not).
    d = _EPOCH + timedelta(seconds=seconds)
    return (f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
            f"T{d.hour:02d}:{d.minute:02d}:{d.second:02d}")


def rfc3339nano(ns: int) -> str:
    """Go's `t.UTC().Format(time.RFC3339Nano)`: trailing zeros of the fraction trimmed, and
    no fraction at all on a whole second (`2026-11-28T10:48:13.12345Z`, `...:13Z`). This is
    what json-file writes in its "time" field and what inspect shows for Created/StartedAt."""
    seconds, frac = divmod(ns, NS_PER_SECOND)
    head = _format_seconds(seconds)
    if frac == 0:
        return head + "Z"
    return f"{head}.{frac:09d}".rstrip("0") + "Z"


def rfc3339nano_fixed(ns: int) -> str:
    """Docker's RFC3339NanoFixed (`2006-01-02T15:04:05.000000000Z07:00`): always nine
    fraction digits. `docker logs -t` and `docker events` timestamps use this one."""
    seconds, frac = divmod(ns, NS_PER_SECOND)
    return f"{_format_seconds(seconds)}.{frac:09d}Z"


# --------------------------------------------------------------------------- parsing

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


@lru_cache(maxsize=4096)
def _civil_to_unix(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    # datetime() validates the calendar (Feb 30 is an error, as in Go); timegm handles year 1.
    datetime(year, month, day, hour, minute, second)
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


@lru_cache(maxsize=1024)
def _utc_seconds(head: str) -> int:
    # `YYYY-MM-DDTHH:MM:SS`, already known to be well formed by its shape; cached because
    # json-file lines written within one second share it.
    return _civil_to_unix(int(head[0:4]), int(head[5:7]), int(head[8:10]),
                          int(head[11:13]), int(head[14:16]), int(head[17:19]))


_UTC_HEAD = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", re.ASCII)
_DIGITS = re.compile(r"\d{1,9}", re.ASCII)
_FRAC_SCALE: tuple[int, ...] = tuple(10 ** (9 - k) for k in range(10))  # ".12" -> 12 * 10**7 ns


def parse_docker_time(s: str) -> int:
    """Parse an RFC 3339 time as Docker emits it (any fraction length, `Z` or `+hh:mm`) into
    Unix nanoseconds. `0001-01-01T00:00:00Z` gives ZERO_TIME_NS. Raises ValueError."""
    # Fast path for what Docker and we write (UTC, `Z`, at most nine fraction digits): reading
    # a json-file log parses one of these per line.
    n = len(s)
    if n >= 20 and s[-1] == "Z" and (n == 20 or s[19] == ".") and _UTC_HEAD.match(s):
        try:
            seconds = _utc_seconds(s[:19])
        except ValueError:
            pass  # let the full parser produce the error message
        else:
            if n == 20:
                return seconds * NS_PER_SECOND
            frac = s[20:-1]
            if _DIGITS.fullmatch(frac):
                return seconds * NS_PER_SECOND + int(frac) * _FRAC_SCALE[len(frac)]
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise ValueError(f"invalid RFC 3339 time: {s!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        seconds = _civil_to_unix(year, month, day, hour, minute, second)
    except ValueError as e:
        raise ValueError(f"invalid RFC 3339 time: {s!r}: {e}") from None
    frac = m.group(7)
    # Go accepts more than nine digits and truncates: below a nanosecond is not representable.
    ns = int(frac[:9].ljust(9, "0")) if frac else 0
    if m.group(9):
        offset = int(m.group(10)) * 3600 + int(m.group(11)) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return seconds * NS_PER_SECOND + ns


def is_zero_time(t: TimeLike) -> bool:
    """Go's `t.IsZero()` over our representations (None, 0 and ZERO_TIME_NS all mean unset:
    no container really started at the Unix epoch)."""
    if t is None:
        return True
    if isinstance(t, str):
        # the literal first: it is what every never-started container carries
        return t == "" or t == ZERO_TIME or parse_docker_time(t) == ZERO_TIME_NS
    return t == 0 or t == ZERO_TIME_NS


def to_ns(t: TimeLike) -> int:
    """An instant as Unix nanoseconds (None is Go's zero time)."""
    if t is None:
        return ZERO_TIME_NS
    if isinstance(t, str):
        return parse_docker_time(t)
    return t


def docker_time(t: TimeLike) -> str:
    """How inspect shows an instant: RFC3339Nano, or `0001-01-01T00:00:00Z` when unset."""
    return ZERO_TIME if is_zero_time(t) else rfc3339nano(to_ns(t))


# --------------------------------------------------------------------------- durations

def human_duration_ns(ns: int) -> str:
    """go-units HumanDuration over a Go time.Duration (integer nanoseconds)."""
    seconds = int(ns / NS_PER_SECOND) if ns >= 0 else 0  # Go's int() truncates toward zero
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = ns // _NS_PER_MINUTE
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    # Go rounds to the nearest hour here (d.Round(time.Hour)), halves away from zero: 1h29m is
    # "About an hour", 1h31m is "2 hours".
    hours = (ns + _NS_PER_HOUR // 2) // _NS_PER_HOUR
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    # The years branch uses the unrounded hours, as Go does (int(d.Hours())).
    return f"{ns // _NS_PER_HOUR // 24 // 365} years"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: `Less than a second`, `1 second`, `N seconds`, `About a minute`,
    `N minutes`, `About an hour`, `N hours`, `N days`, `N weeks`, `N months`, `N years`."""
    return human_duration_ns(round(seconds * NS_PER_SECOND))


# --------------------------------------------------------------------------- filters

# Docker's time filters: `until`/`since` values are Unix timestamps (with a fraction), RFC 3339
# dates, or Go durations relative to now ("10m", "1h30m").

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
