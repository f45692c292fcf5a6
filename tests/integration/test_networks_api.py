"""Networks through the real docker CLI and docker-py (no containers needed): create, ls,
inspect, rm, prune, Docker's errors, events; and that `network rm` and daemon shutdown leave no
bridge, nftables chain, netns pin or forwarding change of ours behind."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid

import docker
import pytest

from tests.support import netcheck
from tests.support.daemon import Daemon


def _name() -> str:
    return "n" + uuid.uuid4().hex[:10]


def test_builtin_networks_listed_like_docker(shared_daemon: Daemon) -> None:
    out = shared_daemon.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split("\n")
    rows = {line.split()[0]: line.split()[1:] for line in out if line}
    assert rows["bridge"] == ["bridge", "local"]
    assert rows["host"] == ["host", "local"]
    assert rows["none"] == ["null", "local"]
    bridge = json.loads(shared_daemon.docker("network", "inspect", "bridge").stdout)[0]
    assert bridge["Driver"] == "bridge" and bridge["Scope"] == "local" and bridge["Containers"] == {}
    subnet = ipaddress.IPv4Network(bridge["IPAM"]["Config"][0]["Subnet"])
    assert ipaddress.IPv4Address(bridge["IPAM"]["Config"][0]["Gateway"]) == subnet.network_address + 1
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    assert bridge["Options"]["com.docker.network.bridge.name"].startswith("adock")


def test_create_inspect_ls_rm_cli(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = _name()
    nid = d.docker("network", "create", "--label", "team=a", name).stdout.strip()
    try:
        assert len(nid) == 64
        info = json.loads(d.docker("network", "inspect", name).stdout)[0]
        assert info["Id"] == nid and info["Name"] == name and info["Driver"] == "bridge"
        assert info["Labels"] == {"team": "a"} and info["Containers"] == {} and info["Options"] == {}
        subnet = ipaddress.IPv4Network(info["IPAM"]["Config"][0]["Subnet"])
        # the subnet collides with no route the host had
        for r in netcheck_routes():
            assert not subnet.overlaps(r), (subnet, r)
        assert netcheck.link_exists(f"br-{nid[:12]}")
        assert name in d.docker("network", "ls", "--filter", "label=team=a", "--format", "{{.Name}}").stdout.split()
        assert name in d.docker("network", "ls", "-q", "--filter", "type=custom", "--no-trunc").stdout or \
            nid in d.docker("network", "ls", "-q", "--filter", "type=custom", "--no-trunc").stdout
        dup = d.docker("network", "create", name, check=False)
        assert dup.returncode == 1 and f"network with name {name} already exists" in dup.stderr
        # inspect by ID prefix
        assert json.loads(d.docker("network", "inspect", nid[:8]).stdout)[0]["Name"] == name
    finally:
        d.docker("network", "rm", name)
    assert not netcheck.link_exists(f"br-{nid[:12]}")
    missing = d.docker("network", "inspect", name, check=False)
    assert missing.returncode == 1


def netcheck_routes() -> list[ipaddress.IPv4Network]:
    out = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True,
                                    text=True).stdout or "[]")
    nets = []
    for r in out:
        dst = r.get("dst", "")
        if dst and dst != "default" and not str(r.get("dev", "")).startswith(("br-", "adock")):
            try:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                pass
    return [n for n in nets if n.prefixlen]


def test_errors_match_docker(shared_daemon: Daemon) -> None:
    d = shared_daemon
    status, body = d.request("GET", "/v1.41/networks/nosuch")
    assert status == 404 and json.loads(body) == {"message": "network nosuch not found"}
    res = d.docker("network", "rm", "bridge", check=False)
    assert res.returncode == 1 and "bridge is a pre-defined network and cannot be removed" in res.stderr
    res = d.docker("network", "create", "-d", "nosuchdriver", _name(), check=False)
    assert res.returncode == 1 and 'plugin "nosuchdriver" not found' in res.stderr
    status, body = d.request("DELETE", "/v1.41/networks/nosuch")
    assert status == 404


def test_subnet_and_gateway_options(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = _name()
    # 10.213.x: any host route there makes the daemon refuse, which the test then accepts
    res = d.docker("network", "create", "--subnet", "10.213.7.0/24", "--gateway", "10.213.7.254", name, check=False)
    if res.returncode != 0:
        assert "overlaps" in res.stderr
        return
    try:
        info = json.loads(d.docker("network", "inspect", name).stdout)[0]
        assert info["IPAM"]["Config"] == [{"Subnet": "10.213.7.0/24", "Gateway": "10.213.7.254"}]
        clash = d.docker("network", "create", "--subnet", "10.213.7.128/25", _name(), check=False)
        assert clash.returncode == 1 and "Pool overlaps with other one on this address space" in clash.stderr
    finally:
        d.docker("network", "rm", name)


def test_docker_py_networks_and_prune(shared_daemon: Daemon) -> None:
    client = shared_daemon.client()
    name = _name()
    net = client.networks.create(name, driver="bridge", labels={"prune-me": name})
    assert net.name == name
    got = client.networks.get(net.id)
    assert got.attrs["Driver"] == "bridge" and got.attrs["Labels"] == {"prune-me": name}
    assert name in [n.name for n in client.networks.list(names=[name])]
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("nosuch" + name)
    res = client.networks.prune(filters={"label": f"prune-me={name}"})
    assert res["NetworksDeleted"] == [name]
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(net.id)
    assert client.networks.prune(filters={"label": f"prune-me={name}"})["NetworksDeleted"] is None


def test_network_events(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = _name()
    since = d.docker("system", "info", "--format", "{{.SystemTime}}").stdout.strip()
    nid = d.docker("network", "create", name).stdout.strip()
    d.docker("network", "rm", name)
    until = d.docker("system", "info", "--format", "{{.SystemTime}}").stdout.strip()
    out = d.docker("events", "--since", since, "--until", until, "--filter", "type=network",
                   "--format", "{{json .}}").stdout
    evs = [json.loads(line) for line in out.splitlines() if line.strip()]
    mine = [(e["Action"], e["Actor"]["Attributes"]) for e in evs if e["Actor"]["ID"] == nid]
    assert mine == [("create", {"name": name, "type": "bridge"}), ("destroy", {"name": name, "type": "bridge"})]


def test_shutdown_and_restart_leave_nothing(daemon: Daemon) -> None:
    tag = netcheck.daemon_tag(daemon.data_root)
    name = _name()
    nid = daemon.docker("network", "create", name).stdout.strip()
    assert f"br-{nid[:12]}" in netcheck.our_links(tag)
    assert netcheck.our_chains(tag) == [f"post_{tag}", f"fwd_{tag}"] or set(netcheck.our_chains(tag)) == {
        f"post_{tag}", f"fwd_{tag}"}
    assert daemon.stop() == 0
    assert netcheck.our_links(tag) == []
    assert netcheck.our_chains(tag) == []
    assert netcheck.netns_pins(daemon.exec_root) == []
    daemon.start()
    # the network survives the restart (its bridge comes back when a container needs it)
    info = json.loads(daemon.docker("network", "inspect", name).stdout)[0]
    assert info["Id"] == nid
    daemon.docker("network", "rm", name)
    assert netcheck.our_links(tag) == [] and netcheck.our_chains(tag) == []
