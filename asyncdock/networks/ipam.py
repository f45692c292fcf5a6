"""Address management: pick subnets that collide with nothing the host routes (Docker's pool
order: 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/20 ... 192.168.240.0/20), and hand out
addresses inside a network."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from ..base.errors import Forbidden, InvalidParameter
from .netlink import RTN_BROADCAST, Netlink

IPv4Net = ipaddress.IPv4Network


def default_pools() -> Iterator[IPv4Net]:
    for i in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{i}.0.0/16")
    for i in range(0, 256, 16):
        yield ipaddress.IPv4Network(f"192.168.{i}.0/20")


def host_routes() -> list[IPv4Net]:
    """Every IPv4 destination in every routing table except default routes and broadcast ones
    (`ip -4 route show table all`, asked over netlink in-process). Blocking."""
    try:
        with Netlink() as nl:
            routes = nl.routes4()
    except OSError:
        return []
    nets: list[IPv4Net] = []
    for r in routes:
        if not r.dst or r.dst_len == 0 or r.type == RTN_BROADCAST:
            continue
        try:
            nets.append(ipaddress.IPv4Network(f"{r.dst}/{r.dst_len}", strict=False))
        except ValueError:
            continue
    return nets


def pick_subnet(taken: Iterable[IPv4Net], routes: Iterable[IPv4Net]) -> IPv4Net:
    busy = list(taken) + list(routes)
    for pool in default_pools():
        if not any(pool.overlaps(b) for b in busy):
            return pool
    raise Forbidden("could not find an available, non-overlapping IPv4 address pool among the defaults "
                    "to assign to the network")


def check_subnet(subnet: str, gateway: str, taken: Iterable[IPv4Net], routes: Iterable[IPv4Net]) -> tuple[IPv4Net, str]:
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        raise InvalidParameter(f"invalid CIDR address: {subnet}") from None
    if net.prefixlen > 30:
        raise InvalidParameter(f"subnet {subnet} is too small")
    for t in taken:
        if net.overlaps(t):
            raise Forbidden("Pool overlaps with other one on this address space")
    for r in routes:
        if net.overlaps(r):
            raise Forbidden(f"subnet {net} overlaps the host's route to {r}: asyncdock never shadows the host's "
                            f"routes; choose another subnet")
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise InvalidParameter(f"invalid gateway address {gateway}") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidParameter(f"gateway {gateway} is not in subnet {net}")
        return net, gateway
    return net, str(net.network_address + 1)


class Pool:
    """Addresses of one network in use by running endpoints (memory only: no endpoint survives
    a daemon restart, Docker without live-restore)."""

    def __init__(self, subnet: str, gateway: str) -> None:
        self.net = ipaddress.IPv4Network(subnet)
        self.gateway = ipaddress.IPv4Address(gateway)
        self.used: set[ipaddress.IPv4Address] = set()
        self._next = int(self.net.network_address) + 1

    def allocate(self, wanted: str = "") -> str:
        if wanted:
            ip = ipaddress.IPv4Address(wanted)
            if ip not in self.net:
                raise InvalidParameter(f"no available IPv4 addresses on this network's address pools: {wanted} is "
                                       f"outside {self.net}")
            if ip in self.used or ip == self.gateway:
                raise Forbidden("Address already in use")
            self.used.add(ip)
            return str(ip)
        first = int(self.net.network_address) + 1
        last = int(self.net.broadcast_address) - 1
        span = last - first + 1
        # Round-robin from the last one given, as Docker's bitmap allocator does: a stopped
        # container's address is not handed to the next one at once.
        for i in range(span):
            cand = first + (self._next - first + i) % span
            ip = ipaddress.IPv4Address(cand)
            if ip == self.gateway or ip in self.used:
                continue
            self.used.add(ip)
            self._next = cand + 1
            return str(ip)
        raise Forbidden(f"no available IPv4 addresses on this network's address pools: {self.net}")

    def release(self, ip: str) -> None:
        try:
            self.used.discard(ipaddress.IPv4Address(ip))
        except ValueError:
            pass


def mac_for(ip: str) -> str:
    """Docker's MAC: 02:42 then the four bytes of the IPv4 address."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)
