"""Errors the docker CLI shows: one line in Docker's words, without Python's or aiohttp's text."""
from __future__ import annotations

import json

from tests.support.daemon import Daemon

REFUSED = 'Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused'


def test_pull_from_a_closed_loopback_port(d: Daemon) -> None:
    res = d.docker("pull", "127.0.0.1:1/h12/nosuch", check=False)
    assert res.returncode == 1
    assert res.stderr == f"Error response from daemon: {REFUSED}\n"
    status, body = d.request("POST", "/v1.41/images/create?fromImage=127.0.0.1:1/h12/nosuch&tag=latest")
    assert status == 500 and json.loads(body) == {"message": REFUSED}


def test_run_of_an_image_on_a_closed_loopback_port(d: Daemon) -> None:
    res = d.docker("run", "--rm", "127.0.0.1:1/h12/nosuch", "true", check=False)
    assert res.returncode == 125
    assert f"docker: Error response from daemon: {REFUSED}\n" in res.stderr
    assert "ssl:" not in res.stderr and "Connect call failed" not in res.stderr
