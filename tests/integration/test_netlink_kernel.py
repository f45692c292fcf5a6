"""In-process rtnetlink on the real kernel (asyncdock.networks.netlink, netns, linkreaper, and
the NetworkManager on top), each test inside a network namespace of its own made for it: the
host's links, routes and firewall are never touched, and everything goes with the namespace.
iproute2 is the reference for what the kernel ended up with and for the wording of errors."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from asyncdock.events import EventBus
from asyncdock.leftovers import Leftovers
from asyncdock.networks import netns
from asyncdock.networks.linkreaper import LinkReaper
from asyncdock.networks.manager import NetworkManager
from asyncdock.networks.netlink import (
    IFF_UP,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_NEWLINK,
    Netlink,
    NetlinkError,
    attr_str,
    ifinfomsg,
    nest,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None,
                                reason="needs root, iproute2 and nsenter")

T = TypeVar("T")


def private(fn: Callable[[], T]) -> T:
    """Run fn in a new netns of this thread's own (threads that fn starts inherit it)."""
    return netns.run_in_fresh(fn)


def here() -> str:
    """This thread's netns, as a path another process can enter."""
    return f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net"


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={ns}", "ip", *args], capture_output=True, text=True, timeout=10,
                          check=check)


def ip_json(ns: str, *args: str) -> Any:
    return json.loads(ip(ns, "-j", *args).stdout or "[]")


def test_netns_create_run_in_and_remove(scratch: Path) -> None:
    def body() -> None:
        mine = os.stat(here()).st_ino
        path = scratch / "c"
        netns.create(path)
        assert os.stat(path).st_ino != mine
        # a socket made inside stays inside: it sees the new netns' loopback only, still down
        with netns.run_in(path, Netlink) as inner:
            assert [(lk.name, bool(lk.flags & IFF_UP)) for lk in inner.links()] == [("lo", False)]
        assert os.stat(here()).st_ino == mine  # the thread is back where it was
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert netns.run_in(fd, lambda: os.stat(here()).st_ino) == os.stat(path).st_ino
        finally:
            os.close(fd)
        netns.remove(path)
        netns.remove(path)  # idempotent
        assert not path.exists()
        with pytest.raises(FileExistsError):
            (scratch / "d").touch()
            netns.create(scratch / "d")
        (scratch / "d").unlink()

    private(body)


def test_run_in_fresh_is_a_throwaway_netns() -> None:
    def body() -> tuple[int, int]:
        outer = os.stat(here()).st_ino
        inner = netns.run_in_fresh(lambda: os.stat(here()).st_ino)
        assert os.stat(here()).st_ino == outer
        return outer, inner

    outer, inner = private(body)
    assert outer != inner


