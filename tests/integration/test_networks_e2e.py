"""END TO END WITH CONTAINERS — NEEDS THE LEAD'S INTEGRATION of NetworkManager/VolumeManager into
the container start/stop/remove path (see the networks issue's integration recipe). These fail
until then; they are not skipped on purpose.

`docker run -p` reached from the host by HTTP on 127.0.0.1, `docker port` / `ps` PORTS, two
containers on a user network talking by name, `network rm` of a network in use refused, nothing
left after the containers and the daemon go, a volume's data outliving its container and a
daemon restart. Traffic only to loopback and to the test's containers."""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support import netcheck
from tests.support.daemon import Daemon

BUSYBOX = "busybox"


@pytest.fixture
def d(daemon: Daemon) -> Iterator[Daemon]:
    daemon.docker("pull", "-q", BUSYBOX)
    yield daemon


def _u() -> str:
    return uuid.uuid4().hex[:8]


def _http_get(d: Daemon, port: int, tries: int = 50) -> str:
    """From the host to 127.0.0.1 (bounded retries while httpd starts)."""
    import http.client

    last: Exception | None = None
    for _ in range(tries):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            if r.status == 200:
                return body
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"no answer on 127.0.0.1:{port}: {last}")


def test_published_port_reached_from_host(d: Daemon) -> None:
    name = "web" + _u()
    d.docker("run", "-d", "-p", "127.0.0.1::80", "--name", name, BUSYBOX, "sh", "-c",
             "mkdir -p /www && echo hello-e2e > /www/index.html && exec httpd -f -p 80 -h /www")
    try:
        info = json.loads(d.docker("inspect", name).stdout)[0]
        ports = info["NetworkSettings"]["Ports"]
        host_port = int(ports["80/tcp"][0]["HostPort"])
        assert ports["80/tcp"][0]["HostIp"] == "127.0.0.1"
        net = info["NetworkSettings"]["Networks"]["bridge"]
        assert net["IPAddress"] and net["Gateway"] and net["MacAddress"].startswith("02:42:")
        assert info["NetworkSettings"]["IPAddress"] == net["IPAddress"]
        assert _http_get(d, host_port).strip() == "hello-e2e"
        assert d.docker("port", name).stdout.strip() == f"80/tcp -> 127.0.0.1:{host_port}"
        ps = d.docker("ps", "--filter", f"name={name}", "--format", "{{.Ports}}").stdout.strip()
        assert ps == f"127.0.0.1:{host_port}->80/tcp"
    finally:
        d.docker("rm", "-f", name)
    assert host_port not in netcheck.tcp_listeners()


def test_port_in_use_gives_dockers_error(d: Daemon) -> None:
    a, b = "pa" + _u(), "pb" + _u()
    d.docker("run", "-d", "-p", "127.0.0.1::80", "--name", a, BUSYBOX, "sleep", "60")
    try:
        port = json.loads(d.docker("inspect", a).stdout)[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        res = d.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "--name", b, BUSYBOX, "sleep", "60", check=False)
        assert res.returncode != 0
        assert re.search(rf"driver failed programming external connectivity on endpoint {b} \([0-9a-f]{{64}}\): "
                         rf"Error starting userland proxy: listen tcp4 127.0.0.1:{port}: bind: address already in use",
                         res.stderr), res.stderr
    finally:
        d.docker("rm", "-f", a, b, check=False)


def test_two_containers_by_name_on_user_network(d: Daemon) -> None:
    net, db = "app" + _u(), "db" + _u()
    d.docker("network", "create", net)
    try:
        d.docker("run", "-d", "--network", net, "--network-alias", "database", "--name", db, BUSYBOX, "sleep", "120")
        for target in (db, "database"):
            out = d.docker("run", "--rm", "--network", net, BUSYBOX, "ping", "-c1", "-W3", target).stdout
            assert "1 packets received" in out
        res = d.docker("network", "rm", net, check=False)
        assert res.returncode == 1 and "has active endpoints" in res.stderr
        info = json.loads(d.docker("network", "inspect", net).stdout)[0]
        assert len(info["Containers"]) == 1
    finally:
        d.docker("rm", "-f", db, check=False)
        d.docker("network", "rm", net, check=False)
    tag = netcheck.daemon_tag(d.data_root)
    assert not any(n.startswith("br-") or n.startswith("veth") for n in netcheck.our_links(tag))


def test_connect_disconnect_running(d: Daemon) -> None:
    net, c = "cn" + _u(), "cc" + _u()
    d.docker("network", "create", net)
    d.docker("run", "-d", "--name", c, BUSYBOX, "sleep", "120")
    try:
        d.docker("network", "connect", net, c)
        nets = json.loads(d.docker("inspect", c).stdout)[0]["NetworkSettings"]["Networks"]
        assert set(nets) == {"bridge", net} and nets[net]["IPAddress"]
        out = d.docker("exec", c, "ip", "-o", "-4", "addr").stdout
        assert nets[net]["IPAddress"] in out
        d.docker("network", "disconnect", net, c)
        assert set(json.loads(d.docker("inspect", c).stdout)[0]["NetworkSettings"]["Networks"]) == {"bridge"}
    finally:
        d.docker("rm", "-f", c, check=False)
        d.docker("network", "rm", net, check=False)


def test_volume_outlives_container_and_restart(d: Daemon) -> None:
    vol = "data" + _u()
    d.docker("run", "--rm", "-v", f"{vol}:/data", BUSYBOX, "sh", "-c", "echo kept > /data/f")
    assert d.stop() == 0
    d.start()
    out = d.docker("run", "--rm", "-v", f"{vol}:/data:ro", BUSYBOX, "cat", "/data/f").stdout
    assert out == "kept\n"
    c = "vc" + _u()
    d.docker("create", "--name", c, "-v", f"{vol}:/data", BUSYBOX, "true")
    res = d.docker("volume", "rm", vol, check=False)
    assert res.returncode == 1 and f"remove {vol}: volume is in use" in res.stderr
    d.docker("rm", c)
    d.docker("volume", "rm", vol)


def test_nothing_left_after_shutdown(d: Daemon) -> None:
    tag = netcheck.daemon_tag(d.data_root)
    net = "sd" + _u()
    d.docker("network", "create", net)
    d.docker("run", "-d", "-p", "127.0.0.1::80", "--network", net, "--name", "s" + _u(), BUSYBOX, "sleep", "300")
    d.docker("run", "-d", "-p", "127.0.0.1::80", "--name", "t" + _u(), BUSYBOX, "sleep", "300")
    assert netcheck.our_links(tag)
    assert d.stop() == 0
    assert netcheck.our_links(tag) == []
    assert netcheck.our_chains(tag) == []
    assert netcheck.netns_pins(d.exec_root) == []
