"""A pull whose platform containerd's parser refuses answers 400 with its text before anything
is contacted: the image names a registry that is only a listening socket, and nothing connects."""
from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.daemon import Daemon

CASES = [
    ("nonsense/x/y/z", '"nonsense/x/y/z": cannot parse platform specifier: invalid argument'),
    ("bogus", '"bogus": unknown operating system or architecture: invalid argument'),
    ("linux/", '"" is an invalid component of "linux/": platform specifier component must match '
               '"^[A-Za-z0-9_.-]+$": invalid argument'),
    ("linux/*", '"linux/*": wildcards not yet supported: invalid argument'),
]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A 'registry' that records contacts: a connection would wait in its backlog."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.setblocking(False)
    yield s
    s.close()


def _contacted(listener: socket.socket) -> bool:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.mark.parametrize(("platform", "message"), CASES)
def test_bad_platform_is_400_before_any_contact(shared_daemon: Daemon, listener: socket.socket,
                                                platform: str, message: str) -> None:
    image = f"127.0.0.1:{listener.getsockname()[1]}/library/busybox"
    status, body = shared_daemon.request(
        "POST", f"/v1.41/images/create?fromImage={quote(image)}&tag=latest&platform={quote(platform)}")
    assert (status, json.loads(body)) == (400, {"message": message})
    assert not _contacted(listener)


def test_docker_pull_bad_platform(shared_daemon: Daemon, listener: socket.socket) -> None:
    image = f"127.0.0.1:{listener.getsockname()[1]}/library/busybox"
    r = shared_daemon.docker("pull", "--platform", "bogus", image, check=False)
    assert r.returncode == 1
    assert ('Error response from daemon: "bogus": unknown operating system or architecture: invalid argument'
            in r.stderr)
    assert not _contacted(listener)
