"""API 1.44/1.45 mounts: `VolumeOptions.Subpath` (`--mount ...,volume-subpath=`) mounted through
a staging bind of the opened subpath that no symlink in the volume can lead out of
(asyncdock/volumes/safepath.py), and recursively read-only binds (`rro`) with
BindOptions.ReadOnlyNonRecursive / ReadOnlyForceRecursive, on crun and runc, through the docker
CLI and the raw API at /v1.45, /v1.44 and /v1.43."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdock.base import errors
from asyncdock.volumes import safepath
from tests.support.daemon import Daemon, mounts_under

BUSYBOX = "busybox"
RUNTIMES = ("crun", "runc")


def _name(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:10]


def _staging_mounts(d: Daemon) -> list[str]:
    return mounts_under([d.exec_root / "volume-subpaths"])


@pytest.fixture
def volume(shared_daemon: Daemon) -> Iterator[str]:
    """A volume holding sub/dir/f, a file, an in-volume symlink and symlinks out of it at the
    first, a middle and the last component of a subpath (all planted by a container)."""
    d = shared_daemon
    name = _name("sp")
    d.docker("volume", "create", name)
    d.docker("run", "--rm", "-v", f"{name}:/v", BUSYBOX, "sh", "-c",
             "mkdir -p /v/sub/dir /v/mid && echo hi > /v/sub/dir/f && echo file > /v/file && "
             "ln -s /etc /v/esc && ln -s ../sub /v/mid/inner && ln -s /etc /v/mid/out && "
             "ln -s /v/sub /v/abs")
    yield name
    d.docker("volume", "rm", "-f", name, check=False)


def _run(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return d.docker("run", "--rm", *args, check=False)


def test_subpath_through_the_cli(shared_daemon: Daemon, volume: str) -> None:
    d = shared_daemon
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=sub/dir", BUSYBOX, "cat", "/d/f")
    assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
    # only the subpath is there, not the rest of the volume
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=sub", BUSYBOX, "ls", "/d")
    assert r.stdout.split() == ["dir"], r.stderr
    # a symlink that stays inside the volume is followed (as moby), and a file is a subpath too
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=mid/inner/dir", BUSYBOX, "cat", "/d/f")
    assert r.stdout == "hi\n", r.stderr
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/etc/motd,volume-subpath=file", BUSYBOX, "cat", "/etc/motd")
    assert r.stdout == "file\n", r.stderr
    # writes go to the volume's subdirectory
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=sub/dir", BUSYBOX, "sh", "-c",
             "echo new > /d/g")
    assert r.returncode == 0, r.stderr
    r = _run(d, "-v", f"{volume}:/v", BUSYBOX, "cat", "/v/sub/dir/g")
    assert r.stdout == "new\n"
    assert _staging_mounts(d) == []


@pytest.mark.parametrize("subpath", ["esc", "esc/passwd", "mid/out", "mid/out/passwd"])
def test_subpath_symlink_out_of_the_volume_is_refused(shared_daemon: Daemon, volume: str, subpath: str) -> None:
    """A symlink to /etc as the first, a middle or the last component: the start fails with
    moby's text and nothing of /etc is mounted."""
    d = shared_daemon
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath={subpath}", BUSYBOX, "ls", "/d")
    assert r.returncode != 0
    assert "path concatenation escapes the base directory" in r.stderr
    assert f"subpath: {subpath}" in r.stderr
    assert "passwd" not in r.stdout
    assert _staging_mounts(d) == []


def test_subpath_absolute_symlink_back_into_the_volume(shared_daemon: Daemon, volume: str) -> None:
    """`abs` -> /v/sub: absolute on the host, it points at nothing of the volume (moby
    resolves symlinks with the host's rules too): not found, never the host's /v."""
    d = shared_daemon
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=abs", BUSYBOX, "ls", "/d")
    assert r.returncode != 0 and "cannot access path" in r.stderr


def test_subpath_errors(shared_daemon: Daemon, volume: str) -> None:
    d = shared_daemon
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/d,volume-subpath=nosuch/dir", BUSYBOX, "true")
    assert r.returncode != 0
    assert "cannot access path " in r.stderr and "no such file or directory" in r.stderr
    for bad in ("../../../../etc", "/etc", "sub/../../etc"):
        status, body = d.request("POST", "/v1.45/containers/create", {
            "Image": BUSYBOX, "Cmd": ["true"],
            "HostConfig": {"Mounts": [{"Type": "volume", "Source": volume, "Target": "/d",
                                       "VolumeOptions": {"Subpath": bad}}]}})
        assert status == 400, body
        assert json.loads(body) == {"message": 'invalid mount config for type "volume": '
                                               'subpath must be a relative path within the volume'}
    status, body = d.request("POST", "/v1.45/containers/create", {
        "Image": BUSYBOX, "Cmd": ["true"],
        "HostConfig": {"Mounts": [{"Type": "volume", "Target": "/d", "VolumeOptions": {"Subpath": "x"}}]}})
    assert status == 400 and "must not set Subpath when using anonymous volumes" in json.loads(body)["message"]
    assert _staging_mounts(d) == []


