"""Engine API versions: the range this engine serves and the daemon's configured floor.

Docker 29.3+ serves 1.24 up to 1.54; a request names its version in the path (`/v1.44/...`), an
unversioned path means the newest. The floor can be raised (never below 1.24) by daemon.json's
`min-api-version` or the environment's `DOCKER_MIN_API_VERSION`, the environment winning as it
does for dockerd, where it is the older of the two knobs and the one service files set."""
from __future__ import annotations

import re
from collections.abc import Mapping

Version = tuple[int, int]

NEWEST: Version = (1, 54)
OLDEST: Version = (1, 24)

_TEXT = re.compile(r"^(\d+)\.(\d+)$")


def text(v: Version) -> str:
    return "%d.%d" % v


def parse(value: str) -> Version | None:
    m = _TEXT.match(value.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def configured_minimum(configured: str, environ: Mapping[str, str]) -> Version:
    """The floor of the served range, or ValueError with dockerd's text for one out of range."""
    value = environ.get("DOCKER_MIN_API_VERSION") or configured
    if not value:
        return OLDEST
    v = parse(value)
    if v is None or not OLDEST <= v <= NEWEST:
        raise ValueError(
            f"invalid minimum API version ({value}): must be between {text(OLDEST)} and {text(NEWEST)}")
    return v
