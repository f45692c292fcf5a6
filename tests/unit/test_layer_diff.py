"""snapshots/diff.py: the layer tar of an active snapshot, on real overlay mounts and on the copy
snapshotter's whole trees. Each scenario changes a container's root through its real mount, takes
the diff, checks its entries, applies it onto the parent with the unpacker and compares the
result with the container's own view."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdock.plugins import SNAPSHOTTERS, InitContext
from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.base import Snapshotter
from asyncdock.snapshots.diff import LayerDiff, diff_source
from tests.support.plugins import registered
from tests.support.snapshots import layer, mounted, unpack

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="real mounts need root"),
]


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mnt.unmount_all_under(tmp_path)
    assert not left, f"test left mounts behind: {left}"


@pytest.fixture(params=["overlayfs", "copy"])
async def snap(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Snapshotter]:
    reg = registered(SNAPSHOTTERS)[request.param]
    if reg.usable is not None and not await asyncio.to_thread(reg.usable, tmp_path):
        pytest.fail(f"{request.param} is not usable here")
    s: Any = reg.factory(InitContext(root=tmp_path / "root"))
    yield s
    await s.close()


BASE = layer(
    ("dir", "bin", ""), ("file", "bin/sh", "shell"),
    ("dir", "etc", ""), ("file", "etc/passwd", "root:x:0:0"),
    ("dir", "gone", ""), ("file", "gone/a", "a"), ("file", "gone/b", "b"),
    ("dir", "swap", ""), ("file", "swap/old", "old"),
    ("dir", "keep", ""), ("file", "keep/same", "same"), ("file", "keep/edit", "v1"),
    ("file", "rmme", "x"),
)


def diff_bytes(source: Any) -> tuple[bytes, int]:
    d = LayerDiff(source, chunk=4096)
    data = b"".join(d)
    return data, d.entries


def entries(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """path -> (mode, content or link target) of everything under root."""
    out: dict[str, tuple[int, bytes]] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath, n)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = (st.st_mode, os.fsencode(os.readlink(p)))
            elif p.is_file():
                out[rel] = (st.st_mode, p.read_bytes())
            else:
                out[rel] = (st.st_mode, b"")
    return out


def change(root: Path) -> None:
    """What a container does to its root."""
    (root / "new").mkdir()
    (root / "new" / "file").write_bytes(b"hello")
    os.link(root / "new" / "file", root / "new" / "link")  # a hard link inside the layer
    (root / "new" / "sym").symlink_to("/bin/sh")
    os.setxattr(root / "new" / "file", "user.note", b"\xff\x00binary")
    shutil.rmtree(root / "gone")
    (root / "rmme").unlink()
    shutil.rmtree(root / "swap")  # replaced by a new dir of the same name: opaque
    (root / "swap").mkdir()
    (root / "swap" / "fresh").write_bytes(b"fresh")
    (root / "keep" / "edit").write_bytes(b"v2")
    (root / "deep" / ("d" * 200) / ("e" * 200)).mkdir(parents=True)  # PAX long names
    (root / "deep" / ("d" * 200) / ("e" * 200) / "f").write_bytes(b"long")
    # What moby's init layer holds: the runtime's mount points and the engine's /etc files
    for p in ("dev/pts", "proc", "sys"):
        (root / p).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / ".dockerenv").write_bytes(b"")


async def test_diff_entries_apply_and_determinism(snap: Snapshotter, tmp_path: Path) -> None:
    await unpack(snap, "base", None, BASE)
    await snap.prepare("c1", "base")
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        await asyncio.to_thread(change, m)
        want = tree(m)
    source = await diff_source(snap, "c1")
    data, count = await asyncio.to_thread(diff_bytes, source)
    es = entries(data)
    names = set(es)
    assert count == len(es)
    assert {"new", "new/file", "new/link", "new/sym", ".wh.gone", ".wh.rmme", "swap", "swap/fresh",
            "keep/edit", "keep"} <= names
    # not the runtime's or the engine's; /etc held only /etc/hosts of those
    assert not names & {"dev", "dev/pts", "proc", "sys", ".dockerenv", "etc", "etc/hosts"}
    assert "keep/same" not in names and "bin" not in names and "bin/sh" not in names
    assert es["new/link"].islnk() and es["new/link"].linkname == "new/file"
    assert es["new/file"].pax_headers["SCHILY.xattr.user.note"].encode("utf-8", "surrogateescape") \
        == b"\xff\x00binary"
    assert es["new/file"].uname == "" and es["new/file"].mtime == int(es["new/file"].mtime)
    long = "deep/" + "d" * 200 + "/" + "e" * 200 + "/f"
    assert long in names
    if snap.whiteouts == "overlay":
        assert "swap/.wh..wh..opq" in names and "swap/old" not in names
    else:
        assert "swap/.wh.old" in names
    # Pre-order, names in byte order: a directory comes before what is in it.
    order = [m.rstrip("/") for m in tarfile.open(fileobj=io.BytesIO(data)).getnames()]
    assert order.index("new") < order.index("new/file") < order.index("new/link")
    # Same tree, same bytes
    again, _ = await asyncio.to_thread(diff_bytes, source)
    assert hashlib.sha256(again).digest() == hashlib.sha256(data).digest()

    # The diff applied onto the parent gives the container's tree (less the init paths).
    diff_id = await unpack(snap, "child", "base", data)
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    await snap.view("v", "child")
    with mounted(await snap.mounts("v"), tmp_path / "v") as v:
        got = tree(v)
        assert os.getxattr(v / "new" / "file", "user.note") == b"\xff\x00binary"
        assert os.stat(v / "new" / "file").st_ino == os.stat(v / "new" / "link").st_ino
    skipped = {"dev", "dev/pts", "proc", "sys", ".dockerenv", "etc/hosts"}
    assert {k: v for k, v in want.items() if k not in skipped} == got
    await snap.remove("v")
    await snap.remove("c1")


async def test_untouched_container_is_an_empty_diff(snap: Snapshotter, tmp_path: Path) -> None:
    await unpack(snap, "base", None, BASE)
    await snap.prepare("c1", "base")
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        # only what a run leaves: mount points, /etc files
        (m / "proc").mkdir()
        (m / "etc" / "hostname").write_text("abc\n")
        (m / "etc" / "resolv.conf").write_text("nameserver 127.0.0.11\n")
    data, count = await asyncio.to_thread(diff_bytes, await diff_source(snap, "c1"))
    assert count == 0
    assert data == bytes(1024)
    await snap.remove("c1")


async def test_chmod_of_a_lower_dir_and_a_file_replacing_a_dir(snap: Snapshotter, tmp_path: Path) -> None:
    await unpack(snap, "base", None, BASE)
    await snap.prepare("c1", "base")
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        os.chmod(m / "bin", 0o700)
        shutil.rmtree(m / "keep")
        (m / "keep").write_bytes(b"now a file")
    data, _ = await asyncio.to_thread(diff_bytes, await diff_source(snap, "c1"))
    es = entries(data)
    assert es["bin"].isdir() and es["bin"].mode == 0o700
    assert "bin/sh" not in es
    assert es["keep"].isfile()
    await unpack(snap, "child", "base", data)
    await snap.view("v", "child")
    with mounted(await snap.mounts("v"), tmp_path / "v") as v:
        assert (v / "keep").read_bytes() == b"now a file"
        assert (v / "bin" / "sh").read_bytes() == b"shell"
    await snap.remove("v")
    await snap.remove("c1")


async def test_symlinked_dir_is_not_followed(snap: Snapshotter, tmp_path: Path) -> None:
    """A container's root may hold a symlink to a host path: the diff holds the link, never
    what it points at."""
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_bytes(b"do not read")
    await unpack(snap, "base", None, BASE)
    await snap.prepare("c1", "base")
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        (m / "escape").symlink_to(secret)
    data, _ = await asyncio.to_thread(diff_bytes, await diff_source(snap, "c1"))
    es = entries(data)
    assert es["escape"].issym() and es["escape"].linkname == str(secret)
    assert b"do not read" not in data
    await snap.remove("c1")


async def test_layer_committer(snap: Snapshotter, tmp_path: Path) -> None:
    """images/layercommit.py: the diff as a gzip blob in the content store (digests right) and a
    committed snapshot named by the chain ID, on inodes of its own."""
    import gzip

    from asyncdock.content.store import ContentStore
    from asyncdock.images.layercommit import GZIP_LAYER, LayerCommitter
    from asyncdock.images.store import chain_ids

    content = ContentStore(tmp_path / "content")
    base_id = "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert await unpack(snap, base_id, None, BASE) == base_id
    await snap.prepare("c1", base_id)
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        (m / "big").write_bytes(os.urandom(3 << 20))
        (m / "keep" / "edit").write_bytes(b"v2")
    committer = LayerCommitter(content, snap)
    new = await committer.commit("c1", base_id)
    assert new is not None
    blob = content.read_bytes(new.blob.digest)
    assert new.blob.media_type == GZIP_LAYER and new.blob.size == len(blob)
    tar = gzip.decompress(blob)
    assert new.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert new.chain_id == chain_ids([base_id, new.diff_id])[1]
    assert new.size == (3 << 20) + 2
    info = await snap.stat(new.chain_id)
    assert info.kind == "committed" and info.parent == base_id
    await snap.view("v", new.chain_id)
    with mounted(await snap.mounts("v"), tmp_path / "v") as v:
        assert (v / "keep" / "edit").read_bytes() == b"v2"
        assert (v / "bin" / "sh").read_bytes() == b"shell"
    # The container writes on: the committed layer does not change with it.
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        (m / "keep" / "edit").write_bytes(b"v3")
    with mounted(await snap.mounts("v"), tmp_path / "v") as v:
        assert (v / "keep" / "edit").read_bytes() == b"v2"
    # The same diff again: the same layer, the snapshot is reused
    await snap.prepare("c2", base_id)
    with mounted(await snap.mounts("c2"), tmp_path / "m2") as m:
        (m / "x").write_bytes(b"x")
        os.utime(m / "x", (1_600_000_000, 1_600_000_000))
    one = await committer.commit("c2", base_id)
    two = await committer.commit("c2", base_id)
    assert one is not None and one == two
    # Nothing changed: no layer, nothing left behind
    await snap.prepare("c3", base_id)
    before = {s.name for s in await snap.list()}
    assert await committer.commit("c3", base_id) is None
    assert {s.name for s in await snap.list()} == before
    assert content.list_ingests() == {}
    for k in ("v", "c1", "c2", "c3"):
        await snap.remove(k)


async def test_commit_without_snapshot_then_materialize(snap: Snapshotter, tmp_path: Path) -> None:
    """`docker commit`'s path: the blob only (snapshot="none"), the snapshot unpacked from it
    later (images/materialize.py), or by `ensure` when it is missing (a crash before the
    background unpack), and a blob that does not unpack to the diff ID is refused."""
    from asyncdock.base.errors import NotFound
    from asyncdock.content.store import ContentStore
    from asyncdock.images.layercommit import LayerCommitter
    from asyncdock.images.materialize import LayerMaterializer

    content = ContentStore(tmp_path / "content")
    base_id = "sha256:" + hashlib.sha256(BASE).hexdigest()
    await unpack(snap, base_id, None, BASE)
    await snap.prepare("c1", base_id)
    with mounted(await snap.mounts("c1"), tmp_path / "m") as m:
        (m / "keep" / "edit").write_bytes(b"v2")
        (m / "rmme").unlink()
    new = await LayerCommitter(content, snap).commit("c1", base_id, snapshot="none")
    assert new is not None
    assert not await snap.exists(new.chain_id)
    mat = LayerMaterializer(content, snap)
    mat.later(new.chain_id, base_id, new.blob.digest, new.blob.media_type, new.diff_id)
    await mat.settle(new.chain_id)
    assert (await snap.stat(new.chain_id)).parent == base_id

    def check(view: str) -> None:
        with mounted(snap_mounts[view], tmp_path / view) as v:
            assert (v / "keep" / "edit").read_bytes() == b"v2"
            assert not (v / "rmme").exists()

    snap_mounts = {"v1": await snap.view("v1", new.chain_id)}
    check("v1")
    await snap.remove("v1")
    # Lost (a crash before the unpack): ensure makes it again from the blob.
    await snap.remove(new.chain_id)
    chains = [base_id, new.chain_id]
    layers = [("sha256:" + "0" * 64, "application/x-tar"), (new.blob.digest, new.blob.media_type)]
    await mat.ensure(chains, layers, [base_id, new.diff_id])
    snap_mounts["v2"] = await snap.view("v2", new.chain_id)
    check("v2")
    await snap.remove("v2")
    # A blob that unpacks to another diff ID makes no snapshot; no blob at all is a clear error.
    await snap.remove(new.chain_id)
    with pytest.raises(ValueError, match="not the image's diff ID"):
        await mat.ensure(chains, layers, [base_id, "sha256:" + "1" * 64])
    assert not await snap.exists(new.chain_id)
    content.delete(new.blob.digest)
    with pytest.raises(NotFound, match="neither a snapshot nor a blob"):
        await mat.ensure(chains, layers, [base_id, new.diff_id])
    assert not [s.name for s in await snap.list() if s.name.startswith("materialize-")]
    await mat.close()
    await snap.remove("c1")


async def test_commit_adopts_a_scratch_snapshot(snap: Snapshotter, tmp_path: Path) -> None:
    """A build's COPY step (snapshot="adopt"): the scratch snapshot becomes the layer's, no copy."""
    import gzip

    from asyncdock.content.store import ContentStore
    from asyncdock.images.layercommit import LayerCommitter

    content = ContentStore(tmp_path / "content")
    base_id = "sha256:" + hashlib.sha256(BASE).hexdigest()
    await unpack(snap, base_id, None, BASE)
    await snap.prepare("build-x", base_id)
    with mounted(await snap.mounts("build-x"), tmp_path / "m") as m:
        (m / "files").mkdir()
        (m / "files" / "a").write_bytes(b"a")
    new = await LayerCommitter(content, snap).commit("build-x", base_id, snapshot="adopt")
    assert new is not None
    assert not await snap.exists("build-x")
    info = await snap.stat(new.chain_id)
    assert info.kind == "committed" and info.parent == base_id
    tar = gzip.decompress(content.read_bytes(new.blob.digest))
    assert new.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert "files/a" in entries(tar)
    await snap.view("v", new.chain_id)
    with mounted(await snap.mounts("v"), tmp_path / "v") as v:
        assert (v / "files" / "a").read_bytes() == b"a" and (v / "bin" / "sh").read_bytes() == b"shell"
    await snap.remove("v")
