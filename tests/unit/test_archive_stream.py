"""docker cp's container side (containers/archive.py) without HTTP: the path's stat as the
X-Docker-Container-Path-Stat header carries it, the tar chunks of a path, an upload unpacked,
and a stream that fails after its first chunk. No root needed: the "container" runs as this
test's own process, so its live root (/proc/<pid>/root) is the host's, and every path used is
under the test's tmp_path."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import tarfile
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncdock.base import errors
from asyncdock.base.timefmt import rfc3339nano
from asyncdock.api.streams.archive import stat_header
from asyncdock.containers.archive import TarChunks, TarCut, path_archive, put_archive, stat_path
from asyncdock.containers.manager import Live
from asyncdock.containers.models import ContainerConfig, ContainerRecord, HostConfig, State
from asyncdock.containers.rootfs_fs import open_root

pytestmark = pytest.mark.anyio

DEADLINE = 10.0
CID = "c0ffee" + "0" * 58


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RunningHere:
    """What the archive functions ask of the container manager: the container's live state (its
    process is this test's), the bundles directory (no rootfs mount of ours in it: cp falls back
    to the live root), and the events they send."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._live = Live(pid=os.getpid())
        self.bundles = Path("/nonexistent-asyncdock-bundles")

    def live(self, rec: ContainerRecord) -> Live:
        return self._live

    def publish(self, rec: ContainerRecord, action: str, **extra: str) -> None:
        self.events.append(action)


def record(*, readonly: bool = False) -> ContainerRecord:
    return ContainerRecord(id=CID, name="/cp", created="", created_ns=0, image="busybox", image_id="", path="sh",
                           args=[], config=ContainerConfig(), host_config=HostConfig(readonly_rootfs=readonly),
                           state=State(status="running", running=True, pid=os.getpid()))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "hello.txt").write_bytes(b"hello\n")
    (d / "hello.txt").chmod(0o640)
    (d / "lnk").symlink_to("hello.txt")
    return d


@pytest.fixture
def root_fd(tree: Path) -> Iterator[int]:
    fd = open_root(tree)
    yield fd
    os.close(fd)


def decoded(header: str) -> str:
    return base64.b64decode(header).decode()


def test_path_stat_header_value(tree: Path, root_fd: int) -> None:
    mtime = rfc3339nano((tree / "hello.txt").lstat().st_mtime_ns)
    # Docker's field names and order, compact JSON, Go's FileMode bits
    assert decoded(stat_header(stat_path(root_fd, "/hello.txt"))) == \
        f'{{"name":"hello.txt","size":6,"mode":{0o640},"mtime":"{mtime}","linkTarget":""}}'
    link = json.loads(decoded(stat_header(stat_path(root_fd, "/lnk"))))
    assert link["name"] == "lnk" and link["mode"] == (1 << 27) | 0o777 and link["linkTarget"] == "/hello.txt"
    top = json.loads(decoded(stat_header(stat_path(root_fd, "/"))))
    assert top["name"] == "/" and top["mode"] & (1 << 31)
    assert json.loads(decoded(stat_header(stat_path(root_fd, "/.."))))["name"] == "/"  # clamped to the root


async def collect(chunks: TarChunks) -> bytes:
    with anyio.fail_after(DEADLINE):
        return b"".join([c async for c in chunks])


