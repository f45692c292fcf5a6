"""Fixtures shared by the integration modules that run containers on the session's daemon."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon


@pytest.fixture
def d(shared_daemon: Daemon) -> Iterator[Daemon]:
    """The session's daemon with busybox pulled. A module that needs a daemon of its own
    defines its own `d` (test_networks_e2e)."""
    shared_daemon.docker("pull", "-q", "busybox")
    yield shared_daemon
