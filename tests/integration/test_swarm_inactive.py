"""Swarm routes on a node that is not in a swarm answer as Docker 29 does on such a node: 503
with moby's texts (daemon/cluster), through the real docker CLI, docker-py and raw requests."""
from __future__ import annotations

import json

import docker
import pytest

from tests.support.daemon import Daemon

NOT_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
               'to connect this node to swarm and try again.')
NOT_IN_SWARM = "This node is not part of a swarm"


@pytest.mark.parametrize("args", [("swarm", "leave", "--force"), ("swarm", "leave")])
def test_cli_swarm_leave_says_not_part_of_a_swarm(shared_daemon: Daemon, args: tuple[str, ...]) -> None:
    r = shared_daemon.docker(*args, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == f"Error response from daemon: {NOT_IN_SWARM}"


@pytest.mark.parametrize("args", [("service", "ls"), ("node", "ls"), ("secret", "ls"), ("config", "ls"),
                                  ("service", "ps", "web"), ("node", "inspect", "self"),
                                  ("swarm", "unlock-key")])
def test_cli_manager_commands_say_not_a_manager(shared_daemon: Daemon, args: tuple[str, ...]) -> None:
    r = shared_daemon.docker(*args, check=False)
    assert r.returncode == 1
    # `swarm unlock-key` puts its own "could not fetch unlock key: " before the daemon's text
    assert r.stderr.strip().endswith(f"Error response from daemon: {NOT_MANAGER}")


def test_docker_py_leave_force_is_harmless(shared_daemon: Daemon) -> None:
    client = shared_daemon.client()
    # docker-py takes exactly Docker's 503 as "nothing to leave" when forced (a 501 raised)
    assert client.swarm.leave(force=True) is True
    with pytest.raises(docker.errors.APIError) as caught:
        client.swarm.leave(force=False)
    assert caught.value.status_code == 503
    assert caught.value.explanation == NOT_IN_SWARM
    # testcontainers' and docker-py's own fixtures read the state from info
    assert client.info()["Swarm"]["LocalNodeState"] == "inactive"
    with pytest.raises(docker.errors.APIError) as caught:
        client.services.list()
    assert caught.value.status_code == 503


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1.41/swarm"), ("GET", "/swarm/unlockkey"), ("GET", "/nodes"), ("GET", "/nodes/abc"),
    ("DELETE", "/nodes/abc"), ("GET", "/services"), ("GET", "/services/abc"), ("DELETE", "/services/abc"),
    ("GET", "/services/abc/logs"), ("GET", "/tasks"), ("GET", "/tasks/abc"), ("GET", "/tasks/abc/logs"),
    ("GET", "/secrets"), ("GET", "/secrets/abc"), ("DELETE", "/secrets/abc"), ("GET", "/configs"),
    ("GET", "/configs/abc"), ("DELETE", "/configs/abc"), ("POST", "/swarm/unlock"),
    ("POST", "/services/create"), ("POST", "/secrets/create"), ("POST", "/configs/create"),
    ("POST", "/swarm/update?version=3"), ("POST", "/nodes/abc/update?version=1"),
])
def test_api_answers_503_not_a_manager(shared_daemon: Daemon, method: str, path: str) -> None:
    status, body = shared_daemon.request(method, path, b"{}" if method == "POST" else None,
                                         {"Content-Type": "application/json"} if method == "POST" else None)
    assert (status, json.loads(body)) == (503, {"message": NOT_MANAGER})


@pytest.mark.parametrize("query", ["", "?force=1", "?force=true", "?force=0"])
def test_api_leave_answers_503_not_part_of_a_swarm(shared_daemon: Daemon, query: str) -> None:
    status, body = shared_daemon.request("POST", "/v1.41/swarm/leave" + query)
    assert (status, json.loads(body)) == (503, {"message": NOT_IN_SWARM})


@pytest.mark.parametrize("method,path,body,message", [
    # what Docker checks before it looks at the cluster state
    ("GET", '/services?filters={"color":["red"]}', None, "invalid filter 'color'"),
    ("GET", '/nodes?filters={"color":["red"]}', None, "invalid filter 'color'"),
    ("GET", "/services/abc?insertDefaults=maybe", None,
     'invalid value for insertDefaults: maybe: strconv.ParseBool: parsing "maybe": invalid syntax'),
    ("POST", "/swarm/update", b"{}", "invalid swarm version '': strconv.ParseUint: parsing \"\": invalid syntax"),
    ("POST", "/secrets/abc/update?version=x", b"{}", "invalid secret version"),
    ("POST", "/configs/abc/update", b"{}", "invalid config version"),
])
def test_api_checks_the_request_first(shared_daemon: Daemon, method: str, path: str, body: bytes | None,
                                      message: str) -> None:
    status, raw = shared_daemon.request(method, path, body, {"Content-Type": "application/json"} if body else None)
    assert (status, json.loads(raw)) == (400, {"message": message})
    status, raw = shared_daemon.request("POST", "/services/create", b"{not json",
                                        {"Content-Type": "application/json"})
    assert status == 400


@pytest.mark.parametrize("path", ["/swarm/init", "/swarm/join"])
def test_api_init_and_join_say_asyncdock_cannot(shared_daemon: Daemon, path: str) -> None:
    status, raw = shared_daemon.request("POST", path, b'{"ListenAddr": "0.0.0.0:2377"}',
                                        {"Content-Type": "application/json"})
    action = path.rsplit("/", 1)[1]
    assert (status, json.loads(raw)) == (
        501, {"message": f"asyncdock cannot {action} a swarm: swarm mode is not supported"})
