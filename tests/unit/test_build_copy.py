"""COPY/ADD of the classic builder (asyncdock/build/copy.py) on real directories: the cache
key (content, mode and owner count, mtimes do not), Docker's destination rules, wildcards,
--chown/--chmod, symlinks of the image that must not lead the write outside the rootfs,
ADD of a local tar and of a URL served on loopback, COPY --from a directory fd, and moby's
error texts. Runs as root (owners are set)."""
from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import ClientSession, web

from asyncdock.build.context import BuildContext
from asyncdock.build.copy import (
    CopyError,
    copy_into,
    normalize_dest,
    numeric_chown,
    parse_chmod,
    parse_chown,
    refuse_heredocs,
    source_checksum,
)
from asyncdock.containers.rootfs_fs import open_root

pytestmark = pytest.mark.anyio
DEADLINE = 30.0
NOT_FOUND = ("COPY failed: file not found in build context or excluded by .dockerignore: "
             "stat {}: file does not exist")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_tar(files: dict[str, bytes | str | None], *, mtime: int = 1_600_000_000, modes: dict[str, int] | None = None,
             uid: int = 1234) -> bytes:
    """name -> bytes (a file), a str (a symlink's target) or None (a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.uid = ti.gid = uid
            ti.mtime = mtime
            ti.mode = (modes or {}).get(name, 0o755 if data is None else 0o644)
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif isinstance(data, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, data
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


UNPACK_FIRST = False  # set per test by the `held` fixture


@pytest.fixture(autouse=True, params=["indexed", "unpacked"])
def held(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: with the context still held as its index (COPY reads the spooled
    tar) and with it unpacked to disk first (COPY reads the files)."""
    monkeypatch.setattr(f"{__name__}.UNPACK_FIRST", request.param == "unpacked")
    return str(request.param)


async def context(tmp: Path, files: dict[str, bytes | str | None], **kw: object) -> BuildContext:
    n = len(list(tmp.glob("work*")))
    with anyio.fail_after(DEADLINE):
        ctx = await BuildContext.from_tar(one(make_tar(files, **kw)), tmp / f"work{n}")  # type: ignore[arg-type]
        if UNPACK_FIRST:
            await ctx.amaterialize()
        return ctx


@pytest.fixture
def rootfs(tmp_path: Path) -> tuple[Path, int]:
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "app").mkdir()
    fd = open_root(r)
    yield r, fd  # type: ignore[misc]
    os.close(fd)


FILES: dict[str, bytes | str | None] = {
    "Dockerfile": b"FROM scratch\n", "a.txt": b"alpha", "b.txt": b"beta", "src": None,
    "src/main.py": b"print(1)\n", "src/pkg": None, "src/pkg/mod.py": b"x = 1\n", "src/link": "main.py",
}


async def test_checksum_ignores_mtime_but_not_content_mode_or_name(tmp_path: Path) -> None:
    async def key(files: dict[str, bytes | str | None], sources: list[str], **kw: object) -> str:
        ctx = await context(tmp_path, files, **kw)
        try:
            return await source_checksum(ctx, sources)
        finally:
            await ctx.close()

    base = await key(FILES, ["src"])
    assert base.startswith("dir:")
    assert await key(FILES, ["src"], mtime=1_700_000_000) == base  # touched: same key
    assert await key({**FILES, "src/main.py": b"print(2)\n"}, ["src"]) != base
    assert await key(FILES, ["src"], modes={"src/main.py": 0o755}) != base
    assert await key(FILES, ["src"], uid=0) != base
    renamed = {k.replace("mod.py", "mod2.py"): v for k, v in FILES.items()}
    assert await key(renamed, ["src"]) != base
    f = await key(FILES, ["a.txt"])
    assert f.startswith("file:") and await key(FILES, ["./a.txt"]) == f and await key(FILES, ["/a.txt"]) == f
    multi = await key(FILES, ["a.txt", "b.txt"])
    assert multi.startswith("multi:") and await key(FILES, ["b.txt", "a.txt"]) != multi
    assert await key(FILES, ["*.txt"]) == multi  # each match a source of its own, in walk order


