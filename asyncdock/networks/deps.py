"""What the network manager asks of the containers: the record a container reference names.

The wiring hands it in once the container manager exists (networks start first: containers are
recovered onto them), so the networks package never reaches for the container manager.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ContainerHostNet(Protocol):
    """The network side of a container's HostConfig."""

    @property
    def network_mode(self) -> str: ...
    @property
    def extra_hosts(self) -> list[str] | None: ...


class KnownContainer(Protocol):
    """A container record, as far as its network attachments go."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def host_config(self) -> ContainerHostNet: ...


# A name, full ID or unique prefix -> the container's record; raises errors.NotFound.
ContainerLookup = Callable[[str], KnownContainer]