async def test_a_path_as_tar_chunks(tree: Path) -> None:
    mgr = RunningHere()
    async with path_archive(mgr, record(), str(tree / "hello.txt"), "given-name") as target:
        assert target.stat["name"] == "hello.txt" and target.stat["size"] == 6
        assert mgr.events == []  # found, not archived yet (a HEAD stops here)
        async with target.tar() as chunks:
            assert mgr.events == ["archive-path"]
            data = await collect(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["hello.txt"]
        member = tar.getmember("hello.txt")
        assert member.mode == 0o640 and member.uid == os.getuid()
        assert tar.extractfile(member).read() == b"hello\n"
    async with path_archive(mgr, record(), str(tree) + "/", "given-name") as target:
        async with target.tar() as chunks:
            data = await collect(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        # "dir/": the directory's contents under the directory's name
        assert sorted(tar.getnames()) == ["data", "data/hello.txt", "data/lnk"]
        assert tar.getmember("data/lnk").issym() and tar.getmember("data/lnk").linkname == "hello.txt"
    assert mgr.events == ["archive-path", "archive-path"]


async def test_what_is_refused_before_any_answer(tree: Path) -> None:
    mgr = RunningHere()
    missing = str(tree / "nothing")
    with pytest.raises(errors.NotFound, match=f"Could not find the file {missing} in container given-name"):
        async with path_archive(mgr, record(), missing, "given-name"):
            pass
    with pytest.raises(errors.InvalidParameter, match="path must not be empty"):
        async with path_archive(mgr, record(), "", "given-name"):
            pass
    with pytest.raises(errors.NotFound):
        async with path_archive(mgr, record(), str(tree / "hello.txt") + "/", "given-name"):
            pass  # a file is not a directory
    assert mgr.events == []


async def test_a_stream_that_fails_after_its_first_chunk_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    def gen() -> Iterator[bytes]:
        yield b"second"
        raise PermissionError(13, "Permission denied", "/host/path/of/the/file")

    chunks = TarChunks(gen(), b"first", "archive of /x in container c0ffee000000")
    got = []
    with caplog.at_level(logging.WARNING, logger="asyncdock.containers.archive"):
        with pytest.raises(TarCut):
            async for c in chunks:
                got.append(c)
    assert got == [b"first", b"second"]
    # logged in one line, without the host path
    assert [r.getMessage() for r in caplog.records] == \
        ["archive of /x in container c0ffee000000 failed: Permission denied"]


async def body_of(data: bytes, size: int = 512) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def tar_of(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.uid, info.gid = os.getuid(), os.getgid()
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


async def test_an_upload_unpacked_into_a_directory(tree: Path) -> None:
    mgr = RunningHere()
    content = os.urandom(5000)
    with anyio.fail_after(DEADLINE):
        await put_archive(mgr, record(), str(tree), "given-name", body_of(tar_of("up/new.bin", content)),
                          no_overwrite=False)
    assert (tree / "up" / "new.bin").read_bytes() == content
    assert mgr.events == ["extract-to-dir"]


@pytest.mark.parametrize("case", ["readonly", "empty path", "missing", "not a directory", "not a tar"])
async def test_uploads_refused(tree: Path, case: str) -> None:
    mgr = RunningHere()
    args: dict[str, Any] = {"rec": record(), "path": str(tree)}
    body = tar_of("x", b"x")
    expected: tuple[type[errors.EngineError], str]
    if case == "readonly":
        args["rec"] = record(readonly=True)
        expected = (errors.InvalidParameter, "container rootfs is marked read-only")  # 400, as Docker 29
    elif case == "empty path":
        args["path"] = ""
        expected = (errors.InvalidParameter, "path must not be empty")
    elif case == "missing":
        args["path"] = str(tree / "nodir")
        expected = (errors.NotFound, f"Could not find the file {tree / 'nodir'} in container given-name")
    elif case == "not a directory":
        args["path"] = str(tree / "hello.txt")
        expected = (errors.InvalidParameter, "extraction point is not a directory")
    else:
        body = b"this is not a tar archive" * 40
        expected = (errors.InvalidParameter, "invalid tar stream")
    with anyio.fail_after(DEADLINE), pytest.raises(expected[0], match=expected[1]):
        await put_archive(mgr, args["rec"], args["path"], "given-name", body_of(body), no_overwrite=False)
    assert mgr.events == []
    assert sorted(p.name for p in tree.iterdir()) == ["hello.txt", "lnk"]
