"""`docker login` (POST /auth) checks the credentials against the registry, basic and token
auth, with dockerd's error texts; a token server's refresh token comes back as IdentityToken."""
from __future__ import annotations

import base64
import json
from typing import Any

from tests.support.daemon import Daemon


def test_login_basic_auth(daemon: Daemon, auth_registry: Any) -> None:
    host = auth_registry.host
    bad = daemon.docker("login", "-u", auth_registry.username, "-p", "wrong", host, check=False)
    assert bad.returncode != 0
    assert (f"Error response from daemon: login attempt to http://{host}/v2/ failed with status: "
            "401 Unauthorized") in bad.stderr
    ok = daemon.docker("login", "-u", auth_registry.username, "-p", auth_registry.password, host)
    assert "Login Succeeded" in ok.stdout
    status, body = daemon.request("POST", "/v1.54/auth", {"username": auth_registry.username,
                                                          "password": auth_registry.password,
                                                          "serveraddress": host})
    assert status == 200
    assert json.loads(body) == {"IdentityToken": "", "Status": "Login Succeeded"}


def test_login_token_auth(daemon: Daemon, token_registry: Any) -> None:
    host = token_registry.host
    bad = daemon.docker("login", "-u", token_registry.username, "-p", "wrong", host, check=False)
    assert bad.returncode != 0
    assert f'Error response from daemon: Get "http://{host}/v2/": unauthorized:' in bad.stderr
    status, body = daemon.request("POST", "/v1.54/auth", {"username": token_registry.username,
                                                          "password": "wrong", "serveraddress": host})
    assert status == 401
    ok = daemon.docker("login", "-u", token_registry.username, "-p", token_registry.password, host)
    assert "Login Succeeded" in ok.stdout
    status, body = daemon.request("POST", "/v1.54/auth", {"username": token_registry.username,
                                                          "password": token_registry.password,
                                                          "serveraddress": host})
    answer = json.loads(body)
    assert status == 200 and answer["Status"] == "Login Succeeded" and answer["IdentityToken"]
    # the CLI keeps the identity token and pulls a private repository with it
    cfg = json.loads((daemon.docker_config / "config.json").read_text())
    entry = cfg["auths"][host]
    assert entry.get("identitytoken")
    assert base64.b64decode(entry.get("auth", "") or "Og==").decode().split(":")[1] in ("", )
    out = daemon.docker("pull", f"{host}/private/busybox").stdout
    assert "Status: Downloaded newer image" in out
