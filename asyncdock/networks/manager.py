"""NetworkManager: the networks the engine knows, the sandboxes (netns + endpoints + published
ports + DNS) of running containers, and everything Docker's API shows about them.

The container start path calls (see docs in the integration recipe):
  container_created -> container_start -> publish -> ... -> release -> container_removed
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import plugins
from ..base import errors
from ..base.timefmt import rfc3339nano
from ..events.sink import EventSink
from ..leftovers import CleanupQueue
from ..base.ids import new_id, short_id
from . import ipam, netns
from .base import IPAM, Endpoint, IPAMConfig, Network, NetworkDriver
from .deps import ContainerLookup, KnownContainer
from .dns import DNS_ADDR, EmbeddedDNS
from .linkreaper import LinkReaper
from .portproxy import Proxy, ProxyBindError, make_proxy
from .store import Attachment, ContainerNet, NetworkStore

log = logging.getLogger(__name__)

BUILTIN = {"bridge": "bridge", "host": "host", "none": "null"}


@dataclass
class Sandbox:
    """A running container's network side."""

    container_id: str
    id: str
    # "host", "none" (private netns, loopback only, made by the runtime) or a netns path
    netns: str
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # network id -> endpoint
    proxies: list[Proxy] = field(default_factory=list)
    ports: dict[str, list[dict[str, str]] | None] = field(default_factory=dict)
    dns: bool = False

    @property
    def key(self) -> str:
        return self.netns if self.netns.startswith("/") else ""


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(key, default)
    snake = {"HostIp": "host_ip", "HostPort": "host_port", "Aliases": "aliases", "IPAMConfig": "ipam_config",
             "Links": "links", "DriverOpts": "driver_opts", "IPv4Address": "ipv4_address",
             "MacAddress": "mac_address", "GwPriority": "gw_priority"}.get(key, key)
    return getattr(obj, snake, default)


_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _mac(value: str) -> str:
    """An endpoint's MAC address as asked (moby's validateEndpointSettings: net.ParseMAC)."""
    if value and not _MAC.match(value):
        raise errors.InvalidParameter(f"invalid MAC address {value}")
    return value.lower()


