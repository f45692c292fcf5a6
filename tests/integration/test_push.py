"""`docker push` through the real docker CLI 28 and docker-py against real registries:
login, tag, push, rmi, pull, run with the same image ID; a second push sends nothing; another
repository mounts; errors as dockerd words them; docker-py's progress shape; the push event."""
from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.support.daemon import Daemon


def _login(daemon: Daemon, reg: Any) -> None:
    out = daemon.docker("login", "-u", reg.username, "--password-stdin", reg.host, input=reg.password + "\n")
    assert "Login Succeeded" in out.stdout


def _image_id(daemon: Daemon, ref: str) -> str:
    return str(daemon.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip())


def _layer_count(daemon: Daemon, ref: str) -> int:
    return int(daemon.docker("image", "inspect", "-f", "{{len .RootFS.Layers}}", ref).stdout.strip())


def test_cli_login_push_rmi_pull_run(daemon: Daemon, auth_registry: Any, registry: Any) -> None:
    src = registry.ref("layers")
    daemon.docker("pull", src)
    host = auth_registry.host
    ref = f"{host}/app:1"
    daemon.docker("tag", src, ref)
    image_id = _image_id(daemon, ref)
    layers = _layer_count(daemon, ref)

    denied = daemon.docker("push", ref, check=False)
    assert denied.returncode != 0
    assert "no basic auth credentials" in denied.stderr

    _login(daemon, auth_registry)
    t0 = int(time.time())
    out = daemon.docker("push", ref).stdout
    assert out.splitlines()[0] == f"The push refers to repository [{host}/app]"
    assert out.count(": Pushed") == layers, out
    m = re.search(r"^1: digest: (sha256:[0-9a-f]{64}) size: (\d+)$", out, re.M)
    assert m is not None, out
    digest = m.group(1)
    assert f"{host}/app@{digest}" in daemon.docker("image", "inspect", "-f", "{{json .RepoDigests}}",
                                                     ref).stdout

    again = daemon.docker("push", ref).stdout
    assert again.count(": Layer already exists") == layers, again
    assert f"1: digest: {digest} size: {m.group(2)}" in again

    # another repository of the same registry: mounted, not sent
    daemon.docker("tag", src, f"{host}/team/app2:x")
    mounted = daemon.docker("push", f"{host}/team/app2:x").stdout
    assert mounted.count(": Mounted from app") == layers, mounted

    # the events of the pushes, dockerd's shape
    c = daemon.client()
    evs = list(c.events(since=t0, until=int(time.time()) + 1, decode=True,
                        filters={"type": "image", "event": "push"}))
    assert [e["Actor"]["ID"] for e in evs] == [ref, ref, f"{host}/team/app2:x"]
    assert evs[0]["Actor"]["Attributes"]["name"] == f"{host}/app"

    daemon.docker("rmi", ref, f"{host}/team/app2:x", src)
    assert daemon.docker("image", "inspect", image_id, check=False).returncode != 0
    pulled = daemon.docker("pull", ref).stdout
    assert f"Digest: {digest}" in pulled
    assert _image_id(daemon, ref) == image_id
    assert daemon.docker("run", "--rm", ref, "echo", "round trip").stdout == "round trip\n"


