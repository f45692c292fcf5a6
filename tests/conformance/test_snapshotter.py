"""The snapshotter conformance suite (containerd's SnapshotterSuite): every plugin of the
asyncdock.snapshotters group, built as the engine builds it (its `usable` check, its factory,
`cleanup()`), against the real kernel: the mounts it returns are mounted for real and read.

Each test has its own root under tmp_path; every mount is undone in a finally, and an autouse
fixture fails the test if anything is still mounted under its tmp dir afterwards.

What is specific to our two snapshotters (the metadata file's group commit and crash windows,
overlay's option strings) is in tests/integration/test_snapshotters.py.
"""
from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncdock.base.errors import Conflict, InvalidParameter, NotFound
from asyncdock.plugins import SNAPSHOTTERS, InitContext
from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.base import Mount, SnapshotInfo, Snapshotter
from asyncdock.snapshots.unpack import apply_layer
from tests.support.plugins import registered
from tests.support.snapshots import TAR, chain, layer, mounted, unpack

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="real mounts need root"),
]


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mnt.unmount_all_under(tmp_path)
    assert not left, f"test left mounts behind: {left}"


async def build(name: str, root: Path) -> Any:
    """As Engine._make_snapshotter: the factory (maybe a coroutine), then cleanup()."""
    snap = registered(SNAPSHOTTERS)[name].factory(InitContext(root=root))
    if asyncio.iscoroutine(snap):
        snap = await snap
    await snap.cleanup()
    return snap


@pytest.fixture(params=list(registered(SNAPSHOTTERS)))
async def snap(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Snapshotter]:
    reg = registered(SNAPSHOTTERS)[request.param]
    root = tmp_path / "root"
    if reg.usable is not None and not await asyncio.to_thread(reg.usable, tmp_path):
        pytest.skip(f"{request.param} is not usable here")
    s = await build(request.param, root)
    assert isinstance(s, Snapshotter) and s.name == request.param
    s.test_root = root  # type: ignore[attr-defined]
    yield s
    if hasattr(s, "close"):
        await s.close()


async def reopen(s: Snapshotter) -> Any:
    """A fresh instance on the same root, as after a daemon restart."""
    return await build(s.name, s.test_root)  # type: ignore[attr-defined]


def files_under(root: Path) -> set[str]:
    return {n for _, _, names in os.walk(root) for n in names}


# ---------------------------------------------------------------------------------------------


async def test_basic_prepare_commit_view(snap: Snapshotter, tmp_path: Path) -> None:
    m = await snap.prepare("a", None)
    assert m == [Mount("bind", str(snap.upper_dir("a")), ("rw", "rbind"))]
    with mounted(m, tmp_path / "mnt") as t:
        (t / "foo").write_text("from a")
        (t / "dir").mkdir()
    await snap.commit("A", "a")
    assert not await snap.exists("a")
    info = await snap.stat("A")
    assert (info.name, info.kind, info.parent) == ("A", "committed", None)

    m = await snap.prepare("b", "A")
    assert await snap.mounts("b") == m
    with mounted(m, tmp_path / "mnt") as t:
        assert (t / "foo").read_text() == "from a"
        (t / "foo").write_text("changed in b")
        (t / "dir" / "bar").write_text("bar")
    await snap.commit("B", "b")
    assert (await snap.stat("B")).parent == "A"

    v = await snap.view("v", "B")
    assert (await snap.stat("v")).kind == "view"
    with mounted(v, tmp_path / "view") as t:
        assert (t / "foo").read_text() == "changed in b"
        assert (t / "dir" / "bar").read_text() == "bar"
        with pytest.raises(OSError):
            (t / "new").write_text("views are read-only")
    # the committed parent was not touched by the child's writes
    with mounted(await snap.mounts("A"), tmp_path / "a-ro") as t:
        assert (t / "foo").read_text() == "from a" and not (t / "dir" / "bar").exists()
        with pytest.raises(OSError):
            (t / "new").write_text("committed snapshots are read-only")

    assert sorted((i.name, i.kind) for i in await snap.list()) == [
        ("A", "committed"), ("B", "committed"), ("v", "view")]


