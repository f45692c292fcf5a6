"""`docker commit` through a real daemon: the docker CLI 28 and docker-py. A commit's layer is
the container's changes (files added, deleted, directories replaced), its config the container's
with `-c` changes on top, its history the parent's plus one entry."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.daemon import Daemon


def inspect(d: Daemon, name: str, version: str = "1.41") -> dict[str, Any]:
    status, body = d.request("GET", f"/v{version}/images/{name}/json")
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def actions(d: Daemon, container: str) -> list[str]:
    """The container's event actions so far (the journal, read back with --since/--until)."""
    until = f"{time.time() + 0.01:.3f}"
    out = d.docker("events", "--since", "1", "--until", until, "--filter", f"container={container}",
                   "--format", "{{.Action}}").stdout
    return out.split()


def test_commit_stopped_container_then_run_the_image(daemon: Daemon) -> None:
    d = daemon
    d.docker("run", "--name", "c0", "busybox", "sh", "-c",
             "mkdir -p /d /gone && echo old > /d/old && echo x > /gone/f && echo k > /keep")
    d.docker("commit", "c0", "step:1")
    d.docker("run", "--name", "c1", "step:1", "sh", "-c",
             "rm -rf /d /gone && mkdir /d && echo new > /d/new && echo hi > /added && rm /keep")
    out = d.docker("commit", "-c", 'CMD ["sh"]', "-m", "msg", "-a", "me <me@x>", "c1", "mine:snap").stdout
    image_id = out.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    run = d.docker("run", "--rm", "mine:snap", "sh", "-c",
                   "ls /d; cat /added; test -e /gone && echo gone-is-back; test -e /keep && echo keep-is-back; true")
    assert run.stdout.split() == ["new", "hi"]  # /d replaced whole, deletions stay deleted
    doc = inspect(d, "mine:snap")
    parent = inspect(d, "step:1")
    c1 = json.loads(d.docker("inspect", "c1").stdout)[0]
    assert doc["Id"] == image_id
    assert doc["Parent"] == parent["Id"]
    assert doc["Comment"] == "msg" and doc["Author"] == "me <me@x>"
    assert doc["Config"]["Cmd"] == ["sh"]
    assert doc["Container"] == c1["Id"]
    assert doc["ContainerConfig"]["Cmd"] == c1["Config"]["Cmd"]
    assert doc["RootFS"]["Layers"][:-1] == parent["RootFS"]["Layers"]
    # 1.45 dropped Container and ContainerConfig from inspect
    new = inspect(d, "mine:snap", "1.45")
    assert "Container" not in new and "ContainerConfig" not in new
    hist = d.docker("history", "--no-trunc", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Comment}}", "mine:snap")
    rows = [r.split("|") for r in hist.stdout.splitlines()]
    assert rows[0] == [image_id, "sh -c rm -rf /d /gone && mkdir /d && echo new > /d/new && echo hi > "
                                 "/added && rm /keep", "msg"]
    assert len(rows) == len(inspect(d, "busybox")["RootFS"]["Layers"]) + 2
    # History walks the parent links (moby's classic store): each local image names its top
    # entry; below the pulled base image it has no parent, so its older layers are <missing>.
    assert rows[1][0] == parent["Id"]
    assert rows[2][0] == inspect(d, "busybox")["Id"]
    assert all(r[0] == "<missing>" for r in rows[3:])
    d.docker("rm", "c0", "c1")
    d.docker("rmi", "mine:snap", "step:1")


def test_commit_running_container_pauses_and_resumes(daemon: Daemon) -> None:
    d = daemon
    d.docker("run", "-d", "--name", "r1", "busybox", "sleep", "1000")
    d.docker("exec", "r1", "sh", "-c", "echo live > /live")
    d.docker("commit", "r1", "live:1")
    assert d.docker("inspect", "-f", "{{.State.Status}}", "r1").stdout.strip() == "running"
    assert d.docker("run", "--rm", "live:1", "cat", "/live").stdout == "live\n"
    # the container's events: paused for the commit, then commit
    ev = actions(d, "r1")
    assert ev[-3:] == ["pause", "unpause", "commit"]
    # pause=false leaves it running throughout
    d.docker("commit", "--pause=false", "r1", "live:2")
    ev = actions(d, "r1")
    assert ev[-1] == "commit" and ev[-2] != "unpause"
    d.docker("rm", "-f", "r1")
    d.docker("rmi", "live:1", "live:2")


