"""The host network driver: the container shares the host's network namespace."""
from __future__ import annotations

from asyncdock.networks.simple import NamespaceOnlyDriver
from asyncdock.plugins import Registration


class HostDriver(NamespaceOnlyDriver):
    name = "host"


plugin = Registration(kind="network", id="host", factory=HostDriver, description="the host's network namespace")