async def test_stat_active_and_committed(snap: Snapshotter) -> None:
    """StatActive / StatCommitted / StatInWalk: what stat says is what list says."""
    await snap.prepare("a", None)
    active = await snap.stat("a")
    assert isinstance(active, SnapshotInfo)
    assert (active.name, active.kind, active.parent) == ("a", "active", None)
    assert active.created > 0
    await snap.commit("A", "a")
    committed = await snap.stat("A")
    assert (committed.name, committed.kind, committed.parent) == ("A", "committed", None)
    await snap.prepare("b", "A")
    await snap.view("v", "A")
    assert ((await snap.stat("b")).kind, (await snap.stat("b")).parent) == ("active", "A")
    assert ((await snap.stat("v")).kind, (await snap.stat("v")).parent) == ("view", "A")
    listed = await snap.list()
    assert sorted(i.name for i in listed) == ["A", "b", "v"]
    for info in listed:
        assert info == await snap.stat(info.name)
        assert await snap.exists(info.name)
    assert not await snap.exists("a")


async def test_view_of_a_chain(snap: Snapshotter, tmp_path: Path) -> None:
    top = await chain(snap, [layer(("file", "one", "1")), layer(("file", "two", "2")),
                             layer(("file", "three", "3"))])
    assert [(await snap.stat(f"layer-{i}")).parent for i in range(3)] == [None, "layer-0", "layer-1"]
    v = await snap.view("v", top)
    with mounted(v, tmp_path / "v") as t:
        assert sorted(os.listdir(t)) == ["one", "three", "two"]


async def test_errors(snap: Snapshotter) -> None:
    await snap.prepare("a", None)
    with pytest.raises(Conflict):
        await snap.prepare("a", None)
    with pytest.raises(NotFound):
        await snap.prepare("b", "missing")
    with pytest.raises(InvalidParameter):
        await snap.prepare("b", "a")  # a parent must be committed
    await snap.commit("A", "a")
    with pytest.raises(NotFound):
        await snap.commit("A2", "a")  # the key is gone
    await snap.prepare("c", "A")
    await snap.prepare("d", None)
    with pytest.raises(Conflict):
        await snap.commit("A", "c")  # name taken
    await snap.view("v", "A")
    with pytest.raises(InvalidParameter):
        await snap.commit("V", "v")  # views are never committed
    with pytest.raises(NotFound):
        await snap.stat("nope")
    with pytest.raises(NotFound):
        await snap.remove("nope")
    with pytest.raises(NotFound):
        await snap.mounts("nope")
    with pytest.raises(NotFound):
        await snap.usage("nope")
    with pytest.raises(NotFound):
        snap.upper_dir("nope")
    assert not await snap.exists("nope")


async def test_remove_refuses_a_parent_with_children(snap: Snapshotter) -> None:
    """RemoveIntermediateSnapshot: a committed snapshot with a committed, view or active child
    stays; once the children are gone it goes, with its files."""
    await chain(snap, [layer(("file", "file-in-a", "a")), layer(("file", "file-in-b", "b"))])
    with pytest.raises(Conflict):
        await snap.remove("layer-0")
    await snap.view("v", "layer-1")
    with pytest.raises(Conflict):
        await snap.remove("layer-1")
    await snap.remove("v")
    await snap.prepare("c", "layer-1")
    with pytest.raises(Conflict):
        await snap.remove("layer-1")
    await snap.remove("c")
    await snap.remove("layer-1")
    await snap.remove("layer-0")
    assert await snap.list() == []
    assert not files_under(snap.test_root) & {"file-in-a", "file-in-b"}  # type: ignore[attr-defined]


