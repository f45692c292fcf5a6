"""testcontainers-python 4.x core against asyncdock: `DockerContainer` with a published port and
`wait_for_logs` (and its successor, a log wait strategy), a `Network` where one container reaches another by its alias, and `exec`.

Its reaper (Ryuk) is disabled (TESTCONTAINERS_RYUK_DISABLED): Ryuk is a Go program shipped only
as an image on Docker Hub, which the tests cannot reach, and the suite builds its images from
busybox; each test removes what it made itself (the context managers stop the containers and
the network)."""
from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import LogMessageWaitStrategy
from testcontainers.core.waiting_utils import wait_for_logs

from tests.support.daemon import Daemon

SERVER = ("mkdir -p /www && echo 'served by testcontainers' > /www/index.html && echo listening now "
          "&& exec httpd -f -p 8080 -h /www")


@pytest.fixture
def tc_env(d: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """testcontainers pointed at the test daemon (it reads DOCKER_HOST as docker-py's from_env
    does), reaper off, no Docker Hub prefix."""
    for key, value in d.env.items():
        if key.startswith("DOCKER_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    monkeypatch.delenv("TESTCONTAINERS_HOST_OVERRIDE", raising=False)
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "hub_image_name_prefix", "")
    yield d
    left = d.docker("ps", "-aq", "--filter", "label=org.testcontainers.session-id").stdout.split()
    assert left == [], f"testcontainers left containers behind: {left}"


# wait_for_logs with a string: deprecated in 4.x for wait strategies (the other test's), still served
@pytest.mark.filterwarnings("ignore:The wait_for_logs function:DeprecationWarning")
def test_a_container_with_a_published_port_and_wait_for_logs(tc_env: Daemon) -> None:
    server = DockerContainer("busybox").with_command(["sh", "-c", SERVER]).with_exposed_ports(8080)
    with server:
        wait_for_logs(server, "listening now", timeout=60)
        host = server.get_container_host_ip()
        port = server.get_exposed_port(8080)
        with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=10) as r:
            assert r.read() == b"served by testcontainers\n"
        stdout, _ = server.get_logs()
        assert b"listening now" in stdout
        result = server.exec(["sh", "-c", "cat /www/index.html; exit 4"])
        assert result.exit_code == 4 and result.output == b"served by testcontainers\n"
        cid = server.get_container_id()
        assert tc_env.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    assert tc_env.docker("ps", "-aq", "--filter", f"id={cid}").stdout.strip() == ""


def test_containers_on_a_network_reach_each_other_by_alias(tc_env: Daemon) -> None:
    alias = "srv-" + uuid.uuid4().hex[:6]
    with Network() as network:
        server = (DockerContainer("busybox").with_command(["sh", "-c", SERVER])
                  .with_network(network).with_network_aliases(alias)
                  .waiting_for(LogMessageWaitStrategy("listening now").with_startup_timeout(60)))
        client = DockerContainer("busybox").with_command(["sleep", "300"]).with_network(network)
        with server, client:
            result = client.exec(["wget", "-qO-", f"http://{alias}:8080/index.html"])
            assert result.exit_code == 0, result.output
            assert result.output == b"served by testcontainers\n"
            nets = tc_env.client().containers.get(server.get_container_id()).attrs["NetworkSettings"]["Networks"]
            assert alias in nets[network.name]["Aliases"]
        name = network.name
    assert name not in tc_env.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