def _create(d: Daemon, version: str, body: dict[str, Any]) -> str:
    status, out = d.request("POST", f"/{version}/containers/create", body)
    assert status == 201, out
    return str(json.loads(out)["Id"])


def _start_wait(d: Daemon, version: str, cid: str) -> tuple[int, int]:
    """(start status, exit code)."""
    status, out = d.request("POST", f"/{version}/containers/{cid}/start")
    if status != 204:
        return status, -1
    status, out = d.request("POST", f"/{version}/containers/{cid}/wait", timeout=60)
    assert status == 200, out
    return 204, int(json.loads(out)["StatusCode"])


def _remove(d: Daemon, cid: str) -> None:
    d.request("DELETE", f"/containers/{cid}?force=1")


def test_subpath_raw_api_versions_and_inspect(shared_daemon: Daemon, volume: str) -> None:
    d = shared_daemon
    mount = {"Type": "volume", "Source": volume, "Target": "/d", "VolumeOptions": {"Subpath": "sub/dir"}}
    status, body = d.request("POST", "/v1.44/containers/create",
                             {"Image": BUSYBOX, "Cmd": ["true"], "HostConfig": {"Mounts": [mount]}})
    assert status == 400 and json.loads(body) == {"message": "VolumeOptions.Subpath needs API v1.45 or newer"}
    cid = _create(d, "v1.45", {"Image": BUSYBOX, "Cmd": ["sleep", "600"], "HostConfig": {"Mounts": [mount]}})
    try:
        status, _ = d.request("POST", f"/v1.45/containers/{cid}/start")
        assert status == 204
        # running: the runtime holds its bind; the staging mount is gone already
        assert _staging_mounts(d) == []
        r = d.docker("exec", cid, "cat", "/d/f")
        assert r.stdout == "hi\n"
        info = json.loads(d.request("GET", f"/v1.45/containers/{cid}/json")[1])
        assert info["HostConfig"]["Mounts"][0]["VolumeOptions"] == {"Subpath": "sub/dir"}
        (m,) = info["Mounts"]
        assert m["Name"] == volume and m["Destination"] == "/d" and m["Type"] == "volume"
        assert not any(k.startswith("_") for k in m)
        listed = json.loads(d.request("GET", f"/v1.45/containers/json?filters=%7B%22id%22%3A%5B%22{cid}%22%5D%7D")[1])
        assert not any(k.startswith("_") for k in listed[0]["Mounts"][0])
        # a restart stages it again (and releases it again)
        status, _ = d.request("POST", f"/v1.45/containers/{cid}/restart?t=0")
        assert status == 204
        assert d.docker("exec", cid, "cat", "/d/f").stdout == "hi\n"
        assert _staging_mounts(d) == []
        # --volumes-from carries the subpath
        r = _run(d, "--volumes-from", cid, BUSYBOX, "ls", "/d")
        assert r.stdout.split() == ["f"], r.stderr
    finally:
        _remove(d, cid)
    assert _staging_mounts(d) == []


def test_subpath_copy_up_into_the_subdirectory(shared_daemon: Daemon, volume: str) -> None:
    """The image's content at the target is copied into an empty subpath (moby's populateVolume)."""
    d = shared_daemon
    d.docker("run", "--rm", "-v", f"{volume}:/v", BUSYBOX, "mkdir", "/v/bin")
    r = _run(d, "--mount", f"type=volume,src={volume},dst=/bin,volume-subpath=bin", BUSYBOX, "ls", "/bin/busybox")
    assert r.returncode == 0 and r.stdout.strip() == "/bin/busybox", r.stderr
    r = _run(d, "-v", f"{volume}:/v", BUSYBOX, "ls", "/v")
    assert "busybox" not in r.stdout.split()  # the volume's root was left alone
    assert _staging_mounts(d) == []


def test_safepath_refuses_a_symlink_swapped_in_after_the_check(tmp_path: Path) -> None:
    """The race moby's safepath closes: a component checked as a directory that is a symlink
    when opened. The open (second step) fails instead of following it."""
    base = tmp_path / "vol"
    (base / "a").mkdir(parents=True)
    real_base, rel = safepath._evaluate(str(base), "a")
    assert rel == "a"
    (base / "a").rmdir()
    (base / "a").symlink_to("/etc")  # swapped between resolution and open
    with pytest.raises(errors.NotFound, match="cannot access path .*too many levels of symbolic links"):
        safepath._open_beneath(real_base, rel, "a")
    (base / "a").unlink()
    (base / "a").symlink_to("..")
    with pytest.raises(errors.NotFound):
        safepath._open_beneath(real_base, "a/vol", "a/vol")
    assert safepath.is_local("a/../b") and not safepath.is_local("a/../../b") and not safepath.is_local("")


def test_staging_mount_left_by_a_killed_daemon_is_cleaned_at_start(daemon: Daemon, tmp_path: Path) -> None:
    d = daemon
    d.stop()
    src = tmp_path / "src"
    src.mkdir()
    point = d.exec_root / "volume-subpaths" / ("f" * 64) / "0"
    point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(src), str(point)], check=True)
    try:
        d.start()
        assert _staging_mounts(d) == []
        assert not point.parent.exists()
    finally:
        if os.path.ismount(point):
            subprocess.run(["umount", "-l", str(point)], check=False)


