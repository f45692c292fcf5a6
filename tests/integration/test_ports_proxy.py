"""The userland proxy alone: 127.0.0.1:PORT -> a server inside a network namespace this test
makes (`ip netns add` + a veth pair on 10.231.x, removed at the end), TCP with an HTTP request
and UDP with an echo; bounded in count and time; traffic only to loopback and that netns."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.networks.portproxy import ProxyBindError, TcpProxy, UdpProxy
from tests.support.netcheck import tcp_listeners


@pytest.fixture
def test_netns() -> Iterator[tuple[str, str]]:
    """(netns name, its address): 10.231.<r>.2 in the netns, .1 on our side (a /30 that
    collides with no route: checked first)."""
    r = os.getpid() % 250
    host_ip, ns_ip = f"10.231.{r}.1", f"10.231.{r}.2"
    routes = subprocess.run(["ip", "-4", "route", "get", ns_ip], capture_output=True, text=True).stdout
    if " dev " in routes and "via" not in routes and "eth" not in routes.split(" dev ")[1].split()[0]:
        pytest.skip(f"{ns_ip} is routed on this host already")
    name = f"adtest{os.getpid()}"
    veth = f"adt{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name], check=True)
        subprocess.run(["ip", "addr", "add", f"{host_ip}/30", "dev", veth], check=True)
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{ns_ip}/30", "dev", "eth0"],
                    ["link", "set", "eth0", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_tcp_http_and_udp_through_proxy(test_netns: tuple[str, str], scratch: Path) -> None:
    name, ns_ip = test_netns
    www = scratch
    (www / "index.html").write_text("proxied\n" * 1000)

    async def main() -> None:
        httpd = await asyncio.create_subprocess_exec("ip", "netns", "exec", name, "busybox", "httpd", "-f",
                                                     "-p", f"{ns_ip}:80", "-h", str(www))
        # a UDP echo in the netns (bounded: 3 datagrams then exit)
        echo = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", name, "python3", "-c",
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"s.bind(('{ns_ip}',5353))\ns.settimeout(20)\n"
            "for _ in range(3):\n  d,a=s.recvfrom(2048); s.sendto(b'echo:'+d,a)\n")
        tcp = TcpProxy("127.0.0.1", 0, ns_ip, 80)
        udp = UdpProxy("127.0.0.1", 0, ns_ip, 5353)
        try:
            port = await tcp.start()
            uport = await udp.start()
            body = b""
            for _ in range(50):
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    await writer.drain()
                    body = await asyncio.wait_for(reader.read(), 5)
                    writer.close()
                    if b" 200 " in body.split(b"\r\n", 1)[0]:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
            assert body.split(b"\r\n", 1)[0].endswith(b"200 OK")
            assert body.endswith(b"proxied\n" * 1000)
            # a second listener on the same port: Docker's error
            with pytest.raises(ProxyBindError) as exc:
                await TcpProxy("127.0.0.1", port, ns_ip, 80).start()
            assert exc.value.text == f"listen tcp4 127.0.0.1:{port}: bind: address already in use"
            # UDP
            loop = asyncio.get_running_loop()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            got = b""
            try:
                s.connect(("127.0.0.1", uport))
                for i in range(3):
                    s.send(b"ping%d" % i)
                    try:
                        got = await asyncio.wait_for(loop.sock_recv(s, 2048), 3)
                        break
                    except asyncio.TimeoutError:
                        continue
            finally:
                s.close()
            assert got.startswith(b"echo:ping")
        finally:
            await tcp.close()
            await udp.close()
            for p in (httpd, echo):
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        # the listener is gone
        assert port not in tcp_listeners()

    asyncio.run(asyncio.wait_for(main(), 60))
