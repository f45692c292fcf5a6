"""docker cp through the container's mounts, with the real CLI: named and anonymous volumes, a
bind mount of a host directory and a volume mounted inside that bind, into and out of running
and stopped containers; the mount point itself copied out; a read-only mount refusing a PUT with
Docker's error; a symlink in a volume that points at /etc resolving in the container's view,
never on the host; a tmpfs left out of the view, as Docker does."""
from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import Daemon


@dataclass
class Mounted:
    name: str
    volume: str
    host_dir: Path


@pytest.fixture(params=["running", "stopped"])
def mounted(request: pytest.FixtureRequest, shared_daemon: Daemon, tmp_path: Path) -> Iterator[Mounted]:
    """A container with a named volume at /vol1, an anonymous one at /anon, a host directory
    bound at /bind and a second named volume at /bind/inner (nested in the bind)."""
    tag = uuid.uuid4().hex[:8]
    name, vol, inner = f"cpv-{tag}", f"cpv-vol-{tag}", f"cpv-inner-{tag}"
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "from-host.txt").write_text("on the host\n")
    args = ["-v", f"{vol}:/vol1", "-v", "/anon", "-v", f"{host_dir}:/bind", "-v", f"{inner}:/bind/inner",
            "--name", name, "busybox"]
    if request.param == "running":
        shared_daemon.docker("run", "-d", *args, "sleep", "1000")
    else:
        shared_daemon.docker("run", *args, "true")
    try:
        yield Mounted(name, vol, host_dir)
    finally:
        shared_daemon.docker("rm", "-f", "-v", name, check=False)
        shared_daemon.docker("volume", "rm", "-f", vol, inner, check=False)