def test_bridge_veth_into_netns_address_route_reachable(scratch: Path) -> None:
    def body() -> None:
        c = scratch / "c"
        netns.create(c)
        fd = os.open(c, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with Netlink() as nl:
                nl.add_bridge("br-t")
                br = nl.index("br-t")
                nl.set_link(br, alias="asyncdock:test:net:t")
                nl.set_link(br, mtu=1400)
                nl.add_addr4(br, "10.200.0.1", 24)
                nl.set_link(br, up=True)
                host = nl.add_veth("vetht0", "eth0", mtu=1400, master=br, up=True, peer_mac="02:42:0a:c8:00:02",
                                   peer_netns_fd=fd)
                nl.set_link(host, alias="asyncdock:test:ep:t")
                with netns.run_in(fd, Netlink) as inner:
                    inner.set_link(inner.index("lo"), up=True)
                    eth0 = inner.index("eth0")
                    inner.add_addr4(eth0, "10.200.0.2", 24)
                    inner.set_link(eth0, up=True)
                    inner.add_default_route4("10.200.0.1", eth0)
                lk = nl.link("vetht0")
                assert lk is not None and lk.index == host and lk.master == br and lk.flags & IFF_UP
                assert lk.alias == "asyncdock:test:ep:t"
                assert {x.name for x in nl.links()} == {"lo", "br-t", "vetht0"}  # the peer is not here
        finally:
            os.close(fd)
        # what iproute2 sees on both sides
        links = {x["ifname"]: x for x in ip_json(here(), "link", "show")}
        assert links["br-t"]["mtu"] == 1400 and links["br-t"]["ifalias"] == "asyncdock:test:net:t"
        assert links["vetht0"]["master"] == "br-t" and links["vetht0"]["mtu"] == 1400
        inside = {x["ifname"]: x for x in ip_json(str(c), "addr", "show")}
        eth = inside["eth0"]
        assert eth["address"] == "02:42:0a:c8:00:02" and eth["mtu"] == 1400 and "UP" in eth["flags"]
        assert [(a["local"], a["prefixlen"], a.get("broadcast")) for a in eth["addr_info"] if a["family"] == "inet"] \
            == [("10.200.0.2", 24, "10.200.0.255")]
        assert "UP" in inside["lo"]["flags"]
        routes = ip_json(str(c), "route", "show")
        assert {"dst": "default", "gateway": "10.200.0.1", "dev": "eth0"}.items() <= routes[0].items()
        ping = subprocess.run(["nsenter", f"--net={c}", "busybox", "ping", "-c1", "-W5", "10.200.0.1"],
                              capture_output=True, text=True, timeout=20)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        with Netlink() as nl:
            assert nl.del_link(host) and not nl.del_link(host)
            assert nl.link("vetht0") is None

    private(body)


def test_errors_read_as_iproute2_words_them() -> None:
    def body() -> None:
        ns = here()
        with Netlink() as nl:
            nl.add_bridge("br-e")
            br = nl.index("br-e")
            cases: list[tuple[Callable[[], object], list[str]]] = [
                (lambda: nl.add_bridge("br-e"), ["link", "add", "br-e", "type", "bridge"]),
                (lambda: nl.request(RTM_NEWLINK, ifinfomsg() + attr_str(IFLA_IFNAME, "x0")
                                    + nest(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "nosuchkind")),
                                    NLM_F_CREATE | NLM_F_EXCL),
                 ["link", "add", "x0", "type", "nosuchkind"]),
                (lambda: nl.add_default_route4("10.201.0.1", br),
                 ["route", "add", "default", "via", "10.201.0.1", "dev", "br-e"]),
            ]
            nl.add_addr4(br, "10.202.0.1", 24)
            cases.append((lambda: nl.add_addr4(br, "10.202.0.1", 24), ["addr", "add", "10.202.0.1/24", "dev", "br-e"]))
            for call, argv in cases:
                with pytest.raises(NetlinkError) as exc:
                    call()
                ref = ip(ns, *argv, check=False)
                assert ref.returncode != 0
                assert exc.value.strerror == ref.stderr.strip(), argv
            with pytest.raises(NetlinkError) as exc:
                nl.add_veth("br-e", "p0")
            assert exc.value.errno == errno.EEXIST
            assert nl.del_link(name="br-e") and not nl.del_link(name="br-e")

    private(body)


