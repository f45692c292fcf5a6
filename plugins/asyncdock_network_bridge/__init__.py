"""The bridge network driver: one Linux bridge per network (`adock0` for the default network,
`br-<id12>` for user-defined ones), a veth pair per container endpoint, outbound NAT for the
network's own subnet in our nftables table, isolation between our bridges, IPv4 forwarding on
while a bridge exists (restored after). Every link we make carries the ifalias `asyncdock:...`
so that what a crashed run left can be found and removed without touching anything else."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from asyncdock.base.errors import SystemError_
from asyncdock.networks import firewall, netns
from asyncdock.networks.base import Endpoint, Network
from asyncdock.networks.netlink import Netlink, NetlinkError
from asyncdock.networks.netns import NetnsError
from asyncdock.plugins import InitContext, Registration
from asyncdock.util.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

ALIAS = "asyncdock:"
DEFAULT_BRIDGE = "adock0"


class BridgeDriver:
    name = "bridge"
    needs_endpoint = True
    # The host end of an endpoint is a veth: the kernel deletes it with its peer when the
    # container's netns dies, in one batch for every netns dying at once. The manager then
    # waits for that (NetworkManager.release) instead of asking us to delete it.
    links_go_with_netns = True

    def __init__(self, ctx: InitContext) -> None:
        self.root = ctx.root
        self.root.mkdir(parents=True, exist_ok=True)
        self.forwarding = firewall.Forwarding(self.root / "ip_forward.orig")
        self._lock = threading.Lock()
        self._up: dict[str, firewall.BridgeRule] = {}  # network id -> rule of a bridge that exists
        self._checked = False
        # Several daemons may share a host (the tests run some side by side): everything we
        # name or mark carries this daemon's tag, and cleanup touches only what carries it.
        self.tag = str(ctx.options.get("tag", "0"))
        self.alias = f"{ALIAS}{self.tag}:"
        self.default_bridge = str(ctx.options.get("default_bridge", DEFAULT_BRIDGE))

    # ---- kernel support
    def check(self) -> None:
        if self._checked:
            return
        try:
            netns.run_in_fresh(_probe_link_kinds)
        except NetnsError as e:
            raise SystemError_(f"bridge networking is unavailable: {e.strerror}") from None
        try:
            firewall.check()
        except firewall.FirewallError as e:
            raise SystemError_(f"bridge networking is unavailable: {e}") from None
        self._checked = True

    # ---- networks
    def bridge_name(self, net: Network) -> str:
        return net.options.get("com.docker.network.bridge.name") or net.bridge or (
            self.default_bridge if net.builtin else f"br-{net.id[:12]}")

    def pick_default_bridge(self, net: Network) -> str:
        """adock0, or the first adockN no other daemon holds."""
        with Netlink() as nl:  # the links of this thread's netns (sysfs shows its mounter's)
            taken = {lk.name: lk.alias for lk in nl.links()}
        for i in range(100):
            name = self.default_bridge if i == 0 else f"{self.default_bridge.rstrip('0123456789')}{i}"
            if name not in taken or taken[name] == f"{self.alias}net:{net.id[:12]}":
                return name
        raise SystemError_("no free name for the default bridge")

    def options(self, net: Network) -> dict[str, Any]:
        if net.builtin:
            return {"com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                    "com.docker.network.bridge.name": self.bridge_name(net),
                    "com.docker.network.driver.mtu": str(net.mtu)}
        return dict(net.options)

    def create_network(self, net: Network) -> None:
        self.check()
        with self._lock:
            self._ensure_bridge(net)

    def _ensure_bridge(self, net: Network) -> None:
        if net.id in self._up:
            return
        if net.builtin and "com.docker.network.bridge.name" not in net.options:
            net.bridge = self.pick_default_bridge(net)
        br = self.bridge_name(net)
        subnet = net.subnet()
        plen = int(subnet.split("/")[1])
        with Netlink() as nl:
            old = nl.link(br)
            if old is not None and not old.alias and self._is_intended(br):
                nl.del_link(old.index)  # ours, made by a run killed before it marked it
                old = None
            if old is not None:
                if old.alias != f"{self.alias}net:{net.id[:12]}":
                    raise SystemError_(f"a network interface named {br} exists and is not ours: refusing to use it")
                nl.del_link(old.index)
            index = 0
            # The kernel ignores an ifalias given at creation, so there is a moment when the
            # bridge exists without our mark: a kill there would leave a link no later run could
            # tell from someone else's. The intent written first says whose it is.
            self._intend(br)
            try:
                nl.add_bridge(br)
                index = nl.index(br)
                nl.set_link(index, alias=f"{self.alias}net:{net.id[:12]}")
                self._intended(br)
                # set after creation, as `ip link set mtu` did: the bridge then keeps this MTU
                # rather than following its ports'
                nl.set_link(index, mtu=net.mtu)
                nl.add_addr4(index, net.gateway(), plen)
                nl.set_link(index, up=True)
            except NetlinkError as e:
                if index:
                    nl.del_link(index)
                self._intended(br)
                raise SystemError_(f"creating bridge {br}: {e.strerror}") from None
            masq = net.options.get("com.docker.network.bridge.enable_ip_masquerade", "true") != "false"
            self._up[net.id] = firewall.BridgeRule(br, subnet, masquerade=masq, internal=net.internal)
            try:
                self._sync_firewall()
            except Exception:
                self._up.pop(net.id, None)
                _delete_ours(nl, br, self.alias)
                raise

    def _sync_firewall(self) -> None:
        rules = list(self._up.values())
        try:
            if any(r.masquerade and not r.internal for r in rules):
                self.forwarding.enable()
            firewall.apply(self.tag, rules)
            if not rules:
                self.forwarding.restore()
        except firewall.FirewallError as e:
            raise SystemError_(str(e)) from None

    def delete_network(self, net: Network) -> None:
        with self._lock:
            br = self.bridge_name(net)
            self._up.pop(net.id, None)
            with Netlink() as nl:
                _delete_ours(nl, br, self.alias)
            self._sync_firewall()

    # ---- endpoints
    def join(self, net: Network, ep: Endpoint, *, default_route: bool) -> None:
        """The veth pair in one request, its container end made directly inside the netns
        (named, addressed by MAC, MTU set), the host end enslaved to the bridge and up; then,
        from a netlink socket opened inside the netns, loopback up, the address, the link up,
        the default route. Sets ep.host_ifindex."""
        self.check()
        with self._lock:
            self._ensure_bridge(net)
        br = self.bridge_name(net)
        ns_fd = os.open(ep.netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with Netlink() as nl:
                created = False
                try:
                    ep.host_ifindex = nl.add_veth(ep.host_ifname, ep.ifname, mtu=net.mtu, master=nl.index(br),
                                                  up=True, peer_mac=ep.mac, peer_netns_fd=ns_fd)
                    created = True
                    nl.set_link(ep.host_ifindex, alias=f"{self.alias}ep:{ep.container_id[:12]}")
                    with netns.run_in(ns_fd, Netlink) as inner:
                        inner.set_link(inner.index("lo"), up=True)
                        index = inner.index(ep.ifname)
                        inner.add_addr4(index, ep.ip, ep.prefix_len)
                        inner.set_link(index, up=True)
                        if default_route:
                            inner.add_default_route4(ep.gateway, index)
                except (NetlinkError, NetnsError) as e:
                    if created:  # never a link of the same name that was there before
                        try:
                            nl.del_link(ep.host_ifindex)
                        except NetlinkError as e2:
                            log.warning("removing %s after a failed join: %s", ep.host_ifname, e2.strerror)
                    ep.host_ifindex = 0
                    raise SystemError_(f"failed to set up network endpoint for {ep.container_name} on {net.name}: "
                                       f"{e.strerror}") from None
        finally:
            os.close(ns_fd)

    def leave(self, net: Network, ep: Endpoint) -> None:
        """Delete the host end now (the peer goes with it). Only the link we made: same name,
        and the same index when we know it (a name can be taken again once ours is gone)."""
        with Netlink() as nl:
            lk = nl.link(ep.host_ifname)
            if lk is not None and (not ep.host_ifindex or lk.index == ep.host_ifindex):
                nl.del_link(lk.index)

    # ---- intents: a bridge being made, before it carries our alias
    def _intent_path(self, name: str) -> Path:
        return self.root / f"creating-{name}"

    def _intend(self, name: str) -> None:
        atomic_write_bytes(self._intent_path(name), b"", durable=False)  # the link does not outlive a host crash either

    def _intended(self, name: str) -> None:
        self._intent_path(name).unlink(missing_ok=True)

    def _is_intended(self, name: str) -> bool:
        return self._intent_path(name).exists()

    def _clear_intents(self, nl: Netlink) -> None:
        """Delete each alias-less link an intent names (made, never marked, by a killed run)."""
        for p in self.root.glob("creating-*"):
            name = p.name.removeprefix("creating-")
            lk = nl.link(name)
            if lk is not None and not lk.alias:
                try:
                    nl.del_link(lk.index)
                except NetlinkError as e:
                    log.warning("removing unmarked bridge %s: %s", name, e.strerror)
                    continue
            p.unlink(missing_ok=True)

    # ---- shutdown / crash leftovers
    def cleanup(self, known: list[Network]) -> None:
        with self._lock:
            with Netlink() as nl:
                self._clear_intents(nl)
                for index in our_links(self.alias, nl):
                    try:
                        nl.del_link(index)
                    except NetlinkError as e:  # the others still go
                        log.warning("removing link %d: %s", index, e.strerror)
            self._up.clear()
            firewall.remove_chains(self.tag)
            self.forwarding.restore()


def _probe_link_kinds() -> None:
    """Make a bridge and a veth pair (in the throwaway netns run_in_fresh gives: the kernel
    removes them with it, nothing ever appears on the host, no name can collide)."""
    with Netlink() as nl:
        try:
            nl.add_bridge("adprobe")
        except NetlinkError as e:
            raise SystemError_(f"bridge networking is unavailable: the kernel has no bridge support "
                               f"(CONFIG_BRIDGE): {e.strerror}") from None
        try:
            nl.add_veth("adprobev", "adprobevp")
        except NetlinkError as e:
            raise SystemError_(f"bridge networking is unavailable: the kernel has no veth support "
                               f"(CONFIG_VETH): {e.strerror}") from None


def _delete_ours(nl: Netlink, name: str, alias: str) -> None:
    """Delete link `name` if it carries our alias prefix (never someone else's)."""
    lk = nl.link(name)
    if lk is not None and lk.alias.startswith(alias):
        nl.del_link(lk.index)


def our_links(prefix: str = ALIAS, nl: Netlink | None = None) -> list[int]:
    """Indexes of our links in the host netns, bridges last (veths go with their bridge anyway)."""
    own = nl is None
    nl = nl or Netlink()
    try:
        found = [lk for lk in nl.links() if lk.alias.startswith(prefix)]
    except NetlinkError:
        return []
    finally:
        if own:
            nl.close()
    veths = [lk.index for lk in found if ":net:" not in lk.alias]
    bridges = [lk.index for lk in found if ":net:" in lk.alias]
    return veths + bridges


plugin = Registration(kind="network", id="bridge", factory=BridgeDriver,
                      description="Linux bridge + veth, outbound NAT in nftables table ip asyncdock")
