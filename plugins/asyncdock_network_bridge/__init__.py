"""The bridge network driver: one Linux bridge per network (`adock0` for the default network,
`br-<id12>` for user-defined ones), a veth pair per container endpoint, outbound NAT for the
network's own subnet in our nftables table, isolation between our bridges, IPv4 forwarding on
while a bridge exists (restored after). Every link we make carries the ifalias `asyncdock:...`
so that what a crashed run left can be found and removed without touching anything else."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from asyncdock.errors import SystemError_
from asyncdock.networks import firewall
from asyncdock.networks.base import Endpoint, Network
from asyncdock.networks.netns import NetnsError, ip_batch
from asyncdock.plugins import InitContext, Registration

log = logging.getLogger(__name__)

ALIAS = "asyncdock:"
DEFAULT_BRIDGE = "adock0"


class BridgeDriver:
    name = "bridge"
    needs_endpoint = True

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
        probe = f"adprobe{os.getpid() % 100000}"
        try:
            ip_batch([f"link add {probe} type bridge", f"link del {probe}"])
        except NetnsError as e:
            subprocess.run(["ip", "link", "del", probe], capture_output=True)
            raise SystemError_(f"bridge networking is unavailable: the kernel has no bridge support "
                               f"(CONFIG_BRIDGE): {e.strerror}") from None
        probe_veth = f"adprobev{os.getpid() % 10000}"
        try:
            ip_batch([f"link add {probe_veth} type veth peer name {probe_veth}p", f"link del {probe_veth}"])
        except NetnsError as e:
            subprocess.run(["ip", "link", "del", probe_veth], capture_output=True)
            raise SystemError_(f"bridge networking is unavailable: the kernel has no veth support "
                               f"(CONFIG_VETH): {e.strerror}") from None
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
        for i in range(100):
            name = self.default_bridge if i == 0 else f"{self.default_bridge.rstrip('0123456789')}{i}"
            alias = _ifalias(name)
            if not Path(f"/sys/class/net/{name}").exists() or alias == f"{self.alias}net:{net.id[:12]}":
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
        plen = subnet.split("/")[1]
        exists = subprocess.run(["ip", "link", "show", "dev", br], capture_output=True).returncode == 0
        if exists:
            alias = _ifalias(br)
            if alias != f"{self.alias}net:{net.id[:12]}":
                raise SystemError_(f"a network interface named {br} exists and is not ours: refusing to use it")
            subprocess.run(["ip", "link", "del", br], capture_output=True)
        try:
            ip_batch([f"link add {br} type bridge", f"link set {br} alias {self.alias}net:{net.id[:12]}",
                      f"link set {br} mtu {net.mtu}", f"addr add {net.gateway()}/{plen} dev {br}",
                      f"link set {br} up"])
        except NetnsError as e:
            subprocess.run(["ip", "link", "del", br], capture_output=True)
            raise SystemError_(f"creating bridge {br}: {e.strerror}") from None
        masq = net.options.get("com.docker.network.bridge.enable_ip_masquerade", "true") != "false"
        self._up[net.id] = firewall.BridgeRule(br, subnet, masquerade=masq, internal=net.internal)
        try:
            self._sync_firewall()
        except Exception:
            self._up.pop(net.id, None)
            subprocess.run(["ip", "link", "del", br], capture_output=True)
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
            if _ifalias(br).startswith(self.alias):
                subprocess.run(["ip", "link", "del", br], capture_output=True)
            self._sync_firewall()

    # ---- endpoints
    def join(self, net: Network, ep: Endpoint, *, default_route: bool) -> None:
        self.check()
        with self._lock:
            self._ensure_bridge(net)
        br = self.bridge_name(net)
        mtu = net.mtu
        try:
            ip_batch([f"link add {ep.host_ifname} mtu {mtu} type veth peer name {ep.ifname} mtu {mtu} "
                      f"address {ep.mac} netns {ep.netns_path}",
                      f"link set {ep.host_ifname} alias {self.alias}ep:{ep.container_id[:12]}",
                      f"link set {ep.host_ifname} master {br}",
                      f"link set {ep.host_ifname} up"])
            cmds = ["link set lo up", f"addr add {ep.ip}/{ep.prefix_len} dev {ep.ifname}", f"link set {ep.ifname} up"]
            if default_route:
                cmds.append(f"route add default via {ep.gateway} dev {ep.ifname}")
            ip_batch(cmds, ep.netns_path)
        except NetnsError as e:
            subprocess.run(["ip", "link", "del", ep.host_ifname], capture_output=True)
            raise SystemError_(f"failed to set up network endpoint for {ep.container_name} on {net.name}: "
                               f"{e.strerror}") from None

    def leave(self, net: Network, ep: Endpoint) -> None:
        subprocess.run(["ip", "link", "del", ep.host_ifname], capture_output=True)

    # ---- shutdown / crash leftovers
    def cleanup(self, known: list[Network]) -> None:
        with self._lock:
            for name in our_links(self.alias):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
            self._up.clear()
            firewall.remove_chains(self.tag)
            self.forwarding.restore()


def _ifalias(name: str) -> str:
    try:
        return Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
    except OSError:
        return ""


def our_links(prefix: str = ALIAS) -> list[str]:
    """Links of ours in the host netns, bridges last (veths go with their bridge anyway)."""
    try:
        links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                                          timeout=10).stdout or "[]")
    except (ValueError, OSError, subprocess.SubprocessError):
        return []
    found = [(str(lk.get("ifalias", "")), lk["ifname"]) for lk in links
             if str(lk.get("ifalias", "")).startswith(prefix)]
    veths = [n for a, n in found if ":net:" not in a]
    bridges = [n for a, n in found if ":net:" in a]
    return veths + bridges


plugin = Registration(kind="network", id="bridge", factory=BridgeDriver,
                      description="Linux bridge + veth, outbound NAT in nftables table ip asyncdock")