async def test_remove_active(snap: Snapshotter) -> None:
    await snap.prepare("a", None)
    (snap.upper_dir("a") / "written-in-a").write_bytes(b"x")
    await snap.remove("a")
    assert not await snap.exists("a")
    assert "written-in-a" not in files_under(snap.test_root)  # type: ignore[attr-defined]
    await snap.prepare("a", None)  # the key can be used again
    assert list(snap.upper_dir("a").iterdir()) == []


async def test_usage(snap: Snapshotter) -> None:
    await snap.prepare("a", None)
    up = snap.upper_dir("a")
    assert await snap.usage("a") < 64 * 1024
    (up / "big").write_bytes(os.urandom(1 << 20))
    os.link(up / "big", up / "big-link")  # counted once
    used = await snap.usage("a")
    assert (1 << 20) <= used < (1 << 20) + 256 * 1024
    await snap.commit("A", "a")
    await snap.prepare("b", "A")
    # a child's usage is its own dir only (for copy: the copy it made)
    assert await snap.usage("b") < (64 * 1024 if snap.independent_layers else 2 << 20)


async def test_metadata_survives_a_restart(snap: Snapshotter, tmp_path: Path) -> None:
    top = await chain(snap, [layer(("file", "a", "a")), layer(("file", "b", "b"))])
    await snap.prepare("active", top)
    (snap.upper_dir("active") / "c").write_text("c")
    await snap.view("v", top)
    if hasattr(snap, "close"):
        await snap.close()
    again = await reopen(snap)  # with cleanup(), which must keep every live snapshot
    before = sorted((i.name, i.kind, i.parent) for i in await snap.list())
    assert sorted((i.name, i.kind, i.parent) for i in await again.list()) == before
    assert await again.mounts("active") == await snap.mounts("active")
    with mounted(await again.mounts("active"), tmp_path / "rootfs") as t:
        assert sorted(os.listdir(t)) == ["a", "b", "c"]
    with mounted(await again.mounts("v"), tmp_path / "v") as t:
        assert sorted(os.listdir(t)) == ["a", "b"]


async def test_close_twice(snap: Snapshotter) -> None:
    if not hasattr(snap, "close"):
        pytest.skip("no close()")
    await snap.prepare("a", None)
    await snap.remove("a")
    await snap.close()
    await snap.close()
    assert await (await reopen(snap)).list() == []


async def test_root_of_a_new_snapshot(snap: Snapshotter, tmp_path: Path) -> None:
    """RootPermission: the root of a fresh rootfs is 0755 whatever the umask (a container's /
    must be traversable by its non-root users)."""
    old = os.umask(0o077)
    try:
        m = await snap.prepare("a", None)
    finally:
        os.umask(old)
    with mounted(m, tmp_path / "mnt") as t:
        assert stat.S_IMODE(os.stat(t).st_mode) == 0o755


async def test_owner_and_mode_kept_through_commit(snap: Snapshotter, tmp_path: Path) -> None:
    """Chown / DirectoryPermissionOnCommit: owners and modes set in an active snapshot are what a
    child and a view of it see."""
    with mounted(await snap.prepare("a", None), tmp_path / "mnt") as t:
        (t / "dir").mkdir()
        os.chmod(t / "dir", 0o711)
        (t / "owned").write_text("x")
        os.chown(t / "owned", 1234, 5678)
        os.chmod(t / "owned", 0o4750)
        (t / "link").symlink_to("owned")
        os.lchown(t / "link", 42, 43)
    await snap.commit("A", "a")
    with mounted(await snap.prepare("b", "A"), tmp_path / "child") as t:
        st = os.stat(t / "owned")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4750)
        assert stat.S_IMODE(os.stat(t / "dir").st_mode) == 0o711
        assert (os.lstat(t / "link").st_uid, os.lstat(t / "link").st_gid) == (42, 43)
        os.chown(t / "owned", 1, 2)  # a child's chown of a lower file (overlay: copy-up)
    await snap.commit("B", "b")
    with mounted(await snap.view("v", "B"), tmp_path / "v") as t:
        st = os.stat(t / "owned")
        assert (st.st_uid, st.st_gid) == (1, 2) and (t / "owned").read_text() == "x"
    with mounted(await snap.view("va", "A"), tmp_path / "va") as t:
        assert os.stat(t / "owned").st_uid == 1234  # the lower layer is unchanged


