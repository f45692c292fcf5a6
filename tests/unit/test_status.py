"""ps STATUS, as table tests (moby's State.String())."""
from __future__ import annotations

import pytest

from asyncdock.base.timefmt import ZERO_TIME, ZERO_TIME_NS, parse_docker_time
from asyncdock.containers.status import status_text

S = 1_000_000_000

NOW = parse_docker_time("2026-11-28T09:16:20Z")


def ago(seconds: float) -> int:
    return NOW - int(seconds * S)


STATUS = [
    # (status, started_at, finished_at, exit_code, health, expected)
    ("created", None, None, 0, None, "Created"),
    ("created", ZERO_TIME, ZERO_TIME, 0, None, "Created"),
    ("running", ago(0.3), ZERO_TIME_NS, 0, None, "Up Less than a second"),
    ("running", ago(1.2), None, 0, None, "Up 1 second"),
    ("running", ago(3), None, 0, None, "Up 3 seconds"),
    ("running", ago(150), None, 0, "healthy", "Up 2 minutes (healthy)"),
    ("running", ago(150), None, 0, "unhealthy", "Up 2 minutes (unhealthy)"),
    ("running", ago(5), None, 0, "starting", "Up 5 seconds (health: starting)"),
    ("running", ago(5), None, 0, "none", "Up 5 seconds"),
    ("paused", ago(5), None, 0, "healthy", "Up 5 seconds (Paused)"),
    ("restarting", ago(60), ago(3), 1, None, "Restarting (1) 3 seconds ago"),
    ("exited", ago(200), ago(120), 0, None, "Exited (0) 2 minutes ago"),
    ("exited", ago(1), ago(0.2), 3, None, "Exited (3) Less than a second ago"),
    ("exited", ago(9000), ago(7200), 137, None, "Exited (137) 2 hours ago"),
    ("exited", None, None, 0, None, "Created"),  # never started: Docker says Created
    ("exited", ago(5), ZERO_TIME_NS, 0, None, ""),  # Docker's own empty fallthrough
    ("removing", ago(5), ago(1), 0, None, "Removal In Progress"),
    ("dead", ago(5), ago(1), 0, None, "Dead"),
]


@pytest.mark.parametrize(("status", "started", "finished", "code", "health", "text"), STATUS)
def test_status_text(status: str, started: int | str | None, finished: int | str | None,
                     code: int, health: str | None, text: str) -> None:
    assert status_text(status, started_at=started, finished_at=finished, exit_code=code,
                       health=health, now=NOW) == text


def test_status_text_accepts_docker_time_strings() -> None:
    def exited(finished: str) -> str:
        return status_text("exited", started_at="2026-11-28T09:13:44.5Z", finished_at=finished,
                           exit_code=2, now=NOW)

    assert exited("2026-11-28T09:14:19.9Z") == "Exited (2) 2 minutes ago"
    # One nanosecond short of two minutes: Go truncates, so still "About a minute".
    assert exited("2026-11-28T09:14:20.000000001Z") == "Exited (2) About a minute ago"
