"""The base of network drivers that leave the namespace to the runtime (host, null)."""
from __future__ import annotations

from typing import Any

from ..plugins import InitContext
from .base import Endpoint, Network


class NamespaceOnlyDriver:
    """A network driver with nothing to set up: no bridge, no endpoints, no addresses. The
    runtime alone decides the namespace (the host's, or a fresh one with loopback only).
    Subclasses set `name`."""

    name: str
    needs_endpoint = False

    def __init__(self, ctx: InitContext) -> None:
        self.root = ctx.root

    def check(self) -> None:
        pass

    def create_network(self, net: Network) -> None:
        pass

    def delete_network(self, net: Network) -> None:
        pass

    def join(self, net: Network, ep: Endpoint, *, default_route: bool) -> None:
        pass

    def leave(self, net: Network, ep: Endpoint) -> None:
        pass

    def cleanup(self, known: list[Network]) -> None:
        pass

    def options(self, net: Network) -> dict[str, Any]:
        return {}