async def test_rename_and_remove_lower_files_in_a_child(snap: Snapshotter, tmp_path: Path) -> None:
    """MoveFileFromLowerLayer / RemoveDirectoryInLowerLayer, done through the mount of an active
    child (as a container does), committed, then seen through a view. Renaming a directory of
    a lower layer is not checked: overlay without redirect_dir answers EXDEV (tools then copy),
    which containerd's suite also leaves out."""
    base = layer(("dir", "d", ""), ("file", "d/f", "f"), ("file", "moved", "m"),
                 ("dir", "gone", ""), ("file", "gone/x", "x"), ("file", "kept", "k"))
    await chain(snap, [base])
    with mounted(await snap.prepare("c", "layer-0"), tmp_path / "c") as t:
        os.rename(t / "moved", t / "d" / "moved-here")
        os.rename(t / "d" / "f", t / "d" / "f2")
        (t / "gone" / "x").unlink()
        (t / "gone").rmdir()
        assert sorted(os.listdir(t)) == ["d", "kept"]
    await snap.commit("C", "c")
    with mounted(await snap.view("v", "C"), tmp_path / "v") as t:
        assert sorted(os.listdir(t)) == ["d", "kept"]
        assert sorted(os.listdir(t / "d")) == ["f2", "moved-here"]
        assert (t / "d" / "moved-here").read_text() == "m"
        assert (t / "d" / "f2").read_text() == "f"
    with mounted(await snap.view("v0", "layer-0"), tmp_path / "v0") as t:
        assert sorted(os.listdir(t)) == ["d", "gone", "kept", "moved"]


async def test_deleted_files_and_opaque_dirs_in_children(snap: Snapshotter, tmp_path: Path) -> None:
    """DeletedFilesInChildSnapshot: whiteouts and opaque dirs of a layer, written the way the
    snapshotter asks for (`whiteouts`), hide what lower layers hold."""
    bottom = layer(("dir", "etc", ""), ("file", "etc/passwd", "root:x:0:0"), ("file", "etc/hosts", "h"),
                   ("dir", "var", ""), ("dir", "var/lib", ""), ("dir", "var/lib/app", ""),
                   ("file", "var/lib/app/old1", "1"), ("dir", "var/lib/app/sub", ""),
                   ("file", "var/lib/app/sub/old2", "2"), ("symlink", "lib", "var/lib"))
    middle = layer(("dir", "etc", ""), ("file", "etc/.wh.passwd", b""), ("file", "etc/motd", "hi"))
    top = layer(("dir", "var/lib/app", ""), ("file", "var/lib/app/.wh..wh..opq", b""),
                ("file", "var/lib/app/new", "n"), ("file", "etc/hosts", "h2"))
    name = await chain(snap, [bottom, middle, top])
    m = await snap.prepare("rootfs", name)
    with mounted(m, tmp_path / "rootfs") as t:
        assert sorted(os.listdir(t / "etc")) == ["hosts", "motd"]
        assert (t / "etc/hosts").read_text() == "h2"
        assert os.listdir(t / "var/lib/app") == ["new"]
        assert os.readlink(t / "lib") == "var/lib"
        # no whiteout artefacts leak into the merged view
        for dirpath, dirnames, filenames in os.walk(t):
            for n in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, n))
                assert not n.startswith(".wh."), n
                assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0), n
        # the container can still write, and delete what lower layers hold
        (t / "etc/hosts").unlink()
        (t / "var/lib/app/new2").write_text("x")
        assert sorted(os.listdir(t / "var/lib/app")) == ["new", "new2"]
    # the image's layers are untouched by the container's changes
    v = await snap.view("check", name)
    with mounted(v, tmp_path / "check") as t:
        assert (t / "etc/hosts").read_text() == "h2"