async def test_sums_taken_while_unpacking_equal_sums_read_from_disk(tmp_path: Path) -> None:
    files: dict[str, bytes | str | None] = {
        **FILES, "implicit/parent/f": b"no dir members", "hard": None,
        # a member below a symlinked directory lands in its target, on disk as in the index
        "real": None, "via": "real", "via/f": b"through the link", "abs": "/real", "abs/g": b"absolute",
    }
    ctx = await context(tmp_path, files)
    try:
        sources = [["."], ["src"], ["src/link"], ["*.txt", "src/pkg"], ["implicit"], ["real"], ["via/f"], ["abs"]]
        from_index = [await source_checksum(ctx, s, dest="/d/") for s in sources]
        assert (ctx.index is None) is UNPACK_FIRST and bool(os.listdir(ctx.root)) is UNPACK_FIRST
        await ctx.amaterialize()
        assert ctx.index is None and (ctx.root / "src/main.py").exists()
        assert sorted(os.listdir(ctx.root / "real")) == ["f", "g"]
        assert [await source_checksum(ctx, s, dest="/d/") for s in sources] == from_index
        ctx.sums.clear()  # every sum taken again from the files on disk
        assert [await source_checksum(ctx, s, dest="/d/") for s in sources] == from_index
        assert ctx.stat_sums  # and those are kept for the next instruction
    finally:
        await ctx.close()


