"""The back-off of restart policies, as Docker's restartmanager: the first restart after 100 ms,
each next one after twice the pause before it, never more than a minute, and back to 100 ms
once a run lasted 10 s (a container that ran that long is not crash-looping)."""
from __future__ import annotations

RESTART_BASE = 0.1
RESTART_MAX = 60.0
RESET_AFTER = 10.0


def next_delay(previous: float | None, ran: float) -> float:
    """The pause before the next restart, given the pause before the last one (None: no
    restart yet since the user's start) and how long the run that just ended lasted (s)."""
    if ran >= RESET_AFTER:
        return RESTART_BASE
    return min((previous if previous is not None else RESTART_BASE / 2) * 2, RESTART_MAX)
