"""Issue 12, item 1: nothing of a container's files runs in the engine. The "nss" image says
`passwd: evil` / `group: evil` in /etc/nsswitch.conf and ships a `libnss_evil.so.2` whose
constructor joins the engine's mount namespace (or breaks out of a chroot) and leaves a marker
on the host: any engine process that resolves a user or group name inside the container's root
(as a chrooted tar helper does) runs it as host root. cp out, cp in, stat (HEAD archive),
export and diff, on a created and on a running container: the marker never appears."""
from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import imagebuild
from tests.support.daemon import Daemon
from tests.support.registry import Registry


@dataclass
class NssImage:
    name: str
    marker: Path


@pytest.fixture(scope="module")
def nss_image(shared_daemon: Daemon, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NssImage]:
    work = tmp_path_factory.mktemp("nss")
    marker = work / "host-marker"
    module = imagebuild.compile_nss_module(marker, work / "libnss_evil.so.2")
    built = imagebuild.build_nss_layout(work / "layout", module)
    name = f"nss-{uuid.uuid4().hex[:8]}"
    imagebuild.push(built.layout, f"library/{name}:latest", registry.host, src_tag="latest")
    shared_daemon.docker("pull", "-q", name)
    yield NssImage(name, marker)
    shared_daemon.docker("rmi", "-f", name, check=False)


@pytest.fixture(params=["created", "running"])
def nss_box(request: pytest.FixtureRequest, shared_daemon: Daemon, nss_image: NssImage) -> Iterator[str]:
    n = f"nss-{request.param}-{uuid.uuid4().hex[:8]}"
    if request.param == "created":
        shared_daemon.docker("create", "--name", n, nss_image.name, "sleep", "1000")
    else:
        shared_daemon.docker("run", "-d", "--name", n, nss_image.name, "sleep", "1000")
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


def _no_marker(img: NssImage, op: str) -> None:
    if img.marker.exists():
        text = img.marker.read_text()
        img.marker.unlink()
        pytest.fail(f"{op}: the image's NSS module ran in the engine: {text.strip()}")


def _named_tar(name: str, data: bytes) -> bytes:
    """A tar whose member carries user and group names as well as ids (docker cp sends them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.uid, info.gid, info.uname, info.gname = 4244, 4244, "someone", "somegroup"
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_cp_out_runs_nothing_of_the_image(shared_daemon: Daemon, nss_image: NssImage, nss_box: str,
                                          tmp_path: Path) -> None:
    r = shared_daemon.docker("cp", f"{nss_box}:/etc/owned-by-nobody-known", str(tmp_path / "f"))
    _no_marker(nss_image, "docker cp out (file)")
    assert (tmp_path / "f").read_text() == "x\n"
    r = shared_daemon.docker("cp", f"{nss_box}:/data", "-", text=False)
    _no_marker(nss_image, "docker cp out (directory)")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # numeric owners only, never a name looked up anywhere
    assert members["data/file"].uid == 4243 and members["data/file"].uname == ""
    assert members["data"].gid == 4243 and members["data"].gname == ""


def test_cp_in_runs_nothing_of_the_image(shared_daemon: Daemon, nss_image: NssImage, nss_box: str,
                                         tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("into the container\n")
    shared_daemon.docker("cp", str(src), f"{nss_box}:/data/")
    _no_marker(nss_image, "docker cp in")
    assert shared_daemon.client().api.put_archive(nss_box, "/data", _named_tar("named.txt", b"named\n"))
    _no_marker(nss_image, "PUT archive with user and group names")
    bits, _ = shared_daemon.client().api.get_archive(nss_box, "/data/named.txt")
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        m = tar.getmember("named.txt")
        assert (m.uid, m.gid) == (4244, 4244)  # the tar's ids, not its names
        assert tar.extractfile(m).read() == b"named\n"
    _no_marker(nss_image, "docker cp out after cp in")


def test_stat_export_diff_run_nothing_of_the_image(shared_daemon: Daemon, nss_image: NssImage, nss_box: str) -> None:
    status, _ = shared_daemon.request("HEAD", f"/v1.41/containers/{nss_box}/archive?path=/data/file")
    assert status == 200
    _no_marker(nss_image, "HEAD archive (stat)")
    r = shared_daemon.docker("export", nss_box, text=False)
    _no_marker(nss_image, "docker export")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        m = tar.getmember("etc/owned-by-nobody-known")
        assert (m.uid, m.uname) == (4242, "")
        assert "etc/nsswitch.conf" in tar.getnames()
    shared_daemon.docker("diff", nss_box)
    _no_marker(nss_image, "docker diff")
