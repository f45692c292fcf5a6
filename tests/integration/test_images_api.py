"""The image API through a real asyncdock daemon, driven by the docker CLI 28 and docker-py:
pull (the progress stream on the wire), images, inspect, history, tag, rmi, prune, errors."""
from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.daemon import Daemon


def _stream(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\r\n")
    return [json.loads(line) for line in raw.split(b"\r\n") if line]


def test_pull_stream_and_list(daemon: Daemon, registry: Any) -> None:
    img = registry.images["busybox"]
    ref = registry.ref("busybox")
    repo = ref.rsplit(":", 1)[0]
    status, body = daemon.request("POST", f"/v1.41/images/create?fromImage={repo}&tag=latest",
                                  headers={"X-Registry-Auth": "e30="})
    assert status == 200
    msgs = _stream(body)
    assert msgs[0] == {"status": "Pulling from library/busybox", "id": "latest"}
    assert msgs[-2:] == [{"status": f"Digest: {img.digest}"},
                         {"status": f"Status: Downloaded newer image for {ref}"}]
    # Go's escaping of ">" in the pre-rendered bar.
    assert b"\\u003e" in body and b">" not in body.replace(b"\\u003e", b"")

    out = daemon.docker("pull", repo).stdout
    assert f"Status: Image is up to date for {ref}" in out

    status, body = daemon.request("GET", "/v1.41/images/json")
    assert status == 200
    [summary] = [s for s in json.loads(body) if s["Id"] == img.tag().config_digest]
    assert list(summary) == ["Containers", "Created", "Id", "Labels", "ParentId", "RepoDigests", "RepoTags",
                             "SharedSize", "Size", "VirtualSize"]
    assert summary["Containers"] == -1 and summary["SharedSize"] == -1 and summary["ParentId"] == ""
    assert summary["RepoTags"] == [ref]
    assert summary["RepoDigests"] == [f"{repo}@{img.digest}"]
    assert summary["Size"] == summary["VirtualSize"] > 1_000_000
    assert summary["Created"] == 1704067200

    lines = daemon.docker("images", "--digests").stdout.splitlines()
    assert any(img.digest in line and repo in line for line in lines)


def test_inspect_history_tag_rmi(daemon: Daemon, registry: Any) -> None:
    ref = registry.ref("configured")
    daemon.docker("pull", ref)
    # at 1.41, the shape dockerd 20.10 sent (Container and ContainerConfig went at 1.45, VirtualSize at 1.44)
    info = json.loads(daemon.docker("image", "inspect", ref, env={"DOCKER_API_VERSION": "1.41"}).stdout)[0]
    assert list(info) == ["Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Container",
                          "ContainerConfig", "DockerVersion", "Author", "Config", "Architecture", "Os", "Size",
                          "VirtualSize", "GraphDriver", "RootFS", "Metadata"]
    cfg = info["Config"]
    assert cfg["User"] == "app" and cfg["WorkingDir"] == "/app" and cfg["StopSignal"] == "SIGINT"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9999/udp": {}}
    assert cfg["Healthcheck"]["Test"][0] == "CMD-SHELL" and cfg["Volumes"] == {"/data": {}}
    assert info["ContainerConfig"]["Env"] is None and info["ContainerConfig"]["Cmd"] is None
    assert info["GraphDriver"]["Name"] == "overlay2"
    assert info["GraphDriver"]["Data"]["UpperDir"].endswith("/fs")
    assert info["RootFS"]["Type"] == "layers" and len(info["RootFS"]["Layers"]) >= 1
    assert info["Metadata"] == {"LastTagTime": "0001-01-01T00:00:00Z"}
    assert info["Created"] == "2024-01-01T00:00:00Z"

    hist = json.loads(daemon.request("GET", f"/v1.41/images/{ref}/history")[1])
    assert list(hist[0]) == ["Comment", "Created", "CreatedBy", "Id", "Size", "Tags"]
    assert hist[0]["Id"] == info["Id"] and hist[0]["Tags"] == [ref]
    assert all(h["Id"] == "<missing>" for h in hist[1:])

    daemon.docker("tag", ref, "mine/configured:v1")
    tagged = json.loads(daemon.docker("image", "inspect", "mine/configured:v1").stdout)[0]
    assert tagged["Id"] == info["Id"] and "mine/configured:v1" in tagged["RepoTags"]
    assert tagged["Metadata"]["LastTagTime"] != "0001-01-01T00:00:00Z"

    # Several tags: rmi of one only untags.
    out = daemon.docker("rmi", "mine/configured:v1").stdout
    assert out.strip() == "Untagged: mine/configured:v1"
    out = daemon.docker("rmi", ref).stdout.splitlines()
    assert out[0] == f"Untagged: {ref}"
    assert out[1].startswith(f"Untagged: {ref.rsplit(':', 1)[0]}@sha256:")
    assert f"Deleted: {info['Id']}" in out
    assert len([line for line in out if line.startswith("Deleted: ")]) == 1 + len(info["RootFS"]["Layers"])


def test_errors(daemon: Daemon, registry: Any) -> None:
    status, body = daemon.request("POST", f"/v1.41/images/create?fromImage={registry.host}/library/nosuch&tag=v9")
    assert status == 404
    assert json.loads(body) == {"message": f"manifest for {registry.host}/library/nosuch:v9 not found: "
                                           "manifest unknown: manifest unknown"}
    assert daemon.request("GET", "/v1.41/images/nosuch/json") == (
        404, b'{"message":"no such image: nosuch: No such image: nosuch:latest"}\n')
    assert daemon.request("DELETE", "/v1.41/images/nosuch") == (404, b'{"message":"No such image: nosuch:latest"}\n')
    status, body = daemon.request("POST", "/v1.41/images/create?fromSrc=-")  # no tar at all
    assert status == 400 and b"invalid tar" in body
    assert daemon.request("POST", "/v1.41/images/prune?filters=" + '{"dangling":{"true":true}}') == (
        200, b'{"ImagesDeleted":null,"SpaceReclaimed":0}\n')


def test_docker_py_pull_and_remove(daemon: Daemon, registry: Any) -> None:
    client = daemon.client()
    repo = registry.ref("layers").rsplit(":", 1)[0]
    image = client.images.pull(repo, tag="latest")
    assert image.id == registry.images["layers"].tag().config_digest
    assert f"{repo}:latest" in image.tags
    client.images.remove(f"{repo}:latest")
    with pytest.raises(Exception):
        client.images.get(f"{repo}:latest")