async def test_layers_unpacked_in_parallel_then_rebased(snap: Snapshotter, tmp_path: Path) -> None:
    blobs = [layer(("file", "shared", f"v{i}"), ("file", f"only-{i}", str(i))) for i in range(4)]
    if snap.independent_layers:
        # the pull's parallel path: all extracted at once, each without its parent
        keys = [f"x{i}" for i in range(4)]
        await asyncio.gather(*(snap.prepare(k, None) for k in keys))
        await asyncio.gather(*(asyncio.to_thread(apply_layer, io.BytesIO(b), snap.upper_dir(k),
                                                 whiteouts=snap.whiteouts, media_type=TAR)
                               for k, b in zip(keys, blobs)))
        parent = None
        for i, k in enumerate(keys):
            await snap.commit(f"L{i}", k, parent=parent)
            parent = f"L{i}"
    else:
        await chain(snap, blobs)
        parent = "layer-3"
    assert (await snap.stat(parent)).parent == parent[:-1] + "2"
    with mounted(await snap.view("v", parent), tmp_path / "v") as t:
        assert (t / "shared").read_text() == "v3"
        assert sorted(os.listdir(t)) == ["only-0", "only-1", "only-2", "only-3", "shared"]


async def test_concurrent_prepares(snap: Snapshotter, tmp_path: Path) -> None:
    """Many containers created at once on one image: each gets its own writable snapshot; of
    concurrent prepares of one key exactly one wins."""
    await unpack(snap, "base", None, layer(("file", "f", "base")))
    keys = [f"c{i}" for i in range(12)]
    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(snap.prepare, k, "base")
    uppers = {snap.upper_dir(k) for k in keys}
    assert len(uppers) == len(keys)
    for k in keys[:3]:
        with mounted(await snap.mounts(k), tmp_path / k) as t:
            assert (t / "f").read_text() == "base"
            (t / "f").write_text(k)
    for k in keys[:3]:
        with mounted(await snap.mounts(k), tmp_path / k) as t:
            assert (t / "f").read_text() == k

    outcomes: list[str] = []

    async def one(k: str) -> None:
        try:
            await snap.prepare(k, "base")
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one, "same")
    assert sorted(outcomes) == ["conflict"] * 4 + ["ok"]
    assert sorted(i.name for i in await snap.list()) == sorted(["base", "same", *keys])
    async with anyio.create_task_group() as tg:
        for k in [*keys, "same"]:
            tg.start_soon(snap.remove, k)
    assert [i.name for i in await snap.list()] == ["base"]


async def test_cleanup_keeps_what_is_in_use(snap: Snapshotter, tmp_path: Path) -> None:
    """cleanup() at start-up drops only the snapshotter's own leftovers: never a snapshot, even
    one being created right now."""
    await unpack(snap, "base", None, layer(("file", "f", "base")))
    await snap.prepare("a", "base")

    async def prepare_b() -> None:
        await snap.prepare("b", "base")

    async with anyio.create_task_group() as tg:
        tg.start_soon(prepare_b)
        tg.start_soon(snap.cleanup)
    for k in ("a", "b"):
        with mounted(await snap.mounts(k), tmp_path / k) as t:
            assert (t / "f").read_text() == "base"


async def _check_128_layers(snap: Snapshotter, tmp_path: Path) -> None:
    blobs = [layer(("file", f"layer-{i:03d}", str(i)), ("file", "common", str(i))) for i in range(128)]
    top = await chain(snap, blobs)
    m = await snap.prepare("container", top)
    with mounted(m, tmp_path / "rootfs") as t:
        assert (t / "layer-000").read_text() == "0"
        assert (t / "layer-127").read_text() == "127"
        assert (t / "common").read_text() == "127"
        assert len(os.listdir(t)) == 129
        (t / "written").write_text("rw")
    assert (snap.upper_dir("container") / "written").read_text() == "rw"


async def test_128_layers_mount(snap: Snapshotter, tmp_path: Path) -> None:
    await _check_128_layers(snap, tmp_path)
