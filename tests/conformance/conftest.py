"""Fixtures the three conformance suites share (their plugins come from
tests/support/plugins.py `registered`, through the entry points)."""
from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
