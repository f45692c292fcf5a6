"""The classic builder's context (asyncdock/build/context.py): a `POST /build` body unpacked
safely, compressed or not, a plain Dockerfile body, .dockerignore applied while unpacking, the
Dockerfile lookup with moby's fallback and texts, and remote contexts (an http tar, an http
Dockerfile, a git repository) served on loopback. Real files in tmp dirs; runs as root."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import subprocess
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import ClientSession, web

from asyncdock.build.context import BuildContext, ContextError, is_git_url, parse_git_fragment

pytestmark = pytest.mark.anyio
DEADLINE = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Entry = tuple[str, str, bytes | str, int]  # (name, kind, data or link target, mode)


def make_tar(entries: list[Entry], *, uid: int = 1234, gid: int = 5678) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid, ti.mode, ti.mtime = uid, gid, mode, 1_600_000_000
            if kind == "f":
                assert isinstance(data, bytes)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                continue
            if kind == "d":
                ti.type = tarfile.DIRTYPE
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(data)
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(data)
            elif kind == "c":
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(ti)
    return buf.getvalue()


async def chunked(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


async def load(data: bytes, tmp: Path, *, materialize: bool = True, **kw: str) -> BuildContext:
    """The context of `data`, unpacked to disk (a tar body is only indexed until a COPY asks)."""
    with anyio.fail_after(DEADLINE):
        ctx = await BuildContext.from_tar(chunked(data), tmp / "work", **kw)
        if materialize:
            await ctx.amaterialize()
        return ctx


async def test_tar_unpacked_with_modes_numeric_owners_and_symlinks(tmp_path: Path) -> None:
    body = make_tar([
        ("Dockerfile", "f", b"FROM scratch\n", 0o644),
        ("app", "d", b"", 0o750),
        ("app/run.sh", "f", b"#!/bin/sh\necho hi\n", 0o4755),
        ("app/link", "l", "run.sh", 0o777),
        ("app/hard", "h", "app/run.sh", 0o755),
        ("dev-null", "c", b"", 0o666),
    ])
    ctx = await load(body, tmp_path)
    try:
        run = ctx.root / "app/run.sh"
        st = run.lstat()
        assert run.read_bytes() == b"#!/bin/sh\necho hi\n"
        assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1234, 5678)
        assert stat.S_IMODE((ctx.root / "app").lstat().st_mode) == 0o750
        assert os.readlink(ctx.root / "app/link") == "run.sh"
        assert (ctx.root / "app/hard").lstat().st_ino == st.st_ino
        assert not (ctx.root / "dev-null").exists()  # no device node is made
        assert int((ctx.root / "app").lstat().st_mtime) == 1_600_000_000
        assert ctx.dockerfile() == b"FROM scratch\n"
        assert "app/run.sh" in ctx.sums and "app" in ctx.sums
    finally:
        await ctx.close()
    assert not (tmp_path / "work").exists()


def zstd_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress, zstd_compress],
                         ids=["gzip", "bzip2", "xz", "zstd"])
async def test_compressed_bodies(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    body = compress(make_tar([("Dockerfile", "f", b"FROM busybox\n", 0o644), ("a/b.txt", "f", b"x" * 100_000, 0o600)]))
    ctx = await load(body, tmp_path)
    try:
        assert ctx.dockerfile() == b"FROM busybox\n"
        assert (ctx.root / "a/b.txt").read_bytes() == b"x" * 100_000
    finally:
        await ctx.close()


async def test_plain_dockerfile_body_is_a_context_of_that_file(tmp_path: Path) -> None:
    ctx = await load(b"FROM busybox\nRUN echo hi\n", tmp_path)
    try:
        assert os.listdir(ctx.root) == ["Dockerfile"]
        assert ctx.dockerfile() == b"FROM busybox\nRUN echo hi\n"
        assert ctx.dockerfile("whatever/Dockerfile.dev") == b"FROM busybox\nRUN echo hi\n"
    finally:
        await ctx.close()


async def test_member_climbing_out_is_refused_and_workdir_removed(tmp_path: Path) -> None:
    body = make_tar([("ok", "f", b"1", 0o644), ("../escape", "f", b"x", 0o644)])
    with pytest.raises(ContextError, match="climbs out"):
        await load(body, tmp_path)
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "work").exists()


async def test_symlinked_parent_cannot_point_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    body = make_tar([("up", "l", "../../..", 0o777), ("up/pwned", "f", b"y", 0o644),
                     ("abs", "l", "/", 0o777), ("abs/pwned2", "f", b"z", 0o644)])
    ctx = await load(body, tmp_path)
    try:
        # resolved inside the context: the climb and the absolute target stop at its root
        assert (ctx.root / "pwned").read_bytes() == b"y"
        assert (ctx.root / "pwned2").read_bytes() == b"z"
        assert not (tmp_path / "pwned").exists() and not Path("/pwned2").exists()
    finally:
        await ctx.close()
    # a symlinked parent whose target is missing is not made through the link: refused
    body = make_tar([("evil", "l", str(outside / "sub"), 0o777), ("evil/pwned", "f", b"x", 0o644)])
    with pytest.raises(ContextError, match="cannot extract"):
        await load(body, tmp_path)
    assert list(outside.iterdir()) == []


async def test_truncated_and_corrupt_tars(tmp_path: Path) -> None:
    body = make_tar([("big", "f", b"z" * 50_000, 0o644)])
    with pytest.raises(ContextError, match="invalid build context"):
        await load(body[:20_000], tmp_path)
    with pytest.raises(ContextError, match="not a tar"):
        await load(gzip.compress(b"FROM busybox\n"), tmp_path)


async def test_dockerignore_applied_while_unpacking(tmp_path: Path) -> None:
    body = make_tar([
        ("!early.log", "f", b"before the .dockerignore", 0o644),  # sorts before it
        (".dockerignore", "f", b"# logs\n*.log\n!keep.log\nnode_modules\nDockerfile\n.dockerignore\n", 0o644),
        ("Dockerfile", "f", b"FROM busybox\n", 0o644),
        ("a.log", "f", b"x", 0o644),
        ("keep.log", "f", b"k", 0o644),
        ("node_modules", "d", b"", 0o755),
        ("node_modules/dep.js", "f", b"x", 0o644),
        ("src/main.py", "f", b"print()", 0o644),
    ])
    ctx = await load(body, tmp_path)
    try:
        names = sorted(str(p.relative_to(ctx.root)) for p in ctx.root.rglob("*"))
        # the Dockerfile and .dockerignore stay for the builder to read; COPY leaves them out
        assert names == [".dockerignore", "Dockerfile", "keep.log", "src", "src/main.py"]
        assert ctx.dockerfile() == b"FROM busybox\n"
        assert ctx.ignore.excluded("Dockerfile") and ctx.ignore.excluded(".dockerignore")
        assert not ctx.ignore.excluded("keep.log")
        assert "!early.log" not in ctx.sums
    finally:
        await ctx.close()


async def test_custom_dockerfile_kept_even_if_excluded(tmp_path: Path) -> None:
    body = make_tar([(".dockerignore", "f", b"build\n", 0o644), ("build/app.Dockerfile", "f", b"FROM a\n", 0o644),
                     ("build/other", "f", b"x", 0o644)])
    ctx = await load(body, tmp_path, dockerfile="build/app.Dockerfile")
    try:
        assert ctx.dockerfile("build/app.Dockerfile") == b"FROM a\n"
        assert not (ctx.root / "build/other").exists()
    finally:
        await ctx.close()


async def test_dockerfile_lookup_fallback_and_errors(tmp_path: Path) -> None:
    body = make_tar([("dockerfile", "f", b"FROM lower\n", 0o644), ("sub/Dockerfile.dev", "f", b"FROM dev\n", 0o644),
                     ("empty", "f", b"", 0o644), ("sub/up", "l", "../../../etc/hostname", 0o777)])
    ctx = await load(body, tmp_path)
    try:
        assert ctx.dockerfile() == b"FROM lower\n"
        assert ctx.dockerfile("sub/Dockerfile.dev") == b"FROM dev\n"
        assert ctx.dockerfile("./sub/../sub/Dockerfile.dev") == b"FROM dev\n"
        with pytest.raises(ContextError, match=r"^Cannot locate specified Dockerfile: ../Dockerfile$"):
            ctx.dockerfile("../Dockerfile")
        with pytest.raises(ContextError, match=r"^Cannot locate specified Dockerfile: nope$"):
            ctx.dockerfile("nope")
        with pytest.raises(ContextError, match=r"^Cannot locate specified Dockerfile: sub/up$"):
            ctx.dockerfile("sub/up")  # a symlink out resolves inside the context, to nothing
        with pytest.raises(ContextError, match=r"cannot be empty"):
            ctx.dockerfile("empty")
    finally:
        await ctx.close()


async def test_empty_body_has_no_dockerfile(tmp_path: Path) -> None:
    ctx = await load(b"", tmp_path)
    try:
        with pytest.raises(ContextError, match="^Cannot locate specified Dockerfile: Dockerfile$"):
            ctx.dockerfile()
    finally:
        await ctx.close()


async def test_failing_upload_removes_workdir(tmp_path: Path) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield make_tar([("a", "f", b"x" * 10_000, 0o644)])[:4096]
        raise ConnectionResetError("client went away")

    with anyio.fail_after(DEADLINE), pytest.raises(ConnectionResetError):
        await BuildContext.from_tar(broken(), tmp_path / "work")
    assert not (tmp_path / "work").exists()


# -- remote contexts ----------------------------------------------------------------------------


def test_git_url_detection_and_fragment() -> None:
    assert is_git_url("git://127.0.0.1/repo") and is_git_url("https://127.0.0.1/r.git#main:sub")
    assert is_git_url("git@example:repo") and not is_git_url("https://127.0.0.1/ctx.tar")
    assert parse_git_fragment("http://127.0.0.1/r.git#v1:docker/app") == ("http://127.0.0.1/r.git", "v1", "docker/app")
    assert parse_git_fragment("http://127.0.0.1/r.git") == ("http://127.0.0.1/r.git", "", "")


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A bare repository served over git's dumb HTTP (as any static server can)."""
    work = tmp_path / "src"
    (work / "sub").mkdir(parents=True)
    (work / "Dockerfile").write_text("FROM root\n")
    (work / "sub/Dockerfile").write_text("FROM sub\n")
    (work / "sub/file.txt").write_text("in sub\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}
    run = lambda *a, cwd=work: subprocess.run(["git", *a], cwd=cwd, env=env, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("add", ".")
    run("commit", "-qm", "one")
    run("tag", "v1")
    (work / "Dockerfile").write_text("FROM root2\n")
    run("commit", "-qam", "two")
    bare = tmp_path / "srv" / "repo.git"
    run("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    run("update-server-info", cwd=bare)
    return tmp_path / "srv"


async def serve(routes: web.RouteTableDef | None = None, static: Path | None = None) -> tuple[web.AppRunner, str]:
    app = web.Application()
    if routes is not None:
        app.add_routes(routes)
    if static is not None:
        app.router.add_static("/", static)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_remote_git_with_ref_and_subdir(tmp_path: Path, git_repo: Path) -> None:
    runner, base = await serve(static=git_repo)
    try:
        with anyio.fail_after(DEADLINE):
            ctx = await BuildContext.from_remote(f"{base}/repo.git", tmp_path / "w1", session=None)
            try:
                assert ctx.dockerfile() == b"FROM root2\n"
            finally:
                await ctx.close()
            ctx = await BuildContext.from_remote(f"{base}/repo.git#v1:sub", tmp_path / "w2", session=None)
            try:
                assert ctx.dockerfile() == b"FROM sub\n"
                assert (ctx.root / "file.txt").read_text() == "in sub\n"
            finally:
                await ctx.close()
            with pytest.raises(ContextError, match="subdir not found: nope"):
                await BuildContext.from_remote(f"{base}/repo.git#main:nope", tmp_path / "w3", session=None)
            with pytest.raises(ContextError, match="error fetching"):
                await BuildContext.from_remote(f"{base}/missing.git", tmp_path / "w4", session=None)
        assert not (tmp_path / "w3").exists() and not (tmp_path / "w4").exists()
    finally:
        await runner.cleanup()


async def test_remote_http_tar_and_dockerfile(tmp_path: Path) -> None:
    tar = gzip.compress(make_tar([("Dockerfile", "f", b"FROM fromtar\n", 0o644), ("x", "f", b"1", 0o644)]))
    routes = web.RouteTableDef()

    @routes.get("/ctx.tgz")
    async def ctx_tgz(_: web.Request) -> web.Response:
        return web.Response(body=tar, content_type="application/x-gzip")

    @routes.get("/Dockerfile")
    async def dockerfile(_: web.Request) -> web.Response:
        return web.Response(body=b"FROM plain\n", content_type="application/octet-stream")

    @routes.get("/text")
    async def text(_: web.Request) -> web.Response:
        return web.Response(text="FROM text\n", content_type="text/plain")

    runner, base = await serve(routes)
    try:
        async with ClientSession() as session:
            with anyio.fail_after(DEADLINE):
                ctx = await BuildContext.from_remote(f"{base}/ctx.tgz", tmp_path / "a", session=session)
                assert ctx.dockerfile() == b"FROM fromtar\n" and (ctx.root / "x").read_bytes() == b"1"
                await ctx.close()
                for path, want in (("/Dockerfile", b"FROM plain\n"), ("/text", b"FROM text\n")):
                    ctx = await BuildContext.from_remote(base + path, tmp_path / "b", session=session)
                    assert ctx.dockerfile() == want and os.listdir(ctx.root) == ["Dockerfile"]
                    await ctx.close()
                with pytest.raises(ContextError, match=r"^failed to GET .*/missing with status 404 Not Found"):
                    await BuildContext.from_remote(f"{base}/missing", tmp_path / "c", session=session)
                with pytest.raises(ContextError, match=r"could not be recognized as URL"):
                    await BuildContext.from_remote("ftp://127.0.0.1/x", tmp_path / "d", session=session)
    finally:
        await runner.cleanup()




async def test_tar_body_is_indexed_until_files_are_needed(tmp_path: Path) -> None:
    body = make_tar([
        (".dockerignore", "f", b"secret\n", 0o644),
        ("docker", "d", b"", 0o755),
        ("docker/real.Dockerfile", "f", b"FROM indexed\n", 0o644),
        ("Dockerfile", "l", "docker/real.Dockerfile", 0o777),  # followed inside the index
        ("secret", "f", b"password", 0o600),
        ("up", "l", "../../..", 0o777),
    ])
    ctx = await load(body, tmp_path, materialize=False)
    try:
        assert ctx.index is not None and os.listdir(ctx.root) == []  # nothing written yet
        assert ctx.dockerfile() == b"FROM indexed\n"
        assert ctx.dockerfile("up/docker/real.Dockerfile") == b"FROM indexed\n"  # clamped at the root
        with pytest.raises(ContextError, match="^Cannot locate specified Dockerfile: docker$"):
            ctx.dockerfile("docker")
        assert "secret" not in ctx.index.nodes
        await ctx.amaterialize()
        assert ctx.index is None and ctx.spool is None
        assert sorted(os.listdir(ctx.root)) == [".dockerignore", "Dockerfile", "docker", "up"]
        assert ctx.dockerfile() == b"FROM indexed\n"
        await ctx.amaterialize()  # once only
    finally:
        await ctx.close()
    assert not (tmp_path / "work").exists()
