"""docker-py at its newest release, end to end at the API versions clients pin: 1.54 (today's
newest), 1.41 (Docker 20.10's) and docker-py's own default (it asks the server: "auto"). Each runs,
follows the logs, execs, inspects, lists and removes a container; and a create request's
StartInterval (API 1.44) is kept at 1.54 and dropped at 1.41, as moby's router does."""
from __future__ import annotations

import json
import uuid
from typing import Any

import docker
import pytest

from tests.support.daemon import Daemon

S = 1_000_000_000


@pytest.mark.parametrize(("version", "expected"), [("1.54", "1.54"), ("1.41", "1.41"), (None, "1.54")],
                         ids=["1.54", "1.41", "default"])
def test_docker_py_end_to_end(d: Daemon, version: str | None, expected: str) -> None:
    client = d.client(version=version) if version is not None else d.client()
    assert client.api.api_version == expected
    assert client.version()["ApiVersion"] == "1.54"
    assert client.ping() is True
    name = "dpy-" + uuid.uuid4().hex[:8]
    c = client.containers.run("busybox", ["sh", "-c", "echo hello from run; exec sleep 120"], detach=True,
                              name=name, labels={"suite": name})
    try:
        # the first line of the followed logs: the container is running its command
        stream = c.logs(stream=True, follow=True)
        assert next(stream) == b"hello from run\n"
        stream.close()

        result = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
        assert result.exit_code == 3
        assert result.output == (b"out\n", b"err\n")

        c.reload()
        assert c.status == "running" and c.name == name
        attrs: dict[str, Any] = c.attrs
        assert attrs["Config"]["Labels"] == {"suite": name}
        assert attrs["State"]["Running"] is True and attrs["State"]["Pid"] > 0
        # 1.52 took away the legacy top-level endpoint fields of NetworkSettings
        assert ("IPAddress" in attrs["NetworkSettings"]) == (expected == "1.41")
        assert attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]

        listed = client.containers.list(filters={"label": f"suite={name}"})
        assert [x.id for x in listed] == [c.id]
        images = client.images.list(name="busybox")
        assert images and any("busybox:latest" in t for i in images for t in i.tags)
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(name)
    assert client.containers.list(all=True, filters={"label": f"suite={name}"}) == []


def _create(d: Daemon, version: str, name: str) -> None:
    body = {"Image": "busybox", "Cmd": ["true"],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30 * S, "StartPeriod": 10 * S,
                            "StartInterval": 2 * S}}
    status, out = d.request("POST", f"/v{version}/containers/create?name={name}", body)
    assert status == 201, out


def test_start_interval_is_kept_from_1_44_on_and_dropped_for_older_clients(d: Daemon) -> None:
    names = {v: f"si{v.replace('.', '')}-{uuid.uuid4().hex[:8]}" for v in ("1.41", "1.43", "1.44", "1.54")}
    try:
        for version, name in names.items():
            _create(d, version, name)
        for version, name in names.items():
            status, out = d.request("GET", f"/v1.54/containers/{name}/json")
            assert status == 200
            hc = json.loads(out)["Config"]["Healthcheck"]
            assert hc.get("StartInterval") == (2 * S if version >= "1.44" else None), version
            assert hc["StartPeriod"] == 10 * S and hc["Interval"] == 30 * S
    finally:
        for name in names.values():
            d.request("DELETE", f"/containers/{name}?force=1")


def test_a_start_interval_under_a_millisecond_is_refused(d: Daemon) -> None:
    body = {"Image": "busybox", "Cmd": ["true"],
            "Healthcheck": {"Test": ["CMD", "true"], "StartPeriod": S, "StartInterval": 999_999}}
    status, out = d.request("POST", "/v1.54/containers/create", body)
    assert (status, json.loads(out)) == (400, {"message": "StartInterval in Healthcheck cannot be less than 1ms"})