def _cat(d: Daemon, c: Mounted, path: str) -> bytes:
    """A file of the container, read through the API as a client would (any state)."""
    r = d.docker("cp", f"{c.name}:{path}", "-", text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        f = tar.extractfile(tar.getmembers()[0])
        assert f is not None
        return f.read()


def _volume_file(d: Daemon, volume: str, rel: str) -> str:
    """A file of a volume, read by a fresh container that mounts it (not through docker cp)."""
    return d.docker("run", "--rm", "-v", f"{volume}:/v", "busybox", "cat", f"/v/{rel}").stdout


@pytest.mark.parametrize("dest", ["/vol1", "/anon", "/bind", "/bind/inner"])
def test_cp_into_and_out_of_each_mount(shared_daemon: Daemon, mounted: Mounted, dest: str, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text(f"into {dest}\n")
    shared_daemon.docker("cp", str(src), f"{mounted.name}:{dest}/")
    assert _cat(shared_daemon, mounted, f"{dest}/in.txt") == f"into {dest}\n".encode()
    back = tmp_path / "back.txt"
    shared_daemon.docker("cp", f"{mounted.name}:{dest}/in.txt", str(back))
    assert back.read_text() == f"into {dest}\n"


def test_cp_lands_in_the_mounted_storage(shared_daemon: Daemon, mounted: Mounted, tmp_path: Path) -> None:
    """What docker cp writes is in the volume and the host directory, not in the rootfs under them."""
    src = tmp_path / "f.txt"
    src.write_text("stored\n")
    shared_daemon.docker("cp", str(src), f"{mounted.name}:/vol1/")
    shared_daemon.docker("cp", str(src), f"{mounted.name}:/bind/")
    shared_daemon.docker("cp", str(src), f"{mounted.name}:/bind/inner/")
    assert _volume_file(shared_daemon, mounted.volume, "f.txt") == "stored\n"
    assert (mounted.host_dir / "f.txt").read_text() == "stored\n"
    inner = mounted.volume.replace("cpv-vol-", "cpv-inner-")
    assert _volume_file(shared_daemon, inner, "f.txt") == "stored\n"
    # and what the host put in the bound directory is read back through the container path
    assert _cat(shared_daemon, mounted, "/bind/from-host.txt") == b"on the host\n"


def test_cp_a_mount_point_itself_out(shared_daemon: Daemon, mounted: Mounted, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    src.write_text("in the volume\n")
    shared_daemon.docker("cp", str(src), f"{mounted.name}:/vol1/")
    shared_daemon.docker("cp", f"{mounted.name}:/vol1", str(tmp_path / "vol1"))
    assert (tmp_path / "vol1" / "f.txt").read_text() == "in the volume\n"
    # the bind with the volume nested in it comes out with that volume's content
    shared_daemon.docker("cp", str(src), f"{mounted.name}:/bind/inner/")
    shared_daemon.docker("cp", f"{mounted.name}:/bind", str(tmp_path / "bind"))
    assert (tmp_path / "bind" / "from-host.txt").read_text() == "on the host\n"
    assert (tmp_path / "bind" / "inner" / "f.txt").read_text() == "in the volume\n"
    # the parent of a mount point, as a whole
    r = shared_daemon.docker("cp", f"{mounted.name}:/", "-", text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert {"vol1/f.txt", "bind/inner/f.txt", "bind/from-host.txt"} <= names


@pytest.fixture(params=["running", "stopped"])
def readonly(request: pytest.FixtureRequest, shared_daemon: Daemon, tmp_path: Path) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    name, vol = f"cpro-{tag}", f"cpro-vol-{tag}"
    args = ["-v", f"{vol}:/ro:ro", "-v", f"{tmp_path}:/robind:ro", "--name", name, "busybox"]
    if request.param == "running":
        shared_daemon.docker("run", "-d", *args, "sleep", "1000")
    else:
        shared_daemon.docker("run", *args, "true")
    yield name
    shared_daemon.docker("rm", "-f", name, check=False)
    shared_daemon.docker("volume", "rm", "-f", vol, check=False)


def test_read_only_mount_refuses_a_put(shared_daemon: Daemon, readonly: str, tmp_path: Path) -> None:
    src = tmp_path / "nope.txt"
    src.write_text("x\n")
    for dest in ("/ro/", "/robind/"):
        r = shared_daemon.docker("cp", str(src), f"{readonly}:{dest}", check=False)
        assert r.returncode == 1 and "mounted volume is marked read-only" in r.stderr, r.stderr
    assert not (tmp_path / "nope.txt.copy").exists()
    status, body = shared_daemon.request("PUT", f"/v1.41/containers/{readonly}/archive?path=/ro", body=_tar("a", b"a"),
                                         headers={"Content-Type": "application/x-tar"})
    assert status == 400 and b"mounted volume is marked read-only" in body
    # reading a read-only mount is fine
    shared_daemon.docker("cp", f"{readonly}:/ro", str(tmp_path / "ro-out"))
    assert (tmp_path / "ro-out").is_dir()


def test_read_only_rootfs_still_takes_a_put_into_a_volume(shared_daemon: Daemon, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    name, vol = f"cprr-{tag}", f"cprr-vol-{tag}"
    shared_daemon.docker("run", "-d", "--read-only", "-v", f"{vol}:/data", "--name", name, "busybox", "sleep", "1000")
    try:
        src = tmp_path / "f.txt"
        src.write_text("into the volume\n")
        shared_daemon.docker("cp", str(src), f"{name}:/data/")
        assert shared_daemon.docker("exec", name, "cat", "/data/f.txt").stdout == "into the volume\n"
        r = shared_daemon.docker("cp", str(src), f"{name}:/", check=False)
        assert r.returncode == 1 and "container rootfs is marked read-only" in r.stderr, r.stderr
    finally:
        shared_daemon.docker("rm", "-f", name, check=False)
        shared_daemon.docker("volume", "rm", "-f", vol, check=False)


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_symlink_in_a_volume_resolves_in_the_container(shared_daemon: Daemon, mounted: Mounted, tmp_path: Path) -> None:
    """A volume's symlinks to /etc (absolute, and climbing with `..`) are the container's /etc,
    for writes and for reads: the host's /etc is neither written nor read."""
    marker = f"cpv-escape-{uuid.uuid4().hex[:8]}"
    links = tmp_path / "links"
    links.mkdir()
    (links / "etc").symlink_to("/etc")
    (links / "up").symlink_to("../../../../../../../../etc")
    for item in ("etc", "up"):
        shared_daemon.docker("cp", str(links / item), f"{mounted.name}:/vol1/")
    (tmp_path / marker).write_text("stays in the container\n")
    shared_daemon.docker("cp", str(tmp_path / marker), f"{mounted.name}:/vol1/etc/")
    assert not Path("/etc", marker).exists()
    assert _cat(shared_daemon, mounted, f"/etc/{marker}") == b"stays in the container\n"
    assert _cat(shared_daemon, mounted, f"/vol1/up/{marker}") == b"stays in the container\n"
    # a host file named as the container's would be: never what comes out
    host_only = Path("/etc", f"{marker}-host")
    host_only.write_text("host file\n")
    try:
        r = shared_daemon.docker("cp", f"{mounted.name}:/vol1/etc/{marker}-host", "-", text=False, check=False)
        assert r.returncode == 1 and b"host file" not in r.stdout
        assert "Could not find the file" in r.stderr.decode()
    finally:
        host_only.unlink()


def test_tmpfs_is_not_in_the_view_as_with_docker(shared_daemon: Daemon, tmp_path: Path) -> None:
    """Docker's documented docker cp behaviour: a running container's tmpfs is not in the view
    (the rootfs directory under it is), and a copy of / walks neither it nor the procfs."""
    name = f"cpt-{uuid.uuid4().hex[:8]}"
    shared_daemon.docker("run", "-d", "--tmpfs", "/scratch", "--name", name, "busybox", "sleep", "1000")
    try:
        shared_daemon.docker("exec", name, "sh", "-c", "echo in-tmpfs > /scratch/x")
        r = shared_daemon.docker("cp", f"{name}:/scratch/x", "-", text=False, check=False)
        assert r.returncode == 1 and b"Could not find the file /scratch/x" in r.stderr
        r = shared_daemon.docker("cp", f"{name}:/", "-", text=False)
        with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
            names = {n.lstrip("./") for n in tar.getnames()}
        assert "scratch" in names and "scratch/x" not in names and "proc/1" not in names
    finally:
        shared_daemon.docker("rm", "-f", name, check=False)
