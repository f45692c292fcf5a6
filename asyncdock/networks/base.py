"""Network and endpoint models and the NetworkDriver protocol plugins implement."""
from __future__ import annotations

from typing import Any, Protocol

import msgspec


class IPAMConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    subnet: str = ""
    ip_range: str = ""
    gateway: str = ""
    auxiliary_addresses: dict[str, str] | None = None


class IPAM(msgspec.Struct, rename="pascal"):
    driver: str = "default"
    options: dict[str, str] | None = None
    config: list[IPAMConfig] = msgspec.field(default_factory=list)


class Network(msgspec.Struct, kw_only=True):
    """What the engine keeps per network (persisted), close to Docker's Network object."""

    id: str
    name: str
    driver: str
    created: str
    scope: str = "local"
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    ipam: IPAM = msgspec.field(default_factory=IPAM)
    options: dict[str, str] = msgspec.field(default_factory=dict)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    builtin: bool = False
    # bridge driver: the Linux bridge's name and the MTU of what attaches to it
    bridge: str = ""
    mtu: int = 1500
    created_ns: int = 0

    @property
    def user_defined(self) -> bool:
        return not self.builtin

    def subnet(self) -> str:
        return self.ipam.config[0].subnet if self.ipam.config else ""

    def gateway(self) -> str:
        return self.ipam.config[0].gateway if self.ipam.config else ""


class Endpoint(msgspec.Struct, kw_only=True):
    """One container's attachment to one network while it runs."""

    id: str
    network_id: str
    network_name: str
    container_id: str
    container_name: str
    netns_path: str
    ifname: str = ""           # inside the container (eth0, eth1, ...)
    host_ifname: str = ""      # the host end of the veth
    host_ifindex: int = 0      # its ifindex once made (what the kernel's link events name)
    ip: str = ""
    prefix_len: int = 0
    gateway: str = ""
    mac: str = ""
    aliases: list[str] = msgspec.field(default_factory=list)


class NetworkDriver(Protocol):
    """A network driver plugin. Blocking methods run in worker threads (the manager's job)."""

    name: str
    # True when containers on it get their own netns and an address (bridge); False for
    # host / null, which the runtime handles alone.
    needs_endpoint: bool

    def check(self) -> None:
        """Raise with a clear message when the kernel or tools lack what the driver needs."""

    def create_network(self, net: Network) -> None: ...

    def delete_network(self, net: Network) -> None: ...

    def join(self, net: Network, ep: Endpoint, *, default_route: bool) -> None: ...

    def leave(self, net: Network, ep: Endpoint) -> None:
        """Remove the endpoint now. A driver whose class sets `links_go_with_netns = True` (the
        host end dies with the container's netns, as a veth does) is not asked when the whole
        sandbox goes: the manager waits for the kernel's RTM_DELLINK of ep.host_ifindex, and
        calls leave only if that does not come in time."""

    def cleanup(self, known: list[Network]) -> None:
        """Remove what a previous run of ours left (after a crash)."""

    def options(self, net: Network) -> dict[str, Any]: ...