def _veth_into(nl: Netlink, path: Path, name: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return nl.add_veth(name, "eth0", peer_netns_fd=fd)
    finally:
        os.close(fd)


def test_reaper_waits_for_the_kernel_to_delete_a_veth_with_its_netns(scratch: Path) -> None:
    async def main() -> None:
        r = LinkReaper(grace=60)
        r.start()
        try:
            c = scratch / "c"
            netns.create(c)
            with Netlink() as nl:
                index = _veth_into(nl, c, "vethr0")
                gone = asyncio.Event()
                fallback: list[int] = []
                r.expect(index, "vethr0", "k", lambda: fallback.append(index), gone.set)
                assert r.pending("k") and r.pending() and not r.pending("other")
                netns.remove(c)  # nothing else holds it: the pair dies with it
                await r.settle("k")
                assert gone.is_set() and fallback == [] and not r.pending()
                assert nl.link("vethr0") is None
        finally:
            await r.close()

    private(lambda: asyncio.run(asyncio.wait_for(main(), 60)))


def test_reaper_deletes_what_does_not_go_by_itself(scratch: Path) -> None:
    """A netns something else keeps alive keeps its veth: after the grace (or at a settle with
    a timeout) the fallback deletes it."""
    async def main() -> None:
        for grace, timeout in ((0.05, None), (60, 0.0)):
            r = LinkReaper(grace=grace)
            r.start()
            c = scratch / "c"
            netns.create(c)  # stays pinned: nothing deletes the veth but us
            try:
                with Netlink() as nl:
                    index = _veth_into(nl, c, "vethr1")
                    gone = asyncio.Event()

                    def fallback() -> None:
                        with Netlink() as own:  # a worker thread's own socket
                            own.del_link(index)

                    r.expect(index, "vethr1", "k", fallback, gone.set)
                    await r.settle("k", timeout=timeout)
                    assert gone.is_set() and not r.pending()
                    assert nl.link("vethr1") is None
            finally:
                await r.close()
                netns.remove(c)

    private(lambda: asyncio.run(asyncio.wait_for(main(), 60)))


def test_reaper_recovers_from_missed_notifications(scratch: Path) -> None:
    """On ENOBUFS (notifications dropped) the reaper asks the kernel which links remain."""
    async def main() -> None:
        r = LinkReaper(grace=60)
        r.start()
        c = scratch / "c"
        netns.create(c)
        try:
            assert r._nl is not None
            asyncio.get_running_loop().remove_reader(r._nl.fileno())  # as if every event were lost
            with Netlink() as nl:
                index = _veth_into(nl, c, "vethr2")
                gone = asyncio.Event()
                r.expect(index, "vethr2", "k", lambda: None, gone.set)
                assert nl.del_link(index)
            await r._resync()
            assert gone.is_set() and not r.pending()
        finally:
            asyncio.get_running_loop().add_reader(r._nl.fileno(), r._readable)  # type: ignore[union-attr]
            await r.close()
            netns.remove(c)

    private(lambda: asyncio.run(asyncio.wait_for(main(), 60)))


def _manager(root: Path) -> NetworkManager:
    return NetworkManager(bus=EventBus(), data_root=root / "data", exec_root=root / "exec", leftovers=Leftovers())


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables")
def test_manager_stop_leaves_veth_to_the_kernel_and_reuses_addresses(scratch: Path) -> None:
    """The whole manager in a private netns: an address comes back as soon as the stopped
    container's veth is gone (a /30 has one address: the next start waits for it), a fixed
    --ip can be taken again at once, `network rm` waits for the veths of stopped containers,
    a netns kept alive by someone else has its veth deleted after the grace."""
    async def main() -> None:
        m = _manager(scratch / "root")
        await m.start()
        m.reaper.grace = 0.2
        try:
            net = await m.create("tiny", ipam_cfg={"Config": [{"Subnet": "10.210.0.0/30"}]})
            await m.container_created("a" * 64, "alpha", "tiny")
            sa = await m.container_start("a" * 64)
            ep_a = sa.endpoints[net.id]
            assert ep_a.ip == "10.210.0.2" and ep_a.host_ifindex > 0
            await m.release("a" * 64)
            await m.container_created("b" * 64, "beta", "tiny")
            sb = await m.container_start("b" * 64)
            assert sb.endpoints[net.id].ip == "10.210.0.2"
            with Netlink() as nl:
                assert nl.link(ep_a.host_ifname) is None
                lk = nl.link(sb.endpoints[net.id].host_ifname)
                assert lk is not None and lk.alias == f"asyncdock:{m.tag}:ep:{'b' * 12}"
            await m.release("b" * 64)

            fixed = await m.create("fixed", ipam_cfg={"Config": [{"Subnet": "10.211.0.0/24"}]})
            want = {"fixed": {"IPAMConfig": {"IPv4Address": "10.211.0.9"}}}
            for cid in ("c" * 64, "d" * 64):
                await m.container_created(cid, cid[:5], "fixed", want)
                sc = await m.container_start(cid)
                assert sc.endpoints[fixed.id].ip == "10.211.0.9"
                await m.release(cid)

            # a netns that outlives the sandbox (as with a container sharing it)
            await m.container_created("e" * 64, "eps", "fixed")
            se = await m.container_start("e" * 64)
            keep = os.open(se.netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                await m.release("e" * 64)
                await m.remove("fixed")
            finally:
                os.close(keep)
            await m.remove("tiny")
            with Netlink() as nl:
                assert [lk.name for lk in nl.links() if lk.alias.startswith("asyncdock:")] == []
        finally:
            await m.shutdown()
        with Netlink() as nl:
            assert [lk.name for lk in nl.links() if lk.alias.startswith("asyncdock:")] == []
        assert not any((scratch / "root" / "exec" / "netns").iterdir())

    private(lambda: asyncio.run(asyncio.wait_for(main(), 120)))
