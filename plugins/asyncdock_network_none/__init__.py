"""The null network driver (network `none`): a private namespace with loopback only."""
from __future__ import annotations

from asyncdock.networks.simple import NamespaceOnlyDriver
from asyncdock.plugins import Registration


class NullDriver(NamespaceOnlyDriver):
    name = "null"


plugin = Registration(kind="network", id="null", factory=NullDriver, description="loopback only")
