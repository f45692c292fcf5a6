"""Through the docker CLI: a 120-layer image pulled, mounted and run (mount options stay
short enough), and `docker login` + a pull that needs the credentials (X-Registry-Auth)."""
from __future__ import annotations

from typing import Any

from tests.support.daemon import Daemon


def test_pull_and_run_a_120_layer_image(shared_daemon: Daemon, registry: Any) -> None:
    ref = registry.ref("library/deep120")
    out = shared_daemon.docker("pull", ref).stdout
    # every layer ends in Docker's way: pulled, or (the busybox base, on a shared daemon) present
    assert out.count("Pull complete") + out.count("Already exists") == 120
    assert out.count("Pull complete") >= 119 and "Status: Downloaded newer image" in out
    layers = shared_daemon.docker("image", "inspect", "-f", "{{len .RootFS.Layers}}", ref).stdout.strip()
    assert layers == "120"
    # the bottom layer's busybox and the top layer's marker are both visible in one overlay
    assert shared_daemon.docker("run", "--rm", ref, "cat", "/layers/top").stdout.strip() == "119"
    shared_daemon.docker("rmi", ref)


def test_docker_login_then_pull_with_credentials(daemon: Daemon, auth_registry: Any) -> None:
    ref = auth_registry.ref("library/busybox")
    denied = daemon.docker("pull", ref, check=False)
    assert denied.returncode != 0
    bad = daemon.docker("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                        input="wrong\n", check=False)
    assert bad.returncode != 0
    ok = daemon.docker("login", "-u", auth_registry.username, "--password-stdin", auth_registry.host,
                       input=auth_registry.password + "\n")
    assert "Login Succeeded" in ok.stdout
    out = daemon.docker("pull", ref).stdout
    assert "Status: Downloaded newer image" in out
    assert daemon.docker("run", "--rm", ref, "echo", "authenticated").stdout == "authenticated\n"
