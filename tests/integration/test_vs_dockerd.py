"""Differential checks against a real dockerd (opt-in: `make test-vs-docker`, marker `dockerd`).

Start one as bench/README.md shows and point ASYNCDOCK_DOCKERD_SOCKET at it (default
/tmp/dockerd/docker.sock). The same operations go to both engines; the JSON shapes clients read
and the Python client's results must agree."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

import asyncdock
from tests.support.daemon import Daemon

pytestmark = pytest.mark.dockerd
DOCKERD = os.environ.get("ASYNCDOCK_DOCKERD_SOCKET", "/tmp/dockerd/docker.sock")
CLI = os.environ.get("ASYNCDOCK_DOCKER_CLI", "/usr/local/bin/docker")


@pytest.fixture(scope="module")
def dockerd() -> str:
    if not Path(DOCKERD).is_socket():
        pytest.fail(f"no dockerd at {DOCKERD}: start one as bench/README.md shows, or set ASYNCDOCK_DOCKERD_SOCKET")
    return DOCKERD


def docker(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
                          capture_output=True, text=True, timeout=120, check=True)


def _keys(obj: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (lists: their first element)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(prefix + k)
            out |= _keys(v, prefix + k + ".")
    elif isinstance(obj, list) and obj:
        out |= _keys(obj[0], prefix + "[].")
    return out


# Fields Docker fills that describe machinery asyncdock does not have or that differ only because
# dockerd runs here with its bridge off (it then sets Config.NetworkDisabled, omitted when false)
# while asyncdock's containers have a network.
_ALLOWED_MISSING = ("GraphDriver.Data.", "State.Health", "NetworkSettings.Networks.", "Config.ExposedPorts",
                    "Config.NetworkDisabled")


def test_inspect_and_list_shapes_match(shared_daemon: Daemon, dockerd: str) -> None:
    socks = {"asyncdock": str(shared_daemon.socket), "dockerd": dockerd}
    shapes: dict[str, dict[str, set[str]]] = {}
    for label, sock in socks.items():
        name = "vs-" + uuid.uuid4().hex[:8]
        docker(sock, "run", "-d", "--name", name, "busybox", "sleep", "60")
        try:
            inspect = json.loads(docker(sock, "container", "inspect", name).stdout)[0]
            listed = [c for c in json.loads(docker(sock, "ps", "-a", "--no-trunc", "--format", "{{json .}}").stdout
                                            .replace("}\n{", "},{").join("[]"))]
            image = json.loads(docker(sock, "image", "inspect", "busybox").stdout)[0]
            shapes[label] = {"inspect": _keys(inspect), "ps": _keys(listed[0]), "image": _keys(image)}
        finally:
            docker(sock, "rm", "-f", name)
    for kind in ("inspect", "ps", "image"):
        missing = {k for k in shapes["dockerd"][kind] - shapes["asyncdock"][kind]
                   if not k.startswith(_ALLOWED_MISSING)}
        assert not missing, f"{kind}: fields dockerd sends that asyncdock does not: {sorted(missing)}"


def test_python_client_gives_the_same_results_on_both(shared_daemon: Daemon, dockerd: str) -> None:
    async def run(sock: str) -> tuple[int, bytes, str]:
        async with asyncdock.Client(f"unix://{sock}") as client:
            c = await client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2; exit 3"], detach=True)
            status = (await c.wait()).status_code
            logs = await c.logs()
            await c.remove()
            with pytest.raises(asyncdock.NotFound):
                await client.containers.get(c.id)
            return status, logs, (await client.version()).api_version

    ours = asyncio.run(run(str(shared_daemon.socket)))
    theirs = asyncio.run(run(dockerd))
    assert ours == theirs