# ---------------------------------------------------------------- recursive read-only binds


@pytest.fixture
def host_dir_with_submount(tmp_path: Path) -> Iterator[Path]:
    host = tmp_path / "host"
    (host / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(host / "sub")], check=True)
    try:
        yield host
    finally:
        subprocess.run(["umount", str(host / "sub")], check=True)


_WRITE_SUB = ["sh", "-c", "touch /data/sub/x"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_readonly_bind_is_recursive_through_the_cli(shared_daemon: Daemon, host_dir_with_submount: Path,
                                                    runtime: str) -> None:
    d, host = shared_daemon, host_dir_with_submount
    rt = ("--runtime", runtime)
    r = _run(d, *rt, "-v", f"{host}:/data:ro", BUSYBOX, *_WRITE_SUB)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    r = _run(d, *rt, "--mount", f"type=bind,src={host},dst=/data,readonly", BUSYBOX, *_WRITE_SUB)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # bind-recursive=readonly: ReadOnlyForceRecursive, which this kernel and runtime can do
    r = _run(d, *rt, "--mount", f"type=bind,src={host},dst=/data,readonly,bind-recursive=readonly,bind-propagation=rprivate",
             BUSYBOX, *_WRITE_SUB)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # bind-recursive=writable: ReadOnlyNonRecursive, the top read-only, the submount not
    r = _run(d, *rt, "--mount", f"type=bind,src={host},dst=/data,readonly,bind-recursive=writable",
             BUSYBOX, "sh", "-c", "touch /data/sub/x && ! touch /data/y")
    assert r.returncode == 0, r.stderr
    assert (host / "sub" / "x").exists() and not (host / "y").exists()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_readonly_bind_by_api_version(shared_daemon: Daemon, host_dir_with_submount: Path, runtime: str) -> None:
    d, host = shared_daemon, host_dir_with_submount

    def run(version: str, hc: dict[str, Any]) -> tuple[int, int]:
        cid = _create(d, version, {"Image": BUSYBOX, "Cmd": _WRITE_SUB, "HostConfig": {"Runtime": runtime, **hc}})
        try:
            return _start_wait(d, version, cid)
        finally:
            _remove(d, cid)

    binds = {"Binds": [f"{host}:/data:ro"]}
    mount_ro = {"Mounts": [{"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": True}]}
    assert run("v1.44", binds) == (204, 1)
    assert run("v1.44", mount_ro) == (204, 1)
    # below 1.44 read-only binds were not recursive: clients of then keep what they had
    assert run("v1.43", binds) == (204, 0)
    assert run("v1.43", mount_ro) == (204, 0)
    non_recursive = {"Mounts": [{"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": True,
                                 "BindOptions": {"ReadOnlyNonRecursive": True}}]}
    assert run("v1.44", non_recursive) == (204, 0)
    assert run("v1.54", {"Mounts": [{"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": True,
                                     "BindOptions": {"ReadOnlyForceRecursive": True}}]}) == (204, 1)


def test_readonly_bind_option_conflicts(shared_daemon: Daemon, host_dir_with_submount: Path) -> None:
    d, host = shared_daemon, host_dir_with_submount
    for opts, text in (({"ReadOnlyNonRecursive": True}, "mount options conflict: !ReadOnly && "
                        "BindOptions.ReadOnlyNonRecursive"),
                       ({"ReadOnlyNonRecursive": True, "ReadOnlyForceRecursive": True, "_ro": True},
                        "mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive")):
        ro = bool(opts.pop("_ro", False))
        cid = _create(d, "v1.54", {"Image": BUSYBOX, "Cmd": ["true"], "HostConfig": {"Mounts": [
            {"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": ro, "BindOptions": opts}]}})
        try:
            status, body = d.request("POST", f"/v1.54/containers/{cid}/start")
            assert status == 400 and json.loads(body)["message"] == text
        finally:
            _remove(d, cid)
    status, body = d.request("POST", "/v1.43/containers/create", {"Image": BUSYBOX, "HostConfig": {"Mounts": [
        {"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": True,
         "BindOptions": {"ReadOnlyForceRecursive": True}}]}})
    assert status == 400 and json.loads(body) == {"message": "BindOptions.ReadOnlyForceRecursive needs API v1.44 or newer"}
    # the request's own BindOptions show the old meaning, as moby's do
    cid = _create(d, "v1.43", {"Image": BUSYBOX, "Cmd": ["true"], "HostConfig": {"Mounts": [
        {"Type": "bind", "Source": str(host), "Target": "/data", "ReadOnly": True,
         "BindOptions": {"Propagation": "rprivate"}}]}})
    with contextlib.ExitStack() as stack:
        stack.callback(_remove, d, cid)
        info = json.loads(d.request("GET", f"/v1.54/containers/{cid}/json")[1])
        assert info["HostConfig"]["Mounts"][0]["BindOptions"] == {"Propagation": "rprivate",
                                                                  "ReadOnlyNonRecursive": True}
