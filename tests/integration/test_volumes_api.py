"""Volumes through the docker CLI and docker-py: create/ls/inspect/rm/prune with filters,
Docker's errors, events, data surviving a daemon restart; and the VolumeManager's container
path in-process (prepare_mounts with copy-up, in-use 409, anonymous volumes removed with rm -v)."""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import docker
import pytest

from asyncdock.base import errors
from asyncdock.events import EventBus
from asyncdock.volumes.manager import VolumeManager
from tests.support.daemon import Daemon


def _name() -> str:
    return "v" + uuid.uuid4().hex[:10]


def test_volume_crud_cli(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = _name()
    assert d.docker("volume", "create", "--label", "k=v", name).stdout.strip() == name
    try:
        info = json.loads(d.docker("volume", "inspect", name).stdout)[0]
        assert info["Name"] == name and info["Driver"] == "local" and info["Scope"] == "local"
        assert info["Labels"] == {"k": "v"} and info["Options"] == {}
        assert info["Mountpoint"] == str(d.data_root / "volumes" / name / "_data")
        assert Path(info["Mountpoint"]).is_dir()
        assert info["CreatedAt"].endswith("Z")
        ls = d.docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.splitlines()
        assert f"local {name}" in ls
        assert d.docker("volume", "ls", "-q", "--filter", "label=k=v", "--filter", f"name={name}").stdout.split() == [name]
        assert name in d.docker("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
        # create of an existing name answers the volume
        assert d.docker("volume", "create", name).stdout.strip() == name
    finally:
        d.docker("volume", "rm", name)
    res = d.docker("volume", "inspect", name, check=False)
    assert res.returncode == 1
    status, body = d.request("GET", "/v1.41/volumes/nosuch")
    assert status == 404 and json.loads(body) == {"message": "get nosuch: no such volume"}
    res = d.docker("volume", "create", "bad/name", check=False)
    assert res.returncode == 1 and "includes invalid characters for a local volume name" in res.stderr


def test_volume_docker_py_and_prune(shared_daemon: Daemon) -> None:
    client = shared_daemon.client()
    lab = _name()
    vols = [client.volumes.create(_name(), labels={"prune": lab}) for _ in range(2)]
    assert {v.name for v in client.volumes.list(filters={"label": f"prune={lab}"})} == {v.name for v in vols}
    res = client.volumes.prune(filters={"label": f"prune={lab}"})
    assert sorted(res["VolumesDeleted"]) == sorted(v.name for v in vols)
    assert res["SpaceReclaimed"] >= 0
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(vols[0].name)


def test_volume_events(shared_daemon: Daemon) -> None:
    d = shared_daemon
    name = _name()
    since = d.docker("system", "info", "--format", "{{.SystemTime}}").stdout.strip()
    d.docker("volume", "create", name)
    d.docker("volume", "rm", name)
    until = d.docker("system", "info", "--format", "{{.SystemTime}}").stdout.strip()
    out = d.docker("events", "--since", since, "--until", until, "--filter", "type=volume",
                   "--format", "{{json .}}").stdout
    mine = [(e["Action"], e["Actor"]["Attributes"]) for e in map(json.loads, out.splitlines())
            if e["Actor"]["ID"] == name]
    assert mine == [("create", {"driver": "local"}), ("destroy", {"driver": "local"})]


def test_volume_data_survives_restart(daemon: Daemon) -> None:
    name = _name()
    daemon.docker("volume", "create", name)
    mp = Path(json.loads(daemon.docker("volume", "inspect", name).stdout)[0]["Mountpoint"])
    (mp / "keep.txt").write_text("kept\n")
    assert daemon.stop() == 0
    daemon.start()
    info = json.loads(daemon.docker("volume", "inspect", name).stdout)[0]
    assert (Path(info["Mountpoint"]) / "keep.txt").read_text() == "kept\n"
    daemon.docker("volume", "rm", name)
    assert not mp.exists()


def test_container_path_in_process(scratch: Path) -> None:
    async def main() -> None:
        root = scratch
        bus = EventBus()
        vm = VolumeManager(bus=bus, data_root=root / "data", exec_root=root / "exec")
        await vm.start()
        # an image rootfs with content at /etc/app (copy-up source) and a VOLUME /cache
        rootfs = root / "rootfs"
        (rootfs / "etc/app").mkdir(parents=True)
        (rootfs / "etc/app/conf").write_text("image content\n")
        host_dir = root / "hostsrc"
        host_dir.mkdir()
        cid = "c" * 64
        mps = await vm.prepare_mounts(cid, binds=["data:/etc/app", f"{host_dir}:/src:ro"],
                                      image_volumes={"/cache": {}}, rootfs_view=rootfs)
        by = {m.destination: m for m in mps}
        assert by["/etc/app"].type == "volume" and by["/etc/app"].name == "data" and by["/etc/app"].mode == "z"
        assert (Path(by["/etc/app"].source) / "conf").read_text() == "image content\n"
        assert by["/src"].type == "bind" and not by["/src"].rw and by["/src"].propagation == "rprivate"
        anon = by["/cache"].name
        assert anon and len(anon) == 64 and vm.get(anon).anonymous
        with pytest.raises(errors.Conflict, match=rf"remove data: volume is in use - \[{cid}\]"):
            await vm.remove("data")
        binds = await vm.spec_binds(cid, mps)
        assert {b.destination for b in binds} == {"/etc/app", "/src", "/cache"}
        await vm.release_mounts(cid, mps)
        # a second container with --volumes-from, read-only
        cid2 = "e" * 64
        mps2 = await vm.prepare_mounts(cid2, volumes_from=[(mps, "ro")])
        assert {m.destination: m.rw for m in mps2} == {"/etc/app": False, "/src": False, "/cache": False}
        await vm.container_removed(cid2, mps2, remove_anonymous=True)
        await vm.container_removed(cid, mps, remove_anonymous=True)
        assert anon not in vm.store.volumes  # rm -v: the anonymous one went
        assert vm.get("data").users == []
        await vm.remove("data")
        actions = [(e.message.type, e.message.action) for e in bus.history()]
        assert ("volume", "mount") in actions and ("volume", "unmount") in actions
        await vm.shutdown()

    asyncio.run(asyncio.wait_for(main(), 60))
