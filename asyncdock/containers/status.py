"""The STATUS column of `docker ps`: a pure function of the container's state and `now`, so the
ps table tests pin exact strings without sleeping or mocking the clock."""
from __future__ import annotations

import time

from ..base.timefmt import TimeLike, human_duration_ns, is_zero_time, to_ns


def _health_suffix(health: str | None) -> str | None:
    # Docker prints health only when the container has a healthcheck; "starting" gets a
    # prefix because "(starting)" alone would read like a lifecycle state.
    if not health or health == "none":
        return None
    return "health: starting" if health == "starting" else health


def status_text(status: str, *, started_at: TimeLike = None, finished_at: TimeLike = None,
                exit_code: int = 0, health: str | None = None, now: int | None = None) -> str:
    """The STATUS column of `docker ps` (moby's State.String()).

    `status` is Docker's State.Status word: created, running, paused, restarting, removing,
    exited or dead. `health` is State.Health.Status (starting, healthy, unhealthy) or None when
    there is no healthcheck. `now` defaults to the wall clock.
    """
    now_ns = time.time_ns() if now is None else now

    def since(t: TimeLike) -> str:
        return human_duration_ns(now_ns - to_ns(t))

    if status == "paused":
        return f"Up {since(started_at)} (Paused)"
    if status == "restarting":
        return f"Restarting ({exit_code}) {since(finished_at)} ago"
    if status == "running":
        suffix = _health_suffix(health)
        up = f"Up {since(started_at)}"
        return f"{up} ({suffix})" if suffix else up
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    if is_zero_time(started_at):
        return "Created"
    if is_zero_time(finished_at):
        # Docker's own fallthrough: started but never finished and not running (only seen
        # briefly during daemon restore). It prints nothing.
        return ""
    return f"Exited ({exit_code}) {since(finished_at)} ago"
