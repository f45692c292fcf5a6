"""What the three suites share: the plugins of a group, found as the engine finds them."""
from __future__ import annotations

import pytest

from asyncdock.plugins import Registration, discover


def registered(group: str) -> dict[str, Registration]:
    """The group's plugins through their entry points (asyncdock.plugins.discover), sorted by
    name so test ids are stable."""
    return dict(sorted(discover(group).items()))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
