"""An image saved by asyncdock loads into a real dockerd, and the reverse (opt-in: marker
`dockerd`, `make test-vs-docker`).

The dockerd is the one at ASYNCDOCK_DOCKERD_SOCKET (default /tmp/dockerd/docker.sock) when one
listens there; otherwise, if a dockerd binary is installed (bench/README.md says how), the test
starts its own on a private data root with the test registry as its mirror, and stops it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.dockerd
DOCKERD_SOCKET = os.environ.get("ASYNCDOCK_DOCKERD_SOCKET", "/tmp/dockerd/docker.sock")
CLI = os.environ.get("ASYNCDOCK_DOCKER_CLI", "/usr/local/bin/docker")


def _docker(sock: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[Any]:  # noqa: A002
    return subprocess.run([CLI, *args], env={**os.environ, "DOCKER_HOST": f"unix://{sock}"}, input=input,
                          capture_output=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def dockerd(registry: Any) -> Iterator[str]:
    if Path(DOCKERD_SOCKET).is_socket():
        yield DOCKERD_SOCKET
        return
    binary = shutil.which("dockerd")
    if binary is None:
        pytest.skip(f"no dockerd: none listens at {DOCKERD_SOCKET} and no dockerd binary is installed "
                    "(an opt-in run installs one as bench/README.md shows)")
    root = Path(tempfile.mkdtemp(prefix="adt-dockerd-"))
    sock = root / "docker.sock"
    cfg = {"data-root": str(root / "data"), "exec-root": str(root / "exec"), "pidfile": str(root / "pid"),
           "hosts": [f"unix://{sock}"], "bridge": "none", "iptables": False,
           "registry-mirrors": [registry.url], "insecure-registries": [registry.host]}
    (root / "daemon.json").write_text(json.dumps(cfg))
    log = open(root / "log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "--config-file", str(root / "daemon.json")], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if sock.is_socket() and subprocess.run([CLI, "-H", f"unix://{sock}", "version"],
                                                   capture_output=True, timeout=30).returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not start: {(root / 'log').read_text()[-2000:]}")
            time.sleep(0.2)  # polling a daemon we started for its socket: no event to wait on
        yield str(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _id(sock: str, name: str) -> str:
    return str(_docker(sock, "image", "inspect", "--format", "{{.Id}}", name).stdout.decode().strip())


def test_asyncdock_save_loads_into_dockerd_and_back(daemon: Daemon, dockerd: str, tmp_path: Path) -> None:
    ours = str(daemon.socket)
    daemon.docker("pull", "layers")
    daemon.docker("tag", "layers", "ad-saved:1")
    image_id = _id(ours, "ad-saved:1")
    archive = tmp_path / "from-asyncdock.tar"
    daemon.docker("save", "ad-saved:1", "-o", str(archive))
    try:
        out = _docker(dockerd, "load", "-i", str(archive)).stdout.decode()
        assert "Loaded image: ad-saved:1" in out
        assert _id(dockerd, "ad-saved:1") == image_id
        assert _docker(dockerd, "run", "--rm", "--network", "none", "ad-saved:1", "cat",
                       "/data/keep.txt").returncode == 0

        # The reverse: dockerd's own archive (20.10 writes the pre-25 `<id>/layer.tar` layout).
        _docker(dockerd, "tag", "ad-saved:1", "dd-saved:2")
        theirs = _docker(dockerd, "save", "dd-saved:2").stdout
        daemon.docker("rmi", "ad-saved:1", "layers")
        out = daemon.docker("load", input=theirs).stdout.decode()
        assert "Loaded image: dd-saved:2" in out
        assert _id(ours, "dd-saved:2") == image_id
        assert daemon.docker("run", "--rm", "dd-saved:2", "true").returncode == 0
    finally:
        subprocess.run([CLI, "-H", f"unix://{dockerd}", "rmi", "-f", "ad-saved:1", "dd-saved:2"],
                       capture_output=True, timeout=60)
