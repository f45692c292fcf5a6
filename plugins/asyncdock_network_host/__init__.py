"""The host network driver: the container shares the host's network namespace."""
from __future__ import annotations

from typing import Any

from asyncdock.networks.base import Endpoint, Network
from asyncdock.plugins import InitContext, Registration


class HostDriver:
    name = "host"
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


plugin = Registration(kind="network", id="host", factory=HostDriver, description="the host's network namespace")