def test_commit_with_changes_and_nothing_changed(daemon: Daemon) -> None:
    d = daemon
    d.docker("create", "--name", "e1", "-e", "A=1", "busybox", "true")
    d.docker("commit", "-c", "ENV B=$A-x", "-c", "EXPOSE 8080", "-c", "LABEL l=v", "-c", "WORKDIR /w",
             "-c", "USER 1:2", "-c", "VOLUME /vol", "-c", "STOPSIGNAL SIGUSR1", "-c", "ENTRYPOINT [\"/bin/sh\"]",
             "e1", "changed:1")
    cfg = inspect(d, "changed:1")["Config"]
    assert "A=1" in cfg["Env"] and "B=1-x" in cfg["Env"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    assert cfg["Labels"] == {"l": "v"} and cfg["WorkingDir"] == "/w" and cfg["User"] == "1:2"
    assert cfg["Volumes"] == {"/vol": {}} and cfg["StopSignal"] == "SIGUSR1"
    assert cfg["Entrypoint"] == ["/bin/sh"]
    # a created container has changed nothing: no new layer, an empty_layer history entry
    base = inspect(d, "busybox")
    assert inspect(d, "changed:1")["RootFS"]["Layers"] == base["RootFS"]["Layers"]
    hist = json.loads(d.request("GET", "/v1.41/images/changed:1/history")[1])
    assert hist[0]["Size"] == 0
    d.docker("rm", "e1")
    d.docker("rmi", "changed:1")


def test_commit_errors(daemon: Daemon) -> None:
    d = daemon
    res = d.docker("commit", "nosuch", "x:1", check=False)
    assert res.returncode != 0 and "No such container: nosuch" in res.stderr
    d.docker("create", "--name", "b1", "busybox", "true")
    res = d.docker("commit", "-c", "RUN echo", "b1", "x:1", check=False)
    assert res.returncode != 0 and "RUN is not a valid change command" in res.stderr
    status, body = d.request("POST", "/v1.41/commit?container=b1&changes=FROM%20x")
    assert status == 400 and json.loads(body) == {"message": "FROM is not a valid change command"}
    status, body = d.request("POST", "/v1.41/commit?container=b1&repo=Bad:Name")
    assert status == 400 and "message" in json.loads(body)
    status, body = d.request("POST", "/v1.41/commit?container=b1&changes=STOPSIGNAL%20NOPE")
    assert status == 400 and json.loads(body) == {"message": "Invalid signal: NOPE"}
    for query, body_ in (("", {"Cmd": 5}), ("", b"[1]"), ("&changes=HEALTHCHECK%20--interval%3Dx%20CMD%20y", None),
                         ("&changes=EXPOSE%2099999", None), ("&changes=ENV", None), ("&changes=WORKDIR", None)):
        status, body = d.request("POST", f"/v1.41/commit?container=b1{query}", body=body_,
                                 headers={"Content-Type": "application/json"})
        assert status == 400 and list(json.loads(body)) == ["message"], (query, body)
    status, body = d.request("POST", "/v1.41/commit?container=nosuch")
    assert status == 404 and json.loads(body) == {"message": "No such container: nosuch"}
    assert "x" not in d.docker("images", "--format", "{{.Repository}}").stdout.split()
    d.docker("rm", "b1")


def test_docker_py_commit(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", ["sh", "-c", "echo py > /py"], detach=True)
    assert c.wait()["StatusCode"] == 0
    img = c.commit(repository="pyimg", tag="1", message="m", author="a", changes=["ENV X=1"],
                   conf={"Labels": {"from": "body"}})
    assert img.tags == ["pyimg:1"]
    assert "X=1" in img.attrs["Config"]["Env"] and img.attrs["Config"]["Labels"] == {"from": "body"}
    assert img.attrs["Comment"] == "m" and img.attrs["Author"] == "a"
    out = client.containers.run("pyimg:1", ["cat", "/py"], remove=True)
    assert out == b"py\n"
    c.remove()
    client.images.remove("pyimg:1")


@pytest.mark.parametrize("driver", ["copy"])
def test_commit_on_the_copy_snapshotter(daemon_factory: Any, driver: str) -> None:
    d = daemon_factory(config={"storage-driver": driver})
    d.docker("run", "--name", "k1", "busybox", "sh", "-c", "echo c > /c && rm /bin/ls && mkdir -p /n/m")
    d.docker("commit", "k1", "copied:1")
    run = d.docker("run", "--rm", "copied:1", "sh", "-c", "cat /c; test -e /bin/ls || echo no-ls; test -d /n/m && echo m")
    assert run.stdout.split() == ["c", "no-ls", "m"]
    # the layer holds the changes only (not the whole tree the copy snapshotter keeps)
    hist = json.loads(d.request("GET", "/v1.41/images/copied:1/history")[1])
    assert 0 < hist[0]["Size"] < 100
    d.docker("rm", "k1")
    d.docker("rmi", "copied:1")


def test_asyncdock_client_commit_and_import(daemon: Daemon) -> None:
    import asyncio

    import asyncdock

    async def main() -> None:
        async with asyncdock.Client(daemon.host) as client:
            c = await client.containers.run("busybox", ["sh", "-c", "echo ours > /ours"], detach=True)
            await c.wait()
            image_id = await c.commit("ourimg", "1", message="m", changes=["ENV Z=9"])
            doc = await client.images.inspect("ourimg:1")
            assert doc["Id"] == image_id and "Z=9" in doc["Config"]["Env"]
            tar = daemon.docker("export", c.id, text=False).stdout
            flat = await client.images.import_(tar, "ourflat", "1", changes=['CMD ["cat", "/ours"]'])
            assert (await client.images.inspect("ourflat:1"))["Id"] == flat
            out = await client.containers.run("ourflat:1", remove=True)
            assert out == b"ours\n"
            await c.remove()
            await client.images.remove("ourimg:1")
            await client.images.remove("ourflat:1")
    asyncio.run(main())
