"""Networks: drivers as plugins (bridge, host, null), IPAM, named netns, the userland port proxy,
the embedded DNS server, and the NetworkManager the engine owns."""
from __future__ import annotations

from .base import Endpoint, Network, NetworkDriver

__all__ = ["Endpoint", "Network", "NetworkDriver"]
