"""The daemon as a process and the API's system surface, through the real docker CLI:
version/info blocks, the data-root lock, a clean SIGTERM shutdown, config-file keys, Docker's
version negotiation, and 501 (never a bare 404) for parts of the API not built yet."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from tests.support.daemon import Daemon, daemon_command


def test_docker_version_shows_both_blocks(shared_daemon: Daemon) -> None:
    out = shared_daemon.docker("version").stdout
    client, _, server = out.partition("Server:")
    # the CLI 28 speaks 1.50 at most: it negotiates down to its own newest, no "downgraded"
    assert "API version:       1.50\n" in client
    assert "Engine:" in server and "API version:      1.54 (minimum version 1.24)" in server
    assert "OS/Arch:          linux/amd64" in server
    assert "crun:" in server and "runc:" in server


def test_docker_info_names_runtimes_and_storage(shared_daemon: Daemon) -> None:
    info = json.loads(shared_daemon.docker("info", "--format", "{{json .}}").stdout)
    assert info["DefaultRuntime"] in info["Runtimes"]
    assert set(info["Runtimes"]) >= {"crun", "runc"}
    assert info["Driver"] == "overlay2" and info["OSType"] == "linux"
    status, body = shared_daemon.request("GET", "/v1.41/info")
    probes = json.loads(body)["X-AsyncdockRuntimeProbes"]  # beyond Docker: every probe's result
    assert status == 200 and set(probes) >= {"crun", "runc"} and probes["runc"]["Ok"]
    # On this host crun works only with the cgroup2 mount hidden; the engine picks it when it does.
    if probes["crun"]["Ok"]:
        assert info["DefaultRuntime"] == "crun"
    else:
        assert info["DefaultRuntime"] == "runc"
    text = shared_daemon.docker("info").stdout
    assert f"Default Runtime: {info['DefaultRuntime']}" in text


def test_second_daemon_on_same_data_root_is_refused(shared_daemon: Daemon) -> None:
    cmd = daemon_command() + ["daemon", "--host", f"unix://{shared_daemon.root / 'second.sock'}",
                              "--data-root", str(shared_daemon.data_root),
                              "--exec-root", str(shared_daemon.root / "exec2")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "another daemon" in res.stderr and str(shared_daemon.data_root) in res.stderr
    assert shared_daemon.ping()


def test_sigterm_stops_cleanly_and_state_survives(daemon: Daemon) -> None:
    daemon.docker("pull", "-q", "busybox")
    daemon.docker("tag", "busybox", "keep:1")
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    daemon.start()
    images = daemon.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "keep:1" in images and "busybox:latest" in images


def test_config_file_keys_apply(daemon_factory: Any) -> None:
    d = daemon_factory({"default-runtime": "runc", "log-driver": "local", "debug": True})
    info = json.loads(d.docker("info", "--format", "{{json .}}").stdout)
    assert info["DefaultRuntime"] == "runc"
    assert info["LoggingDriver"] == "local"
    assert info["Debug"] is True


def test_unknown_default_runtime_stops_the_daemon_clearly(daemon_factory: Any) -> None:
    d = daemon_factory({"default-runtime": "nosuch"}, start=False, check_leaks=False)
    d.config_path.write_text(json.dumps(d.config))
    res = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "default runtime nosuch" in res.stderr


def test_min_api_version_from_daemon_json(daemon_factory: Any) -> None:
    d = daemon_factory({"min-api-version": "1.44"})
    assert "API version:      1.54 (minimum version 1.44)" in d.docker("version").stdout
    old = d.docker("ps", env={"DOCKER_API_VERSION": "1.43"}, check=False)
    assert old.returncode != 0 and ("client version 1.43 is too old. Minimum supported API version is 1.44, "
                                    "please upgrade your client to a newer version") in old.stderr


def test_min_api_version_out_of_range_stops_the_daemon_with_dockerds_text(daemon_factory: Any) -> None:
    d = daemon_factory({"min-api-version": "1.12"}, start=False, check_leaks=False)
    d.config_path.write_text(json.dumps(d.config))
    res = subprocess.run(d.command(), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "invalid minimum API version (1.12): must be between 1.24 and 1.54" in res.stderr
    # the environment's DOCKER_MIN_API_VERSION wins over daemon.json, as with dockerd
    d.config_path.write_text(json.dumps({**d.config, "min-api-version": "1.44"}))
    res = subprocess.run(d.command(), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DOCKER_MIN_API_VERSION": "1.55"})
    assert res.returncode != 0
    assert "invalid minimum API version (1.55): must be between 1.24 and 1.54" in res.stderr


def test_api_versions_and_unbuilt_routes(shared_daemon: Daemon) -> None:
    too_new = shared_daemon.docker("version", env={"DOCKER_API_VERSION": "1.55"}, check=False)
    assert "client version 1.55 is too new. Maximum supported API version is 1.54" in too_new.stderr
    old = shared_daemon.docker("ps", env={"DOCKER_API_VERSION": "1.40"})
    assert old.stdout.startswith("CONTAINER ID")
    status, body = shared_daemon.request("GET", "/v1.41/images/search?term=x")
    assert status == 501 and b"image search is not implemented" in body
    status, body = shared_daemon.request("GET", "/v1.41/nosuchendpoint")
    assert status == 404 and json.loads(body) == {"message": "page not found"}
    status, body = shared_daemon.request("POST", "/v1.41/containers/create", body=b"{bad",
                                            headers={"Content-Type": "application/json"})
    assert status == 400 and "message" in json.loads(body)