async def test_copy_file_and_destination_rules(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    ctx = await context(tmp_path, FILES)
    try:
        await copy_into(ctx, ["a.txt"], "/opt/new/a-renamed", fd)  # a file path, parents made
        assert (root / "opt/new/a-renamed").read_bytes() == b"alpha"
        await copy_into(ctx, ["a.txt"], "/etc", fd)  # an existing directory: inside it
        assert (root / "etc/a.txt").read_bytes() == b"alpha"
        await copy_into(ctx, ["b.txt"], "sub/", fd, workdir="/app")  # relative to WORKDIR, / = a dir
        assert (root / "app/sub/b.txt").read_bytes() == b"beta"
        await copy_into(ctx, ["a.txt"], ".", fd, workdir="/app")
        assert (root / "app/a.txt").read_bytes() == b"alpha"
        st = (root / "etc/a.txt").stat()
        # owned 0:0 (the tar said 1234), mode and mtime kept
        assert (st.st_uid, st.st_gid) == (0, 0) and stat.S_IMODE(st.st_mode) == 0o644
        assert int(st.st_mtime) == 1_600_000_000
        await copy_into(ctx, ["src/link"], "/etc/", fd)  # a symlink source: its target's content, its name
        assert (root / "etc/link").read_bytes() == b"print(1)\n" and not (root / "etc/link").is_symlink()
        with pytest.raises(CopyError, match="^When using COPY with more than one source file, the destination must be a directory and end with a /$"):
            await copy_into(ctx, ["a.txt", "b.txt"], "/etc", fd)
        await copy_into(ctx, ["*.txt"], "/multi/", fd)
        assert sorted(os.listdir(root / "multi")) == ["a.txt", "b.txt"]
    finally:
        await ctx.close()


async def test_copy_directory_contents_with_chown_and_chmod(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    ctx = await context(tmp_path, FILES)
    try:
        await copy_into(ctx, ["src"], "/deep/er/dst", fd, chown=(1000, 1001))
        dst = root / "deep/er/dst"
        assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == ["link", "main.py", "pkg", "pkg/mod.py"]
        assert os.readlink(dst / "link") == "main.py"  # symlinks inside a directory stay symlinks
        for p in [dst, *dst.rglob("*")]:
            st = p.lstat()
            assert (st.st_uid, st.st_gid) == (1000, 1001), p
        # the destination's parents are root's (moby's MkdirAllAndChownNew with the root pair)
        assert (root / "deep").stat().st_uid == 0 and (root / "deep/er").stat().st_uid == 0
        assert int((dst / "pkg").stat().st_mtime) == 1_600_000_000
        await copy_into(ctx, ["src/pkg"], "/chm/", fd, chmod=0o600, chown=(5, 6))
        assert stat.S_IMODE((root / "chm/mod.py").stat().st_mode) == 0o600
        await copy_into(ctx, ["a.txt"], "/fresh/parents/", fd, chown=(7, 8))
        # a file's new parents take the copy's owner
        assert (root / "fresh").stat().st_uid == 7 and (root / "fresh/parents").stat().st_gid == 8
    finally:
        await ctx.close()


async def test_dockerignore_at_copy_time(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    files: dict[str, bytes | str | None] = {**FILES, ".dockerignore": b"Dockerfile\n.dockerignore\nsrc/pkg\n*.txt\n!b.txt\n"}
    ctx = await context(tmp_path, files)
    try:
        await copy_into(ctx, ["."], "/app", fd)
        assert sorted(str(p.relative_to(root / "app")) for p in (root / "app").rglob("*")) == \
            ["b.txt", "src", "src/link", "src/main.py"]
        with pytest.raises(CopyError, match="^" + NOT_FOUND.format("Dockerfile") + "$"):
            await copy_into(ctx, ["Dockerfile"], "/", fd)
        with pytest.raises(CopyError, match="^" + NOT_FOUND.format("a.txt")):
            await source_checksum(ctx, ["a.txt"])
    finally:
        await ctx.close()


async def test_errors_in_mobys_words(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    _, fd = rootfs
    ctx = await context(tmp_path, FILES)
    try:
        with pytest.raises(CopyError, match="^" + NOT_FOUND.format("missing.txt") + "$"):
            await source_checksum(ctx, ["missing.txt"])
        with pytest.raises(CopyError, match=r"^COPY failed: Forbidden path outside the build context: \.\./x \(\)$"):
            await source_checksum(ctx, ["../x"])
        with pytest.raises(CopyError, match="^COPY failed: no source files were specified$"):
            await copy_into(ctx, ["*.nothing"], "/x/", fd)
        with pytest.raises(CopyError, match="source can't be a URL for COPY"):
            await source_checksum(ctx, ["http://127.0.0.1:1/x"])
        with pytest.raises(CopyError, match="heredocs are not supported by the classic builder"):
            await source_checksum(ctx, ["<<EOF"])
        with pytest.raises(CopyError, match="syntax error in pattern"):
            await source_checksum(ctx, ["[a"])
    finally:
        await ctx.close()


async def test_image_symlinks_cannot_lead_the_write_outside(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("keep")
    os.symlink(str(outside), root / "evil")  # the image's absolute symlink
    os.symlink(str(outside / "victim"), root / "app/victim")
    os.symlink("../../../../../..", root / "up")
    ctx = await context(tmp_path, FILES)
    try:
        await copy_into(ctx, ["a.txt"], "/evil/", fd)
        await copy_into(ctx, ["b.txt"], "/app/victim", fd)  # followed as moby does, inside the root
        await copy_into(ctx, ["src"], "/up/escaped", fd)
        assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "keep"
        assert (root / str(outside).lstrip("/") / "a.txt").read_bytes() == b"alpha"
        assert (root / str(outside).lstrip("/") / "victim").read_bytes() == b"beta"
        assert (root / "app/victim").is_symlink()
        assert (root / "escaped/main.py").exists()
    finally:
        await ctx.close()


async def test_add_local_tar_is_extracted_and_copy_is_not(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    inner = gzip.compress(make_tar({"pkg": None, "pkg/data.bin": b"\x00\x01", "pkg/owned": b"o"}, uid=42))
    ctx = await context(tmp_path, {"Dockerfile": b"FROM scratch\n", "bundle.tgz": inner})
    try:
        await copy_into(ctx, ["bundle.tgz"], "/opt/", fd, add=True)
        assert (root / "opt/pkg/data.bin").read_bytes() == b"\x00\x01"
        assert (root / "opt/pkg/owned").stat().st_uid == 42  # the tar's owners, as moby's untar
        await copy_into(ctx, ["bundle.tgz"], "/opt/", fd, add=False)
        assert (root / "opt/bundle.tgz").read_bytes() == inner
    finally:
        await ctx.close()


async def test_add_url_downloads_with_mode_0600_and_last_modified(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    routes = web.RouteTableDef()
    served: list[str] = []

    @routes.get("/files/tool.sh")
    async def tool(req: web.Request) -> web.Response:
        served.append(req.path)
        return web.Response(body=b"#!/bin/sh\n", headers={"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"})

    @routes.get("/files/")
    async def unnamed(_: web.Request) -> web.Response:
        return web.Response(body=b"anon")

    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    ctx = await context(tmp_path, FILES)
    try:
        async with ClientSession() as session:
            with anyio.fail_after(DEADLINE):
                key = await source_checksum(ctx, [f"{base}/files/tool.sh"], add=True, session=session)
                await copy_into(ctx, [f"{base}/files/tool.sh"], "/usr/bin/", fd, add=True, session=session)
                assert served == ["/files/tool.sh"]  # downloaded once for the key and the copy
                assert key.startswith("") and key
                st = (root / "usr/bin/tool.sh").stat()
                assert stat.S_IMODE(st.st_mode) == 0o600 and int(st.st_mtime) == 1445412480
                await copy_into(ctx, [f"{base}/files/"], "/named", fd, add=True, session=session)
                assert (root / "named").read_bytes() == b"anon"
                with pytest.raises(CopyError, match="cannot determine filename for source"):
                    await copy_into(ctx, [f"{base}/files/"], "/dir/", fd, add=True, session=session)
    finally:
        await ctx.close()
        await runner.cleanup()


async def test_copy_from_another_root(tmp_path: Path, rootfs: tuple[Path, int]) -> None:
    root, fd = rootfs
    stage = tmp_path / "stage"
    (stage / "out").mkdir(parents=True)
    (stage / "out/bin").write_bytes(b"ELF")
    os.chmod(stage / "out/bin", 0o755)
    os.symlink("/out/bin", stage / "abs-link")  # absolute: resolved inside the stage's root
    ctx = await context(tmp_path, FILES)
    sfd = open_root(stage)
    try:
        key = await source_checksum(ctx, ["/out"], src_fd=sfd)
        assert key == await source_checksum(ctx, ["out"], src_fd=sfd)
        await copy_into(ctx, ["/out/bin", "abs-link"], "/usr/local/bin/", fd, src_fd=sfd)
        assert (root / "usr/local/bin/bin").read_bytes() == b"ELF"
        assert (root / "usr/local/bin/abs-link").read_bytes() == b"ELF"
        assert stat.S_IMODE((root / "usr/local/bin/bin").stat().st_mode) == 0o755
        with pytest.raises(CopyError, match="^COPY failed: stat nope: file does not exist$"):
            await source_checksum(ctx, ["nope"], src_fd=sfd)
        (stage / "out/bin").write_bytes(b"ELF2")
        assert await source_checksum(ctx, ["/out"], src_fd=sfd) != key
    finally:
        os.close(sfd)
        await ctx.close()


def test_flags_and_dest() -> None:
    assert parse_chmod("0755") == 0o755 and parse_chmod("644") == 0o644
    for bad in ("", "9", "abc", "17777"):
        with pytest.raises(CopyError, match="invalid chmod parameter"):
            parse_chmod(bad)
    assert parse_chown("app:staff") == ("app", "staff") and parse_chown("app") == ("app", None)
    assert numeric_chown("1000:1001") == (1000, 1001) and numeric_chown("1000") == (1000, 1000)
    assert numeric_chown("app:1") is None
    with pytest.raises(CopyError):
        parse_chown(":x")
    with pytest.raises(CopyError, match="COPY <<EOF: heredocs"):
        refuse_heredocs("COPY", ["<<EOF", "/x"])
    assert normalize_dest("/app", "sub/") == "/app/sub/" and normalize_dest("/app", ".") == "/app"
    assert normalize_dest("", "x") == "/x" and normalize_dest("/w", "/abs") == "/abs"
