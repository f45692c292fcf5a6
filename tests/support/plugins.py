"""The plugins of an entry-point group, found as the engine finds them, for the conformance
suites (tests/conformance/)."""
from __future__ import annotations

from asyncdock.plugins import Registration, discover


def registered(group: str) -> dict[str, Registration]:
    """The group's plugins through their entry points (asyncdock.plugins.discover), sorted by
    name so test ids are stable."""
    return dict(sorted(discover(group).items()))
