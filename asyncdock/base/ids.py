"""IDs as Docker makes them: 64 lower-case hex digits, shown as 12."""
from __future__ import annotations

import os
import re

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def new_id() -> str:
    while True:
        value = os.urandom(32).hex()
        # Docker rejects IDs that parse as a number in scientific notation (e.g. "1e12..."),
        # since the CLI would print them oddly; do the same.
        try:
            float(value[:12])
        except ValueError:
            return value


def short_id(value: str) -> str:
    if value.startswith("sha256:"):
        value = value[7:]
    return value[:12]


def is_full_id(value: str) -> bool:
    return bool(_HEX64.match(value))
