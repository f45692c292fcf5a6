"""The NetworkManager in-process on the real kernel, without containers: endpoints in netns of
our own (what a container's start will get), reachability between them, the embedded DNS
answering names and aliases, `network rm` of a network in use refused, and nothing of ours
left after release and shutdown. Traffic goes only to the namespaces this test makes."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asyncdock.base import errors
from asyncdock.events import EventBus
from asyncdock.leftovers import Leftovers
from asyncdock.networks.manager import NetworkManager
from tests.support import netcheck


async def _run(*argv: str, timeout: float = 10) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(p.communicate(), timeout)
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise
    return p.returncode or 0, out.decode(errors="replace")


def _manager(root: Path) -> NetworkManager:
    return NetworkManager(bus=EventBus(), data_root=root / "data", exec_root=root / "exec", leftovers=Leftovers())


def test_endpoints_dns_in_use_and_cleanup(scratch: Path) -> None:
    async def main() -> None:
        root = scratch
        m = _manager(root)
        await m.start()
        tag = m.tag
        try:
            net = await m.create("kapp")
            a = await m.attach("a" * 64, "kapp", ["db-alias"], container_name="alpha")
            b = await m.attach("b" * 64, "kapp", container_name="beta")
            assert a.ip != b.ip and a.gateway == net.gateway() and a.mac == "02:42:" + ":".join(
                f"{int(x):02x}" for x in a.ip.split("."))
            rc, out = await _run("nsenter", f"--net={b.netns_path}", "busybox", "ping", "-c1", "-W2", a.ip)
            assert rc == 0, out
            for name in ("alpha", "db-alias", "a" * 12):
                rc, out = await _run("nsenter", f"--net={b.netns_path}", "busybox", "nslookup", name, "127.0.0.11")
                assert rc == 0 and a.ip in out, out
            # eth0 has the MTU and default route of the network
            rc, out = await _run("nsenter", f"--net={a.netns_path}", "ip", "route")
            assert f"default via {net.gateway()} dev eth0" in out
            with pytest.raises(errors.Forbidden, match="has active endpoints"):
                await m.remove("kapp")
            js = m.network_json(net)
            assert set(js["Containers"]) == {"a" * 64, "b" * 64}
            assert js["Containers"]["a" * 64]["IPv4Address"] == f"{a.ip}/{a.prefix_len}"
            await m.detach("b" * 64, "kapp")
            await m.release("a" * 64)
            assert m.network_json(net)["Containers"] == {}
            assert netcheck.netns_pins(root / "exec") == []
            await m.remove("kapp")
            assert netcheck.our_links(tag) == []
            assert netcheck.our_chains(tag) == []
            # a second network + endpoint, then shutdown with it still up
            await m.create("kapp2")
            await m.attach("c" * 64, "kapp2", container_name="gamma")
            assert netcheck.our_links(tag)
        finally:
            await m.shutdown()
        assert netcheck.our_links(tag) == []
        assert netcheck.our_chains(tag) == []
        assert netcheck.netns_pins(root / "exec") == []

    asyncio.run(asyncio.wait_for(main(), 120))


def test_port_published_from_endpoint_and_released(scratch: Path) -> None:
    """publish() on an endpoint: a server in the endpoint's netns reached through 127.0.0.1."""
    async def main() -> None:
        root = scratch
        m = _manager(root)
        await m.start()
        server = None
        try:
            await m.create("kports")
            ep = await m.attach("d" * 64, "kports", container_name="web")
            www = root / "www"
            www.mkdir()
            (www / "index.html").write_text("hello from the netns\n")
            server = await asyncio.create_subprocess_exec(
                "nsenter", f"--net={ep.netns_path}", "busybox", "httpd", "-f", "-p", f"{ep.ip}:80", "-h", str(www))
            ports = await m.publish("d" * 64, {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "0"}]}, {"80/tcp": {}})
            host_port = int(ports["80/tcp"][0]["HostPort"])
            assert ports["80/tcp"][0]["HostIp"] == "127.0.0.1" and host_port > 0
            body = ""
            for _ in range(50):  # bounded: the server needs a moment to listen
                rc, body = await _run("busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:{host_port}/")
                if rc == 0:
                    break
                await asyncio.sleep(0.1)
            assert body == "hello from the netns\n"
            assert m.ports_list("d" * 64, {"80/tcp": {}}) == [
                {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": host_port, "Type": "tcp"}]
            # a port in use: Docker's message
            with pytest.raises(errors.SystemError_) as exc:
                await m.publish("d" * 64, {"81/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]})
            assert (f"driver failed programming external connectivity on endpoint web ({ep.id}): Error starting "
                    f"userland proxy: listen tcp4 127.0.0.1:{host_port}: bind: address already in use") == str(exc.value)
            await m.release("d" * 64)
            assert host_port not in netcheck.tcp_listeners()
        finally:
            if server is not None and server.returncode is None:
                server.kill()
                await server.wait()
            await m.shutdown()

    asyncio.run(asyncio.wait_for(main(), 120))


_KILLED_WHILE_MARKING = """
import asyncio, os, sys
from asyncdock.events import EventBus
from asyncdock.leftovers import Leftovers
from asyncdock.networks import netlink
from asyncdock.networks.manager import NetworkManager

real_set_link = netlink.Netlink.set_link
def set_link(self, index, **kw):
    if ":net:" in (kw.get("alias") or ""):
        os._exit(9)  # the daemon dies between making the bridge and marking it ours
    return real_set_link(self, index, **kw)
netlink.Netlink.set_link = set_link

async def main():
    root = sys.argv[1]
    m = NetworkManager(bus=EventBus(), data_root=root + "/data", exec_root=root + "/exec", leftovers=Leftovers())
    await m.start()
    await m.create("kcrash", options={"com.docker.network.bridge.name": sys.argv[2]})
asyncio.run(main())
"""


def test_bridge_made_by_a_run_killed_before_marking_it(scratch: Path) -> None:
    """A kill between creating a bridge and setting its ifalias (the kernel ignores one given at
    creation) left a link the next run refused as someone else's: `network create` of the same
    name, and every start on a lazily re-made bridge, failed until a person deleted it."""
    import os
    import subprocess
    import sys
    br = "adtk" + os.urandom(4).hex()
    p = subprocess.run([sys.executable, "-c", _KILLED_WHILE_MARKING, str(scratch), br], capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    try:
        assert p.returncode == 9, p.stderr
        assert netcheck.link_exists(br)  # the state the kill left: the bridge, with no alias

        async def main() -> None:
            m = _manager(scratch)
            await m.start()  # the restart's cleanup knows it for ours and removes it
            try:
                assert not netcheck.link_exists(br)
                await m.create("kcrash", options={"com.docker.network.bridge.name": br})
                await m.attach("e" * 64, "kcrash", container_name="epsilon")
                assert netcheck.our_link_aliases(m.tag)[br].endswith(":net:" + m.get("kcrash").id[:12])
                await m.release("e" * 64)
                await m.remove("kcrash")
            finally:
                await m.shutdown()
            assert netcheck.our_links(m.tag) == []

        asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        subprocess.run(["ip", "link", "del", br], capture_output=True, timeout=30)