def _dedup(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


class NetworkManager:
    def __init__(self, *, bus: EventSink, data_root: Path, exec_root: Path, leftovers: CleanupQueue,
                 default_bridge: str = "adock0") -> None:
        self.bus = bus
        self.leftovers = leftovers
        self.exec_root = Path(exec_root)
        self.default_bridge = default_bridge
        self.tag = hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:8]
        self.store = NetworkStore(Path(data_root) / "network")
        self.netns_dir = self.exec_root / "netns"
        # set by the wiring once the container manager exists (see set_container_lookup)
        self._containers: ContainerLookup | None = None
        self.drivers: dict[str, NetworkDriver] = {}
        self.pools: dict[str, ipam.Pool] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self.dns = EmbeddedDNS(self._resolve)
        # veths of stopped containers, deleted by the kernel with their netns (see linkreaper)
        self.reaper = LinkReaper()
        self._lock = asyncio.Lock()
        self._started = False

    # ------------------------------------------------------------------ lifecycle
    def set_container_lookup(self, lookup: ContainerLookup) -> None:
        """The container manager's `get`: until it is set, a container without a network
        record is unknown here (networks start before any container is recovered)."""
        self._containers = lookup

    async def start(self) -> None:
        for name, reg in plugins.discover(plugins.NETWORKS).items():
            root = self.exec_root / "network" / name
            opts = {"tag": self.tag, "default_bridge": self.default_bridge}
            self.drivers[name] = reg.factory(plugins.InitContext(root, opts))
        self.reaper.start()
        try:
            await asyncio.to_thread(self.store.load)

            async def leftovers() -> bool:
                await self._cleanup_leftovers()
                return True

            # what a dead daemon left: a failure here is logged and retried, never fatal
            await self.leftovers.run("network leftovers of the previous run", leftovers)
            await self._ensure_builtin()
        except BaseException:
            await self.reaper.close()
            raise
        self._started = True

    async def _cleanup_leftovers(self) -> None:
        """A previous run that died left netns pins, links, chains, forwarding: remove them."""
        def work() -> None:
            if self.netns_dir.exists():
                for p in self.netns_dir.iterdir():
                    try:
                        netns.remove(p)
                    except OSError as e:
                        log.warning("removing leftover netns %s: %s", p, e)
            self._cleanup_drivers()

        await asyncio.to_thread(work)

    def _cleanup_drivers(self) -> None:
        """Every driver removes what it has outside the known networks (blocking: a worker
        thread's job). A failing driver does not stop the others."""
        for d in self.drivers.values():
            try:
                d.cleanup(list(self.store.networks.values()))
            except Exception as e:
                log.warning("network driver cleanup: %s", e)

    async def _ensure_builtin(self) -> None:
        have = {n.name for n in self.store.networks.values() if n.builtin}
        for name, driver in BUILTIN.items():
            if name in have or driver not in self.drivers:
                continue
            now = time.time_ns()
            net = Network(id=new_id(), name=name, driver=driver, created=rfc3339nano(now), created_ns=now,
                          builtin=True)
            if driver == "bridge":
                routes = await asyncio.to_thread(ipam.host_routes)
                subnet = ipam.pick_subnet(self._taken(), routes)
                net.ipam = IPAM(driver="default", options=None,
                                config=[IPAMConfig(subnet=str(subnet), gateway=str(subnet.network_address + 1))])
            else:
                net.ipam = IPAM(driver="default", options=None, config=[])
            await asyncio.to_thread(self.store.save_network, net)

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        for cid in list(self.sandboxes):
            try:
                await self.release(cid, events=False)
            except Exception:
                log.exception("releasing network of %s", short_id(cid))
        await self.dns.close()
        # The containers have stopped: their netns (and veths) are on their way out. Links
        # still there after this are deleted explicitly, then by the drivers' cleanup anyway.
        await self.reaper.settle(timeout=2.0)
        await self.reaper.close()
        await asyncio.to_thread(self._cleanup_drivers)

    # ------------------------------------------------------------------ lookup
    def find(self, ref: str) -> Network | None:
        nets = self.store.networks
        if ref in nets:
            return nets[ref]
        for n in nets.values():
            if n.name == ref:
                return n
        matches = [n for n in nets.values() if n.id.startswith(ref)] if ref else []
        if len(matches) > 1:
            raise errors.InvalidParameter(f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
        return matches[0] if matches else None

    def get(self, ref: str) -> Network:
        net = self.find(ref)
        if net is None:
            raise errors.NotFound(f"network {ref} not found")
        return net

    def list(self) -> list[Network]:
        return sorted(self.store.networks.values(), key=lambda n: n.created_ns)

    def _taken(self, exclude: str = "") -> list[ipaddress.IPv4Network]:
        out = []
        for n in self.store.networks.values():
            if n.id != exclude and n.subnet():
                out.append(ipaddress.IPv4Network(n.subnet()))
        return out

    def _pool(self, net: Network) -> ipam.Pool:
        pool = self.pools.get(net.id)
        if pool is None:
            pool = self.pools[net.id] = ipam.Pool(net.subnet(), net.gateway())
        return pool

    def active_endpoints(self, net: Network) -> list[Endpoint]:
        return [sb.endpoints[net.id] for sb in self.sandboxes.values() if net.id in sb.endpoints]

    # ------------------------------------------------------------------ networks API
    async def create(self, name: str, driver: str = "bridge", *, options: dict[str, str] | None = None,
                     labels: dict[str, str] | None = None, ipam_cfg: dict[str, Any] | None = None,
                     internal: bool = False, attachable: bool = False, enable_ipv6: bool = False,
                     check_duplicate: bool = True) -> Network:
        driver = driver or "bridge"
        if not name:
            raise errors.InvalidParameter("network name is required")
        if name in BUILTIN:
            raise errors.Forbidden(f"{name} is a pre-defined network and cannot be created")
        if driver not in self.drivers or driver in ("host", "null"):
            if driver in ("host", "null"):
                raise errors.Forbidden(f"only one instance of \"{driver}\" network is allowed")
            raise errors.NotFound(f'plugin "{driver}" not found')
        if enable_ipv6:
            raise errors.NotImplementedYet("IPv6 networks are not supported by asyncdock yet")
        async with self._lock:
            if any(n.name == name for n in self.store.networks.values()):
                raise errors.Conflict(f"network with name {name} already exists")
            routes = await asyncio.to_thread(ipam.host_routes)
            routes = [r for r in routes if not any(r.overlaps(t) for t in self._taken())]
            cfgs = list((ipam_cfg or {}).get("Config") or [])
            if len(cfgs) > 1:
                raise errors.NotImplementedYet("more than one IPAM pool per network is not supported")
            if cfgs and cfgs[0].get("Subnet"):
                subnet, gateway = ipam.check_subnet(cfgs[0]["Subnet"], cfgs[0].get("Gateway", ""), self._taken(), routes)
                user_subnet = True
            else:
                if cfgs and cfgs[0].get("Gateway"):
                    raise errors.Forbidden("a gateway needs a subnet")
                subnet = ipam.pick_subnet(self._taken(), routes)
                gateway = str(subnet.network_address + 1)
                user_subnet = False
            opts = dict(options or {})
            mtu = 1500
            if "com.docker.network.driver.mtu" in opts:
                try:
                    mtu = int(opts["com.docker.network.driver.mtu"])
                except ValueError:
                    raise errors.InvalidParameter("invalid MTU") from None
                if not 68 <= mtu <= 65535:
                    raise errors.InvalidParameter(f"invalid MTU {mtu}")
            br = opts.get("com.docker.network.bridge.name", "")
            if br and len(br) > 15:
                raise errors.InvalidParameter(f"bridge name {br} is longer than 15 characters")
            now = time.time_ns()
            net = Network(id=new_id(), name=name, driver=driver, created=rfc3339nano(now), created_ns=now,
                          internal=internal, attachable=attachable,
                          ipam=IPAM(driver=(ipam_cfg or {}).get("Driver") or "default",
                                    options=(ipam_cfg or {}).get("Options") or {},
                                    config=[IPAMConfig(subnet=str(subnet), gateway=gateway,
                                                       ip_range=(cfgs[0].get("IPRange", "") if cfgs else ""))]),
                          options=opts, labels=dict(labels or {}), mtu=mtu, bridge=br)
            if user_subnet:
                net.labels = dict(net.labels)
            await asyncio.to_thread(self.drivers[driver].create_network, net)
            try:
                await asyncio.to_thread(self.store.save_network, net)
            except BaseException:
                await asyncio.to_thread(self.drivers[driver].delete_network, net)
                raise
        self.bus.event("network", "create", net.id, {"name": net.name, "type": net.driver})
        return net

    async def remove(self, ref: str) -> None:
        net = self.get(ref)
        if net.builtin:
            raise errors.Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        async with self._lock:
            if self.active_endpoints(net):
                raise errors.Forbidden(f"error while removing network: network {net.name} id {net.id} has active endpoints")
            await self.reaper.settle(net.id)  # veths of stopped containers still on their way out
            await asyncio.to_thread(self.drivers[net.driver].delete_network, net)
            await asyncio.to_thread(self.store.delete_network, net)
            self.pools.pop(net.id, None)
        self.bus.event("network", "destroy", net.id, {"name": net.name, "type": net.driver})

    async def prune(self, filters: dict[str, list[str]]) -> list[str]:
        from ..base.filters import match_label
        from ..base.timefmt import parse_timestamp_filter

        until = parse_timestamp_filter(filters["until"][-1]) if filters.get("until") else 0
        deleted: list[str] = []
        for net in self.list():
            if net.builtin or self.active_endpoints(net):
                continue
            if until and net.created_ns >= until:
                continue
            if "label" in filters and not match_label(net.labels, filters["label"]):
                continue
            if "label!" in filters and any(match_label(net.labels, [x]) for x in filters["label!"]):
                continue
            # Docker also keeps networks that stopped containers are attached to? No: only
            # active endpoints keep a network (moby daemon/prune.go networkPrune).
            try:
                await self.remove(net.id)
                deleted.append(net.name)
            except errors.EngineError:
                continue
        return deleted

    def network_json(self, net: Network, *, containers: bool = True) -> dict[str, Any]:
        drv = self.drivers.get(net.driver)
        opts = drv.options(net) if drv is not None else dict(net.options)
        ctrs: dict[str, Any] = {}
        if containers:
            for ep in self.active_endpoints(net):
                ctrs[ep.container_id] = {"Name": ep.container_name, "EndpointID": ep.id, "MacAddress": ep.mac,
                                         "IPv4Address": f"{ep.ip}/{ep.prefix_len}" if ep.ip else "",
                                         "IPv6Address": ""}
        ipam_json: dict[str, Any] = {"Driver": net.ipam.driver, "Options": net.ipam.options,
                                     "Config": [{k: v for k, v in (("Subnet", c.subnet), ("IPRange", c.ip_range),
                                                                     ("Gateway", c.gateway)) if v}
                                                for c in net.ipam.config]}
        return {"Name": net.name, "Id": net.id, "Created": net.created, "Scope": net.scope, "Driver": net.driver,
                "EnableIPv6": net.enable_ipv6, "IPAM": ipam_json, "Internal": net.internal,
                "Attachable": net.attachable, "Ingress": net.ingress, "ConfigFrom": {"Network": ""},
                "ConfigOnly": False, "Containers": ctrs, "Options": opts, "Labels": net.labels}

    # ------------------------------------------------------------------ containers' wishes
    def validate_mode(self, network_mode: str, endpoints_config: dict[str, Any] | None = None) -> None:
        """At container create: Docker's errors for an unknown network or a bad combination."""
        mode = network_mode or "default"
        if mode.startswith("container:") or mode == "default":
            return
        net = self.get(mode)
        for name, es in (endpoints_config or {}).items():
            if name in ("default",) or es is None:
                continue
            other = self.get(name)
            if other.driver in ("host", "null") and other.id != net.id:
                raise errors.InvalidParameter("container cannot be connected to multiple networks with one of the "
                                              "networks in private (none) mode")
            wanted = _get(_get(es, "IPAMConfig"), "IPv4Address", "")
            if wanted and other.builtin:
                raise errors.InvalidParameter("user specified IP address is supported on user defined networks only")
        if net.driver in ("host", "null") and _get(next(iter((endpoints_config or {}).values()), None), "Aliases"):
            raise errors.InvalidParameter("network-scoped alias is supported only for containers in user defined networks")

    async def container_created(self, cid: str, name: str, network_mode: str,
                                endpoints_config: dict[str, Any] | None = None,
                                extra_hosts: list[str] | None = None) -> None:
        mode = network_mode or "default"
        self.validate_mode(mode, endpoints_config)
        c = ContainerNet(id=cid, name=name.lstrip("/"), mode=mode, extra_hosts=list(extra_hosts or []))
        if not mode.startswith("container:"):
            primary = "bridge" if mode == "default" else mode
            cfgs = dict(endpoints_config or {})
            first = cfgs.pop(primary, None) or cfgs.pop("default", None)
            c.attachments.append(self._attachment(self.get(primary), first))
            for name_, es in cfgs.items():
                net = self.get(name_)
                if all(a.network_id != net.id for a in c.attachments):
                    c.attachments.append(self._attachment(net, es))
        await asyncio.to_thread(self.store.save_container, c)

    def _attachment(self, net: Network, es: Any) -> Attachment:
        aliases = list(_get(es, "Aliases") or [])
        if aliases and net.builtin:
            raise errors.InvalidParameter("network-scoped alias is supported only for containers in user defined networks")
        ipv4 = _get(_get(es, "IPAMConfig"), "IPv4Address", "") or ""
        if ipv4 and net.builtin:
            raise errors.InvalidParameter("user specified IP address is supported on user defined networks only")
        return Attachment(network_id=net.id, aliases=aliases, ipv4=ipv4, links=list(_get(es, "Links") or []),
                          driver_opts=_get(es, "DriverOpts"), mac=_mac(_get(es, "MacAddress", "") or ""),
                          gw_priority=int(_get(es, "GwPriority", 0) or 0))

    def _cnet(self, cid: str) -> ContainerNet | None:
        c = self.store.containers.get(cid)
        if c is not None:
            return c
        # A container made before networks existed (or not registered): its HostConfig decides.
        rec = self._container_record(cid)
        if rec is None:
            return None
        mode = rec.host_config.network_mode or "default"
        c = ContainerNet(id=cid, name=rec.name.lstrip("/"), mode=mode,
                         extra_hosts=list(rec.host_config.extra_hosts or []))
        if not mode.startswith("container:"):
            net = self.find("bridge" if mode == "default" else mode)
            if net is not None:
                c.attachments.append(Attachment(network_id=net.id))
        self.store.save_container(c)
        return c

    def _attached(self, container_ref: str) -> tuple[str, ContainerNet]:
        """(id, network attachments) of the container `container_ref` names (connect and
        disconnect accept a name, a full id or a prefix)."""
        rec = self._container_record(container_ref)
        cid = rec.id if rec is not None else container_ref
        c = self._cnet(cid)
        if c is None:
            raise errors.NotFound(f"No such container: {container_ref}")
        return cid, c

    def _container_record(self, cid: str) -> KnownContainer | None:
        if self._containers is None:
            return None
        try:
            return self._containers(cid)
        except errors.NotFound:
            return None

    async def container_renamed(self, cid: str, name: str) -> None:
        c = self._cnet(cid)
        if c is not None:
            c.name = name.lstrip("/")
            await asyncio.to_thread(self.store.save_container, c)
        sb = self.sandboxes.get(cid)
        if sb is not None:
            for ep in sb.endpoints.values():
                ep.container_name = name.lstrip("/")

    async def container_removed(self, cid: str) -> None:
        if cid in self.sandboxes:
            await self.release(cid)
        self.store.delete_container(cid)  # one unlink: cheaper than a thread hop

    # ------------------------------------------------------------------ start / stop
    async def container_start(self, cid: str) -> Sandbox:
        """Make the sandbox: "host", "none", or a new netns with an endpoint per network. The
        spec's network namespace is `sandbox.netns` ("host" / "none" / a path)."""
        c = self._cnet(cid)
        if c is None:
            raise errors.NotFound(f"No such container: {cid}")
        if c.mode.startswith("container:"):
            sb = Sandbox(cid, new_id(), "")
            self.sandboxes[cid] = sb
            return sb
        nets: list[tuple[Network, Attachment]] = []
        for a in c.attachments:
            net = self.store.networks.get(a.network_id)
            if net is None:
                raise errors.NotFound(f"network {a.network_id} not found")
            nets.append((net, a))
        if any(n.driver == "host" for n, _ in nets):
            sb = Sandbox(cid, new_id(), "host")
            self.sandboxes[cid] = sb
            return sb
        if not nets or all(n.driver == "null" for n, _ in nets):
            sb = Sandbox(cid, new_id(), "none")
            self.sandboxes[cid] = sb
            return sb
        sbid = new_id()
        path = self.netns_dir / sbid[:12]
        await asyncio.to_thread(netns.create, path)
        sb = Sandbox(cid, sbid, str(path))
        self.sandboxes[cid] = sb
        try:
            for i, (net, a) in enumerate(nets):
                await self._join(sb, c, net, a, default_route=(i == 0))
            if any(not n.builtin for n, _ in nets):
                await self.dns.serve(cid, str(path))
                sb.dns = True
        except BaseException:
            await self.release(cid, events=False)
            raise
        return sb

    async def _join(self, sb: Sandbox, c: ContainerNet, net: Network, a: Attachment, *, default_route: bool) -> Endpoint:
        driver = self.drivers[net.driver]
        if not driver.needs_endpoint:
            raise errors.Forbidden("container cannot be disconnected from host network or connected to host network")
        if net.builtin and net.driver == "bridge":
            await self._recheck_default_subnet(net)
        pool = self._pool(net)
        try:
            ip = pool.allocate(a.ipv4)
        except errors.Forbidden:
            # A stopped container's address is free again once its veth is gone: wait for that
            # (an immediate `run --ip X` after a `run --rm --ip X` must not fail), then retry.
            if not self.reaper.pending(net.id):
                raise
            await self.reaper.settle(net.id)
            ip = pool.allocate(a.ipv4)
        try:
            ifname = f"eth{len(sb.endpoints)}"
            ep = Endpoint(id=new_id(), network_id=net.id, network_name=net.name, container_id=c.id,
                          container_name=c.name, netns_path=sb.netns, ifname=ifname,
                          host_ifname="veth" + os.urandom(4).hex()[:7], ip=ip,
                          prefix_len=ipaddress.IPv4Network(net.subnet()).prefixlen, gateway=net.gateway(),
                          mac=a.mac or ipam.mac_for(ip),
                          aliases=([] if net.builtin else [c.id[:12], *a.aliases]))
            await asyncio.to_thread(driver.join, net, ep, default_route=default_route)
        except BaseException:
            pool.release(ip)
            raise
        sb.endpoints[net.id] = ep
        self.bus.event("network", "connect", net.id, {"container": c.id, "name": net.name, "type": net.driver})
        return ep

    async def _recheck_default_subnet(self, net: Network) -> None:
        """The default bridge's subnet was picked at first start; if the host now routes it (and
        no container of ours uses it), pick again rather than shadow the host's route."""
        if self.active_endpoints(net) or net.id in self.pools and self.pools[net.id].used:
            return
        drv = self.drivers.get("bridge")
        if drv is not None and getattr(drv, "_up", {}).get(net.id):
            return
        routes = await asyncio.to_thread(ipam.host_routes)
        cur = ipaddress.IPv4Network(net.subnet())
        if not any(cur.overlaps(r) for r in routes):
            return
        subnet = ipam.pick_subnet(self._taken(exclude=net.id), routes)
        net.ipam = IPAM(driver="default", options=None,
                        config=[IPAMConfig(subnet=str(subnet), gateway=str(subnet.network_address + 1))])
        self.pools.pop(net.id, None)
        await asyncio.to_thread(self.store.save_network, net)

    async def publish(self, cid: str, port_bindings: dict[str, Any] | None, exposed_ports: dict[str, Any] | None = None,
                      publish_all: bool = False) -> dict[str, list[dict[str, str]] | None]:
        """Start the userland proxies; returns NetworkSettings.Ports. Host port "" / "0" (and
        -P) take a free port; a port in use fails with Docker's message."""
        sb = self.sandboxes.get(cid)
        if sb is None:
            raise errors.Conflict(f"container {cid} has no network sandbox (not started)")
        wanted: dict[str, list[tuple[str, str]]] = {}
        for key, binds in (port_bindings or {}).items():
            wanted.setdefault(_port_key(key), [])
            for b in binds or [{}]:
                wanted[_port_key(key)].append((_get(b, "HostIp", "") or "", str(_get(b, "HostPort", "") or "")))
        if publish_all:
            for key in exposed_ports or {}:
                if _port_key(key) not in wanted:
                    wanted[_port_key(key)] = [("", "")]
        ports: dict[str, list[dict[str, str]] | None] = {_port_key(k): None for k in exposed_ports or {}}
        ep = next((e for e in sb.endpoints.values()), None)
        if ep is None or not wanted:
            sb.ports = ports if ep is not None else {}
            return sb.ports
        try:
            for key, binds in wanted.items():
                port_s, proto = key.split("/")
                out: list[dict[str, str]] = []
                for host_ip, host_port in binds:
                    proxy = await self._start_proxy(proto, host_ip or "0.0.0.0", host_port, ep.ip, int(port_s),
                                                    ep.container_name or cid[:12], ep.id)
                    sb.proxies.append(proxy)
                    out.append({"HostIp": proxy.host_ip, "HostPort": str(proxy.host_port)})
                ports[key] = out
        except BaseException:
            await self._stop_proxies(sb)
            raise
        sb.ports = ports
        return ports

    async def _start_proxy(self, proto: str, host_ip: str, host_port: str, ip: str, port: int, name: str,
                           ep_id: str) -> Proxy:
        lo, hi = 0, 0
        if host_port:
            try:
                if "-" in host_port:
                    a, b = host_port.split("-", 1)
                    lo, hi = int(a), int(b)
                else:
                    lo = hi = int(host_port)
            except ValueError:
                raise errors.InvalidParameter(f"invalid host port: {host_port}") from None
        last: ProxyBindError | None = None
        for candidate in range(lo, hi + 1):
            proxy = make_proxy(proto, host_ip, candidate, ip, port)
            try:
                await proxy.start()
                return proxy
            except ProxyBindError as e:
                last = e
        assert last is not None
        raise errors.SystemError_(f"driver failed programming external connectivity on endpoint {name} ({ep_id}): "
                                  f"Error starting userland proxy: {last.text}")

    async def _stop_proxies(self, sb: Sandbox) -> None:
        for p in sb.proxies:
            try:
                await p.close()
            except Exception:
                log.exception("closing %r", p)
        sb.proxies.clear()

    async def release(self, cid: str, *, events: bool = True) -> None:
        """At container stop: proxies, DNS, endpoints (veths), netns. Idempotent."""
        sb = self.sandboxes.pop(cid, None)
        if sb is None:
            return
        await self._stop_proxies(sb)
        if sb.dns:
            self.dns.stop(cid)
        ours = sb.netns.startswith("/")
        for net_id, ep in list(sb.endpoints.items()):
            await self._leave(sb, net_id, ep, events=events, with_netns=ours)
        if ours:
            await asyncio.to_thread(netns.remove, Path(sb.netns))

    async def _leave(self, sb: Sandbox, net_id: str, ep: Endpoint, *, events: bool = True,
                     with_netns: bool = False) -> None:
        """Take an endpoint out. `with_netns`: the sandbox's netns is unpinned right after, so
        a driver whose links die with it is not asked to delete them (about 30 ms of kernel
        time each, serialised): the reaper waits for the kernel's batch and frees the address
        then."""
        net = self.store.networks.get(net_id)
        sb.endpoints.pop(net_id, None)
        if net is None:
            return
        driver = self.drivers[net.driver]
        pool = self._pool(net)
        if with_netns and getattr(driver, "links_go_with_netns", False) and ep.host_ifindex and self.reaper.watching:
            self.reaper.expect(ep.host_ifindex, ep.host_ifname, net.id, functools.partial(driver.leave, net, ep),
                               functools.partial(pool.release, ep.ip))
        else:
            try:
                await asyncio.to_thread(driver.leave, net, ep)
            finally:
                pool.release(ep.ip)
        if events:
            self.bus.event("network", "disconnect", net.id,
                           {"container": ep.container_id, "name": net.name, "type": net.driver})

    # ------------------------------------------------------------------ connect / disconnect
    async def connect(self, net_ref: str, container_ref: str, endpoint_config: Any = None) -> None:
        net = self.get(net_ref)
        cid, c = self._attached(container_ref)
        if c.mode.startswith("container:") or c.mode == "host" or net.driver in ("host", "null"):
            raise errors.Forbidden("container sharing network namespace with another container or host cannot be "
                                   "connected to any other network")
        if any(self.store.networks.get(a.network_id) is not None and
               self.store.networks[a.network_id].driver == "null" for a in c.attachments):
            raise errors.Forbidden("container cannot be disconnected from host network or connected to host network")
        if any(a.network_id == net.id for a in c.attachments):
            raise errors.Forbidden(f"endpoint with name {c.name} already exists in network {net.name}")
        a = self._attachment(net, endpoint_config)
        sb = self.sandboxes.get(cid)
        if sb is not None and sb.netns.startswith("/"):
            await self._join(sb, c, net, a, default_route=not sb.endpoints)
            if not net.builtin and not sb.dns:
                await self.dns.serve(cid, sb.netns)
                sb.dns = True
        c.attachments.append(a)
        await asyncio.to_thread(self.store.save_container, c)
        if sb is None:
            self.bus.event("network", "connect", net.id, {"container": cid, "name": net.name, "type": net.driver})

    async def disconnect(self, net_ref: str, container_ref: str, force: bool = False) -> None:
        net = self.get(net_ref)
        cid, c = self._attached(container_ref)
        if net.driver == "host" and c.mode == "host":
            raise errors.Forbidden("container cannot be disconnected from host network or connected to host network")
        if all(a.network_id != net.id for a in c.attachments):
            raise errors.Forbidden(f"container {cid} is not connected to network {net.name}")
        sb = self.sandboxes.get(cid)
        if sb is not None and net.id in sb.endpoints:
            await self._leave(sb, net.id, sb.endpoints[net.id])
        else:
            self.bus.event("network", "disconnect", net.id, {"container": cid, "name": net.name, "type": net.driver})
        c.attachments = [a for a in c.attachments if a.network_id != net.id]
        await asyncio.to_thread(self.store.save_container, c)

    # ------------------------------------------------------------------ attach / detach (primitives)
    async def attach(self, container_id: str, network_name: str, aliases: list[str] | None = None,
                     container_name: str = "") -> Endpoint:
        """Join a container (made if needed: its own netns) to a network now. For the start path
        and tests; `connect` is the API's."""
        net = self.get(network_name)
        c = self.store.containers.get(container_id) or ContainerNet(
            id=container_id, name=container_name or container_id[:12], mode=net.name)
        sb = self.sandboxes.get(container_id)
        if sb is None:
            sbid = new_id()
            path = self.netns_dir / sbid[:12]
            await asyncio.to_thread(netns.create, path)
            sb = self.sandboxes[container_id] = Sandbox(container_id, sbid, str(path))
        if net.id in sb.endpoints:
            return sb.endpoints[net.id]
        ep = await self._join(sb, c, net, Attachment(network_id=net.id, aliases=list(aliases or [])),
                              default_route=not sb.endpoints)
        if not net.builtin and not sb.dns:
            await self.dns.serve(container_id, sb.netns)
            sb.dns = True
        return ep

    async def detach(self, container_id: str, network_name: str) -> None:
        net = self.get(network_name)
        sb = self.sandboxes.get(container_id)
        if sb is None or net.id not in sb.endpoints:
            return
        await self._leave(sb, net.id, sb.endpoints[net.id])
        if not sb.endpoints:
            await self.release(container_id)

    # ------------------------------------------------------------------ name resolution
    def _resolve(self, asker: str, name: str) -> list[str] | None:
        sb = self.sandboxes.get(asker)
        if sb is None:
            return None
        name = name.lower()
        found: list[str] = []
        for net_id in sb.endpoints:
            net = self.store.networks.get(net_id)
            if net is None or net.builtin:
                continue
            for other in self.sandboxes.values():
                ep = other.endpoints.get(net_id)
                if ep is None:
                    continue
                names = {ep.container_name.lower(), f"{ep.container_name.lower()}.{net.name.lower()}",
                         *(a.lower() for a in ep.aliases)}
                if name in names and ep.ip not in found:
                    found.append(ep.ip)
        return found or None

    def dns_servers(self, cid: str) -> list[str] | None:
        """resolv.conf nameservers for a container on a user-defined network (the embedded
        server), None to keep the host's."""
        c = self._cnet(cid)
        if c is None or c.mode.startswith("container:"):
            return None
        for a in c.attachments:
            net = self.store.networks.get(a.network_id)
            if net is not None and not net.builtin:
                return [DNS_ADDR]
        return None

    def host_gateway_ip(self) -> str:
        net = self.find("bridge")
        return net.gateway() if net is not None else ""

    def hosts_entries(self, cid: str, hostname: str) -> list[str]:
        """Lines Docker appends to /etc/hosts: `<ip>\t<hostname>` for the container's address."""
        sb = self.sandboxes.get(cid)
        if sb is None:
            return []
        ep = next(iter(sb.endpoints.values()), None)
        return [f"{ep.ip}\t{hostname}\n"] if ep is not None and hostname else []

    # ------------------------------------------------------------------ what inspect / ps show
    def networks_json(self, cid: str, network_mode: str = "default") -> dict[str, Any]:
        """NetworkSettings.Networks: never null; every network the container is on, filled while
        it runs (IPAddress, Gateway, MacAddress, ...), NetworkID only when stopped."""
        c = self._cnet(cid)
        sb = self.sandboxes.get(cid)
        out: dict[str, Any] = {}
        if c is None:
            return out
        for a in c.attachments:
            net = self.store.networks.get(a.network_id)
            if net is None:
                continue
            ep = sb.endpoints.get(net.id) if sb is not None else None
            # Aliases as create/connect gave them (API 1.45's meaning: api/shapes.py appends the
            # short id for older versions); DNSNames what the embedded DNS answers for it here
            out[net.name] = {
                "IPAMConfig": {"IPv4Address": a.ipv4} if a.ipv4 else None, "Links": a.links or None,
                "Aliases": list(a.aliases) or None if not net.builtin else None,
                "MacAddress": ep.mac if ep else a.mac, "DriverOpts": a.driver_opts, "GwPriority": a.gw_priority,
                "NetworkID": net.id,
                "EndpointID": ep.id if ep else "", "Gateway": ep.gateway if ep else "",
                "IPAddress": ep.ip if ep else "", "IPPrefixLen": ep.prefix_len if ep else 0,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "DNSNames": None if net.builtin else _dedup([c.name, *a.aliases, c.id[:12]])}
        return out

    def settings_json(self, cid: str, exposed_ports: dict[str, Any] | None = None,
                      network_mode: str = "default") -> dict[str, Any]:
        """The whole NetworkSettings object of container inspect."""
        sb = self.sandboxes.get(cid)
        nets = self.networks_json(cid, network_mode)
        default = nets.get("bridge") if (network_mode or "default") in ("default", "bridge") else None
        d = default or {}
        if sb is not None:
            ports = dict(sb.ports) if sb.ports else {}
            for k in exposed_ports or {}:
                ports.setdefault(_port_key(k), None)
            if sb.netns in ("host",):
                ports = {}
        else:
            ports = {}
        return {"Bridge": "", "SandboxID": sb.id if sb else "", "HairpinMode": False,
                "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": ports,
                "SandboxKey": sb.key if sb else "", "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
                "EndpointID": d.get("EndpointID", ""), "Gateway": d.get("Gateway", ""),
                "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPAddress": d.get("IPAddress", ""),
                "IPPrefixLen": d.get("IPPrefixLen", 0), "IPv6Gateway": "", "MacAddress": d.get("MacAddress", ""),
                "Networks": nets}

    def ports_list(self, cid: str, exposed_ports: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The `Ports` array of the container list (what `docker ps` prints as PORTS)."""
        sb = self.sandboxes.get(cid)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        if sb is not None:
            for key, binds in sb.ports.items():
                port_s, proto = key.split("/")
                for b in binds or []:
                    out.append({"IP": b["HostIp"], "PrivatePort": int(port_s), "PublicPort": int(b["HostPort"]),
                                "Type": proto})
                    seen.add(key)
        for key in exposed_ports or {}:
            k = _port_key(key)
            if k not in seen:
                port_s, proto = k.split("/")
                out.append({"PrivatePort": int(port_s), "Type": proto})
        return out

    def in_use_networks(self) -> set[str]:
        return {nid for sb in self.sandboxes.values() for nid in sb.endpoints}


def _port_key(key: str) -> str:
    key = str(key)
    if "/" not in key:
        key += "/tcp"
    port, proto = key.split("/", 1)
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise errors.InvalidParameter(f"invalid proto: {proto}")
    try:
        n = int(port)
    except ValueError:
        raise errors.InvalidParameter(f"invalid containerPort: {port}") from None
    if not 0 < n < 65536:
        raise errors.InvalidParameter(f"invalid containerPort: {port}")
    return f"{n}/{proto}"
