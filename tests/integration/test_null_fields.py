"""Every optional member of a request body may be sent as null, as Go's decoder takes it: the
field stays at its zero value, as if absent. docker-py sends the unset fields of a health check
as null; other clients send whole configs that way."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.daemon import Daemon

SPEC = Path("/work/shared/reference/docker-api-transcripts/spec/engine-api-v1.54-swagger.yaml")
# what differs between any two containers, whatever their bodies
VOLATILE = {"Id", "Name", "Created", "State", "ResolvConfPath", "HostnamePath", "HostsPath", "LogPath",
            "NetworkSettings", "Hostname", "GraphDriver", "Mounts", "MountLabel", "ProcessLabel"}


def _definitions() -> dict[str, Any]:
    defs: dict[str, Any] = yaml.safe_load(SPEC.read_text())["definitions"]
    return defs


def _props(defs: dict[str, Any], name: str) -> list[str]:
    d = defs[name]
    out = list(d.get("properties", {}))
    for part in d.get("allOf", []):
        if "$ref" in part:
            out += _props(defs, part["$ref"].rsplit("/", 1)[1])
        out += list(part.get("properties", {}))
    return out


def _all_null(names: list[str]) -> dict[str, None]:
    return dict.fromkeys(names)


@pytest.fixture
def names(shared_daemon: Daemon) -> Iterator[list[str]]:
    shared_daemon.docker("pull", "-q", "busybox")
    made: list[str] = []
    yield made
    for n in made:
        shared_daemon.docker("rm", "-f", n, check=False)


def _create(daemon: Daemon, names: list[str], body: dict[str, Any]) -> dict[str, Any]:
    n = f"null-{uuid.uuid4().hex[:8]}"
    names.append(n)
    status, out = daemon.request("POST", f"/containers/create?name={n}", body)
    assert status == 201, out
    status, out = daemon.request("GET", f"/containers/{n}/json")
    assert status == 200, out
    info: dict[str, Any] = json.loads(out)
    del info["Config"]["Hostname"]  # the container's short id
    return {k: v for k, v in info.items() if k not in VOLATILE}


def test_create_with_every_field_null_is_the_defaults(shared_daemon: Daemon, names: list[str]) -> None:
    defs = _definitions()
    body: dict[str, Any] = _all_null(_props(defs, "ContainerConfig"))
    body["Image"] = "busybox"
    body["Hostname"] = body["Domainname"] = None
    body["HostConfig"] = _all_null(_props(defs, "HostConfig"))
    body["HostConfig"]["LogConfig"] = {"Type": None, "Config": None}
    body["HostConfig"]["RestartPolicy"] = {"Name": None, "MaximumRetryCount": None}
    body["Healthcheck"] = _all_null(_props(defs, "HealthConfig"))
    body["NetworkingConfig"] = {"EndpointsConfig": None}
    assert len(body) > 20 and len(body["HostConfig"]) > 60
    got = _create(shared_daemon, names, body)
    plain = _create(shared_daemon, names, {"Image": "busybox", "Healthcheck": {}})
    assert got == plain


def test_docker_py_healthcheck_with_nulls(shared_daemon: Daemon, names: list[str]) -> None:
    n = f"null-{uuid.uuid4().hex[:8]}"
    names.append(n)
    c = shared_daemon.client().containers.create(
        "busybox", ["sleep", "1"], name=n, healthcheck={"test": ["CMD", "true"], "interval": None,
                                                       "timeout": None, "retries": None, "start_period": None})
    assert c.attrs["Config"]["Healthcheck"] == {"Test": ["CMD", "true"]}


def test_other_bodies_with_null_members(shared_daemon: Daemon, names: list[str]) -> None:
    n = f"null-{uuid.uuid4().hex[:8]}"
    names.append(n)
    shared_daemon.docker("run", "-d", "--name", n, "busybox", "sleep", "1000")
    status, out = shared_daemon.request("POST", f"/containers/{n}/exec", {
        "Cmd": ["echo", "hi"], "User": None, "Privileged": None, "Tty": None, "AttachStdin": None,
        "AttachStdout": None, "AttachStderr": None, "Detach": None, "DetachKeys": None, "Env": None,
        "WorkingDir": None, "ConsoleSize": None})
    assert status == 201, out
    status, out = shared_daemon.request("POST", f"/exec/{json.loads(out)['Id']}/start",
                                        {"Detach": True, "Tty": None, "ConsoleSize": None})
    assert status == 200, out
    status, out = shared_daemon.request("POST", f"/containers/{n}/update", {
        "Memory": None, "CpuShares": None, "RestartPolicy": None, "PidsLimit": None, "BlkioWeight": None})
    assert status == 200, out
    net = f"nn-{uuid.uuid4().hex[:8]}"
    status, out = shared_daemon.request("POST", "/networks/create", {
        "Name": net, "Driver": None, "Internal": None, "Attachable": None, "Ingress": None, "EnableIPv6": None,
        "IPAM": {"Driver": None, "Config": None, "Options": None}, "Options": None, "Labels": None})
    assert status == 201, out
    try:
        status, out = shared_daemon.request("GET", f"/networks/{net}")
        info = json.loads(out)
        assert (info["Driver"], info["Internal"], info["Labels"]) == ("bridge", False, {})
        status, out = shared_daemon.request("POST", f"/networks/{net}/connect",
                                            {"Container": n, "EndpointConfig": None})
        assert status == 200, out
    finally:
        shared_daemon.docker("rm", "-f", n, check=False)
        shared_daemon.request("DELETE", f"/networks/{net}")
    vol = f"nv-{uuid.uuid4().hex[:8]}"
    status, out = shared_daemon.request("POST", "/volumes/create", {"Name": vol, "Driver": None,
                                                                    "DriverOpts": None, "Labels": None})
    assert status == 201, out
    assert json.loads(out)["Driver"] == "local"
    shared_daemon.request("DELETE", f"/volumes/{vol}")
