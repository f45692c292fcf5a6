"""Docker's time strings, as table tests: go-units HumanDuration, RFC 3339."""
from __future__ import annotations

import pytest

from asyncdock.base.timefmt import (ZERO_TIME, ZERO_TIME_NS, docker_time, human_duration, human_duration_ns,
                                    is_zero_time, parse_docker_time, rfc3339nano, rfc3339nano_fixed)

S = 1_000_000_000
MIN = 60 * S
H = 60 * MIN
DAY = 24 * H
WEEK = 7 * DAY
MONTH = 30 * DAY
YEAR = 365 * DAY

# go-units' own test table (duration_test.go), which Docker's CLI output follows.
HUMAN = [
    (450 * 1_000_000, "Less than a second"),
    (0, "Less than a second"),
    (-5 * S, "Less than a second"),
    (999_999_999, "Less than a second"),
    (1 * S, "1 second"),
    (1 * S + 999_999_999, "1 second"),
    (2 * S, "2 seconds"),
    (45 * S, "45 seconds"),
    (59 * S, "59 seconds"),
    (60 * S, "About a minute"),
    (119 * S, "About a minute"),
    (2 * MIN, "2 minutes"),
    (3 * MIN, "3 minutes"),
    (35 * MIN, "35 minutes"),
    (35 * MIN + 40 * S, "35 minutes"),
    (59 * MIN + 59 * S, "59 minutes"),
    (1 * H, "About an hour"),
    (1 * H + 29 * MIN, "About an hour"),
    (1 * H + 30 * MIN, "2 hours"),  # rounded to the nearest hour, halves up
    (1 * H + 31 * MIN, "2 hours"),
    (3 * H + 29 * MIN, "3 hours"),
    (3 * H + 31 * MIN, "4 hours"),
    (24 * H, "24 hours"),
    (DAY + 12 * H, "36 hours"),
    (47 * H + 29 * MIN, "47 hours"),
    (47 * H + 30 * MIN, "2 days"),
    (2 * DAY, "2 days"),
    (7 * DAY, "7 days"),
    (13 * DAY + 5 * H, "13 days"),
    (2 * WEEK, "2 weeks"),
    (2 * WEEK + 4 * DAY, "2 weeks"),
    (3 * WEEK, "3 weeks"),
    (4 * WEEK + 3 * DAY, "4 weeks"),
    (1 * MONTH, "4 weeks"),
    (MONTH + 2 * WEEK, "6 weeks"),
    (2 * MONTH, "2 months"),
    (3 * MONTH + 1 * WEEK, "3 months"),
    (5 * MONTH + 2 * WEEK, "5 months"),
    (13 * MONTH, "13 months"),
    (24 * MONTH, "24 months"),
    (24 * MONTH + 2 * WEEK, "2 years"),
    (3 * YEAR + 2 * MONTH, "3 years"),
]


@pytest.mark.parametrize(("ns", "text"), HUMAN)
def test_human_duration(ns: int, text: str) -> None:
    assert human_duration_ns(ns) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.45, "Less than a second"), (1.0, "1 second"), (47, "47 seconds"), (60, "About a minute"),
    (3 * 3600 + 59 * 60, "4 hours"), (3 * 365 * 86400, "3 years"),
])
def test_human_duration_seconds(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(("ns", "trimmed", "fixed"), [
    (1_795_857_378_848_707_057, "2026-11-28T09:16:18.848707057Z",
     "2026-11-28T09:16:18.848707057Z"),
    (1_795_857_375_691_696_760, "2026-11-28T09:16:15.69169676Z",  # inspect's "Created"
     "2026-11-28T09:16:15.691696760Z"),
    (1_795_857_378_120_000_000, "2026-11-28T09:16:18.12Z", "2026-11-28T09:16:18.120000000Z"),
    (1_795_857_378_000_000_000, "2026-11-28T09:16:18Z", "2026-11-28T09:16:18.000000000Z"),
    (1, "1970-01-01T00:00:00.000000001Z", "1970-01-01T00:00:00.000000001Z"),
    (-1, "1969-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999999999Z"),
    (ZERO_TIME_NS, "0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000000Z"),
])
def test_rfc3339nano(ns: int, trimmed: str, fixed: str) -> None:
    assert rfc3339nano(ns) == trimmed
    assert rfc3339nano_fixed(ns) == fixed
    assert parse_docker_time(trimmed) == ns
    assert parse_docker_time(fixed) == ns


@pytest.mark.parametrize(("text", "ns"), [
    ("2026-11-28T09:16:15.833510417Z", 1_795_857_375_833_510_417),
    ("2026-11-28T10:16:15.833510417+01:00", 1_795_857_375_833_510_417),
    ("2026-11-28T04:46:15.8335104-04:30", 1_795_857_375_833_510_400),
    ("2026-11-28T09:16:15.8335104179999Z", 1_795_857_375_833_510_417),  # Go truncates
    ("2026-11-28T09:16:15Z", 1_795_857_375_000_000_000),
    ("2024-02-29T00:00:00Z", 1_709_164_800_000_000_000),
])
def test_parse_docker_time(text: str, ns: int) -> None:
    assert parse_docker_time(text) == ns


@pytest.mark.parametrize("text", [
    "", "2026-11-28", "2026-11-28 09:16:15Z", "2026-11-28T09:16:15", "2026-02-30T00:00:00Z",
    "2026-11-28T25:00:00Z", "2026-11-28T09:16:15.Z", "1795857375",
])
def test_parse_docker_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_docker_time(text)


def test_zero_time() -> None:
    assert ZERO_TIME == "0001-01-01T00:00:00Z"
    assert parse_docker_time(ZERO_TIME) == ZERO_TIME_NS
    for t in (None, 0, ZERO_TIME_NS, ZERO_TIME, ""):
        assert is_zero_time(t)
        assert docker_time(t) == ZERO_TIME
    assert not is_zero_time(1_795_857_375_833_510_417)
    assert docker_time(1_795_857_375_833_510_417) == "2026-11-28T09:16:15.833510417Z"
