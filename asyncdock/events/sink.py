"""The publishing side of the event bus, as the subsystems that only publish see it."""
from __future__ import annotations

from typing import Protocol


class EventSink(Protocol):
    """What the container, network and volume managers call to publish (EventBus.event): they
    never subscribe, so a test can hand them anything that records the calls."""

    def event(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None,
              *, legacy_from: str = "") -> object: ...
