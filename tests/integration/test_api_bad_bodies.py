"""Request bodies and names of the wrong shape get a one-line 4xx naming the problem, never a
500 from deep inside a manager (cases the API fuzz test found, kept as plain regressions)."""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.support.daemon import Daemon


def _message(body: bytes) -> str:
    msg = json.loads(body)["message"]
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("path,body,field", [
    ("/v1.41/networks/create", {"Name": "fz1", "IPAM": -7.2e15}, "IPAM"),
    ("/v1.41/networks/create", {"Name": "fz1", "IPAM": {"Config": [{"Subnet": 5}]}}, "Subnet"),
    ("/v1.41/networks/create", {"Name": "fz1", "Labels": ["a"]}, "Labels"),
    ("/v1.41/networks/create", {"Name": "fz1", "Options": {"a": 1}}, "Options"),
    ("/v1.41/networks/bridge/connect", {"Container": "x", "EndpointConfig": {"Aliases": "a"}}, "Aliases"),
    ("/v1.41/networks/bridge/disconnect", {"Container": "x", "Force": "yes"}, "Force"),
    ("/v1.41/volumes/create", {"Name": "", "Driver": "local", "DriverOpts": {}, "Labels": [None, None]}, "Labels"),
    ("/v1.41/volumes/create", {"Name": "v", "DriverOpts": {"type": 3}}, "DriverOpts"),
])
def test_wrong_shapes_are_400(shared_daemon: Daemon, path: str, body: dict, field: str) -> None:
    status, out = shared_daemon.request("POST", path, body)
    assert status == 400, (status, out)
    assert field in _message(out)


def test_login_to_a_server_address_that_is_no_host_name(shared_daemon: Daemon) -> None:
    body = {"username": "", "password": "x", "serveraddress": "\u009d\u0088\u00fdp\u00bb\u001f\u00d89\u0006"}
    status, out = shared_daemon.request("POST", "/v1.41/auth", body)
    assert status == 400, (status, out)
    assert "invalid registry address" in _message(out)


def test_a_name_with_a_newline_is_echoed_on_one_line(shared_daemon: Daemon) -> None:
    status, out = shared_daemon.request("POST", "/v1.41/containers/a%0Ab%07c/unpause")
    assert status == 404
    assert _message(out) == "No such container: a\\nb\\x07c"


def test_unreachable_registry_is_reported_in_dockerds_words(shared_daemon: Daemon) -> None:
    # a loopback port nothing listens on: refused at once, nothing leaves the machine
    status, out = shared_daemon.request("POST", "/v1.41/images/create?fromImage=127.0.0.1:1/x&tag=1")
    assert status == 500, (status, out)
    msg = _message(out)
    # https first, then http for a loopback registry, as dockerd
    assert re.match(r'^Get "https?://127\.0\.0\.1:1/v2/": dial tcp 127\.0\.0\.1:1: connect: connection refused$', msg), msg


@pytest.mark.parametrize("size", [200 << 10, 16 << 20])
def test_docker_py_gets_the_answer_to_a_body_nobody_reads(shared_daemon: Daemon, size: int) -> None:
    """docker-py writes the whole body before it reads: a load's error (the archive is given up
    on at its first block, the rest is read and dropped) or a 404 (archive into a container that
    does not exist) must reach it at once, not after its own timeout."""
    import docker

    client = shared_daemon.client(timeout=30)
    data = b"\0" * size
    start = time.monotonic()
    with pytest.raises(docker.errors.ImageLoadError) as e:
        client.images.load(data)
    assert "invalid archive: empty archive" in str(e.value)
    assert time.monotonic() - start < 2
    start = time.monotonic()
    with pytest.raises(docker.errors.NotFound):
        client.api.put_archive("fz-no-such-container", "/", data)
    assert time.monotonic() - start < 2
    assert client.ping()  # the pool's next request (a kept or a new connection) is answered


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1.41/auth", {"username": "", "password": "x", "serveraddress": "9"}),
    ("POST", "/v1.41/images/create?fromImage=1.2/x&tag=1", None),
])
def test_a_registry_host_aiohttp_refuses_is_400(shared_daemon: Daemon, method: str, path: str, body: dict | None) -> None:
    # "9" and "1.2" are no canonical IPv4 address: refused before any connection is tried
    status, out = shared_daemon.request(method, path, body)
    assert status == 400, (status, out)
    assert "invalid registry address" in _message(out)