def test_cli_push_errors(daemon: Daemon, token_registry: Any, registry: Any) -> None:
    host = token_registry.host
    missing = daemon.docker("push", f"{host}/nothing:1", check=False)
    assert missing.returncode != 0
    assert f"An image does not exist locally with the tag: {host}/nothing" in missing.stderr
    # in the stream, after the line naming the repository, as dockerd answers it
    status, body = daemon.request("POST", f"/v1.54/images/{host}/nothing/push?tag=1",
                                  headers={"X-Registry-Auth": "e30="})
    assert status == 200
    assert [json.loads(line) for line in body.splitlines()] == [
        {"status": f"The push refers to repository [{host}/nothing]"},
        {"errorDetail": {"message": f"An image does not exist locally with the tag: {host}/nothing"},
         "error": f"An image does not exist locally with the tag: {host}/nothing"}]
    bad, _ = daemon.request("POST", "/v1.54/images/UPPER/push?tag=1", headers={"X-Registry-Auth": "e30="})
    assert bad == 400
    daemon.docker("pull", registry.ref("busybox"))
    daemon.docker("tag", registry.ref("busybox"), f"{host}/alice/bb:1")
    anonymous = daemon.docker("push", f"{host}/alice/bb:1", check=False)
    assert anonymous.returncode != 0
    assert "unauthorized: authentication required" in anonymous.stderr
    _login(daemon, token_registry)
    assert "1: digest: sha256:" in daemon.docker("push", f"{host}/alice/bb:1").stdout
    # the login stored the token server's refresh token, not the password
    cfg = json.loads((daemon.docker_config / "config.json").read_text())
    assert cfg["auths"][host].get("identitytoken")


def test_cli_push_all_tags(daemon: Daemon, registry: Any) -> None:
    from tests.support.registry import Registry

    with Registry(name="push-all") as target:
        daemon.docker("pull", registry.ref("busybox"))
        for t in ("one", "two"):
            daemon.docker("tag", registry.ref("busybox"), f"{target.host}/multi:{t}")
        out = daemon.docker("push", "--all-tags", f"{target.host}/multi").stdout
        assert re.search(r"^one: digest: sha256:", out, re.M) and re.search(r"^two: digest: sha256:", out, re.M)


def test_dockerpy_push_progress_shape(daemon: Daemon, registry: Any) -> None:
    from tests.support.registry import Registry

    with Registry(name="push-py") as target:
        c = daemon.client()
        c.images.pull(registry.ref("layers"))
        repo = f"{target.host}/py/app"
        c.images.get(registry.ref("layers")).tag(repo, "v1")
        msgs = list(c.images.push(repo, "v1", stream=True, decode=True))
        assert msgs[0] == {"status": f"The push refers to repository [{target.host}/py/app]"}
        preparing = [x for x in msgs if x.get("status") == "Preparing"]
        assert preparing and all(x["progressDetail"] == {} and len(x["id"]) == 12 for x in preparing)
        pushing = [x for x in msgs if x.get("status") == "Pushing"]
        assert pushing
        for x in pushing:
            assert set(x) == {"status", "progressDetail", "progress", "id"}
            assert 0 < x["progressDetail"]["current"] <= x["progressDetail"]["total"]
        assert {x["id"] for x in msgs if x.get("status") == "Pushed"} == {x["id"] for x in preparing}
        assert set(msgs[-1]) == {"progressDetail", "aux"}
        assert set(msgs[-1]["aux"]) == {"Tag", "Digest", "Size"} and msgs[-1]["aux"]["Tag"] == "v1"
        assert not any("error" in x for x in msgs)


def test_python_client_push(daemon: Daemon, auth_registry: Any, registry: Any) -> None:
    import asyncio

    import pytest

    import asyncdock

    async def go() -> None:
        async with asyncdock.Client(daemon.host) as client:
            async for _ in client.images.pull(registry.ref("busybox")):
                pass
            name = f"{auth_registry.host}/client/bb"
            await client.images.tag(registry.ref("busybox"), name, "c1")
            with pytest.raises(asyncdock.APIError) as e:
                async for _ in client.images.push(name, "c1"):
                    pass
            assert "no basic auth credentials" in str(e.value)
            msgs = [msg async for msg in client.images.push(
                name, "c1", auth={"username": auth_registry.username, "password": auth_registry.password})]
            assert msgs[0].status == f"The push refers to repository [{auth_registry.host}/client/bb]"
            assert msgs[-1].aux is not None and msgs[-1].aux["Tag"] == "c1"
            assert any(m.status == "Pushed" for m in msgs)

    asyncio.run(go())
