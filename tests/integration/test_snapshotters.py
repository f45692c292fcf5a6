"""One conformance suite for every snapshotter (containerd's SnapshotterSuite idea), run against
the real kernel: real overlay and bind mounts, real layer tars through apply_layer.

Every mount a test makes is undone in a finally; an autouse fixture fails the test if anything
is still mounted under its tmp dir afterwards.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncdock.errors import Conflict, InvalidParameter, NotFound
from asyncdock.plugins import SNAPSHOTTERS, InitContext, discover
from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.base import Mount, Snapshotter
from asyncdock.snapshots.unpack import apply_layer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="real mounts need root"),
]

TAR = "application/vnd.oci.image.layer.v1.tar"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mnt.unmount_all_under(tmp_path)
    assert not left, f"test left mounts behind: {left}"


@pytest.fixture(params=["overlayfs", "copy"])
def snap(request: pytest.FixtureRequest, tmp_path: Path) -> Snapshotter:
    name = request.param
    if name == "overlayfs":
        import asyncdock_snapshotter_overlay

        if not asyncdock_snapshotter_overlay.supported(tmp_path):
            pytest.skip("overlayfs not usable here")
    reg = discover(SNAPSHOTTERS)[name]
    s = reg.factory(InitContext(root=tmp_path / "root"))
    assert isinstance(s, Snapshotter)
    return s


def reopen(s: Snapshotter) -> Any:
    """A fresh instance on the same root, as after a daemon restart."""
    return discover(SNAPSHOTTERS)[s.name].factory(InitContext(root=s.root))  # type: ignore[attr-defined]


@contextlib.contextmanager
def mounted(mounts: list[Mount], target: Path) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    mnt.mount(mounts, target)
    try:
        yield target
    finally:
        mnt.unmount(target)


def layer(*entries: tuple[str, str, bytes | str]) -> bytes:
    """Entries: ("dir", name, ""), ("file", name, data), ("symlink", name, target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, arg in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif kind == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(arg)
                tf.addfile(ti)
            else:
                data = arg.encode() if isinstance(arg, str) else arg
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


async def unpack(s: Snapshotter, name: str, parent: str | None, blob: bytes) -> str:
    """The unpacker's protocol: prepare (without the parent when layers are independent),
    extract into the upper dir, commit with the real parent."""
    key = f"extract-{name}"
    await s.prepare(key, None if s.independent_layers else parent)
    diff_id = await asyncio.to_thread(apply_layer, io.BytesIO(blob), s.upper_dir(key),
                                      whiteouts=s.whiteouts, media_type=TAR)
    await s.commit(name, key, parent=parent)
    return diff_id


async def chain(s: Snapshotter, blobs: list[bytes]) -> str:
    parent = None
    for i, blob in enumerate(blobs):
        await unpack(s, f"layer-{i}", parent, blob)
        parent = f"layer-{i}"
    assert parent is not None
    return parent


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

    assert sorted((i.name, i.kind) for i in await snap.list()) == [
        ("A", "committed"), ("B", "committed"), ("v", "view")]


async def test_view_of_a_chain(snap: Snapshotter, tmp_path: Path) -> None:
    top = await chain(snap, [layer(("file", "one", "1")), layer(("file", "two", "2")),
                             layer(("file", "three", "3"))])
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
        snap.upper_dir("nope")


async def test_remove_refuses_a_parent_with_children(snap: Snapshotter) -> None:
    await chain(snap, [layer(("file", "a", "a")), layer(("file", "b", "b"))])
    with pytest.raises(Conflict):
        await snap.remove("layer-0")
    await snap.view("v", "layer-1")
    with pytest.raises(Conflict):
        await snap.remove("layer-1")
    await snap.remove("v")
    await snap.remove("layer-1")
    await snap.remove("layer-0")
    assert await snap.list() == []
    # and their directories are gone
    assert list((snap.root / "snapshots").iterdir()) == []  # type: ignore[attr-defined]


async def test_remove_active(snap: Snapshotter) -> None:
    await snap.prepare("a", None)
    (snap.upper_dir("a") / "f").write_bytes(b"x")
    await snap.remove("a")
    assert not await snap.exists("a")


async def test_removals_of_committed_snapshots_and_views_are_on_disk_on_return(snap: Snapshotter) -> None:
    """Only an active snapshot's removal waits for the next metadata write: a layer or a view
    that is gone must stay gone after a crash (a pull would otherwise trust a layer whose
    directory was deleted)."""
    await chain(snap, [layer(("file", "a", "a"))])
    await snap.view("v", "layer-0")
    await snap.remove("v")
    assert [i.name for i in await reopen(snap).list()] == ["layer-0"]
    await snap.remove("layer-0")
    assert await reopen(snap).list() == []


async def test_removed_active_snapshot_left_in_metadata_by_a_crash_can_be_removed(snap: Snapshotter) -> None:
    """A crash after an active snapshot's removal (directory gone, metadata not yet written):
    the next instance still lists it, and its owner's removal at start-up succeeds and sticks."""
    await snap.prepare("a", None)
    await snap.prepare("b", None)
    await snap.remove("a")  # written with nothing: as if the daemon died now
    after = reopen(snap)
    await after.cleanup()
    assert sorted(i.name for i in await after.list()) == ["a", "b"]
    await after.remove("a")
    await after.close()
    assert [i.name for i in await reopen(snap).list()] == ["b"]


async def test_concurrent_changes_share_metadata_writes(snap: Snapshotter,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: while one metadata write is in flight, every change made meanwhile goes to
    disk in the next single write. The first write is held until all 30 concurrent prepares
    (then 20 removals) have made their change, so at most two writes happen; each prepare
    returns only once its change is on disk. Removals of active snapshots write nothing of
    their own: their directories go at once, the metadata with close() (or the next write).
    A fresh instance (as after a restart) reads exactly the final state."""
    import threading

    import asyncdock_snapshotter_overlay.dirstore as dirstore

    writes: list[int] = []
    real_write = dirstore.atomic_write_json
    real_apply = type(snap)._apply
    hold = threading.Event()
    state = {"applied": 0, "expect": 0}

    def counting(path: Any, obj: Any, **kw: Any) -> None:
        if not writes:
            hold.wait(30)  # the first write of a round waits for the round's other changes
        writes.append(len(obj.snapshots))
        real_write(path, obj, **kw)

    def applying(self: Any, meta: Any) -> int:
        version = real_apply(self, meta)
        state["applied"] += 1
        if state["applied"] == state["expect"]:
            hold.set()
        return version

    monkeypatch.setattr(dirstore, "atomic_write_json", counting)
    monkeypatch.setattr(type(snap), "_apply", applying)
    keys = [f"c{i}" for i in range(30)]

    async def prepare_and_check(key: str) -> None:
        await snap.prepare(key, None)
        assert key in {i.name for i in await reopen(snap).list()}  # on disk on return

    state.update(applied=0, expect=len(keys))
    async with anyio.create_task_group() as tg:
        for k in keys:
            tg.start_soon(prepare_and_check, k)
    assert sorted(i.name for i in await reopen(snap).list()) == sorted(keys)
    assert len(writes) <= 2 and writes[-1] == len(keys)  # instead of one write per change
    writes.clear()
    hold.clear()
    state.update(applied=0, expect=20)
    async with anyio.create_task_group() as tg:
        for k in keys[:20]:
            tg.start_soon(snap.remove, k)
    assert writes == []
    assert sorted(i.name for i in await snap.list()) == sorted(keys[20:])
    assert sorted(i.name for i in await reopen(snap).list()) == sorted(keys)  # not on disk yet
    await snap.close()  # type: ignore[attr-defined]
    assert writes == [10]
    assert sorted(i.name for i in await reopen(snap).list()) == sorted(keys[20:])
    assert sorted(p.name for p in (snap.root / "snapshots").iterdir()) == sorted(  # type: ignore[attr-defined]
        str(snap._meta.snapshots[k].id) for k in keys[20:])  # type: ignore[attr-defined]


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


async def test_metadata_survives_a_restart_and_cleanup(snap: Snapshotter) -> None:
    top = await chain(snap, [layer(("file", "a", "a")), layer(("file", "b", "b"))])
    await snap.prepare("active", top)
    snaps = snap.root / "snapshots"  # type: ignore[attr-defined]
    for stray in ("new-deadbeef", "rm-7-abc", "9999"):  # what a crash can leave
        (snaps / stray / "fs").mkdir(parents=True)
    again = reopen(snap)
    before = sorted((i.name, i.kind, i.parent) for i in await snap.list())
    assert sorted((i.name, i.kind, i.parent) for i in await again.list()) == before
    await again.cleanup()
    assert not [p.name for p in snaps.iterdir() if not p.name.isdigit() or p.name == "9999"]
    assert await again.mounts("active") == await snap.mounts("active")
    assert (again.upper_dir("layer-0") / "a").read_text() == "a"


async def test_deleted_files_and_opaque_dirs_in_children(snap: Snapshotter, tmp_path: Path) -> None:
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


async def _check_128_layers(snap: Snapshotter, tmp_path: Path) -> None:
    blobs = [layer(("file", f"layer-{i:03d}", str(i)), ("file", "common", str(i))) for i in range(128)]
    top = await chain(snap, blobs)
    m = await snap.prepare("container", top)
    if snap.independent_layers:
        (lower,) = [o for o in m[0].options if o.startswith("lowerdir=")]
        assert lower.count(":") == 127  # top-down chain of all 128 layers
    with mounted(m, tmp_path / "rootfs") as t:
        assert (t / "layer-000").read_text() == "0"
        assert (t / "layer-127").read_text() == "127"
        assert (t / "common").read_text() == "127"
        assert len(os.listdir(t)) == 129
        (t / "written").write_text("rw")
    assert (snap.upper_dir("container") / "written").read_text() == "rw"


async def test_128_layers_mount(snap: Snapshotter, tmp_path: Path) -> None:
    await _check_128_layers(snap, tmp_path)


async def test_128_layers_mount_with_relative_lowerdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for kernels without `lowerdir+`: relative paths from a common parent."""
    import asyncdock_snapshotter_overlay

    if not asyncdock_snapshotter_overlay.supported(tmp_path):
        pytest.skip("overlayfs not usable here")
    monkeypatch.setattr(mnt, "_lowerdir_plus", False)
    snap = discover(SNAPSHOTTERS)["overlayfs"].factory(InitContext(root=tmp_path / "root"))
    await _check_128_layers(snap, tmp_path)


async def test_overlay_mount_shapes(tmp_path: Path) -> None:
    import asyncdock_snapshotter_overlay as ov

    s = ov.OverlaySnapshotter(tmp_path / "root")
    assert s.independent_layers and s.whiteouts == "overlay"
    top = await chain(s, [layer(("file", "a", "a")), layer(("file", "b", "b"))])
    (m,) = await s.prepare("c", top)
    assert (m.type, m.source) == ("overlay", "overlay")
    fs = [str(s.upper_dir(n)) for n in ("layer-1", "layer-0")]
    assert m.options[:3] == (f"lowerdir={fs[0]}:{fs[1]}", f"upperdir={s.upper_dir('c')}",
                             f"workdir={s.upper_dir('c').parent / 'work'}")
    # short ids keep the option string small
    assert s.upper_dir("c").relative_to(s.root) == Path("snapshots/3/fs")
    assert await s.view("v1", "layer-0") == [Mount("bind", fs[1], ("ro", "rbind"))]
    (v2,) = await s.view("v2", top)
    assert v2.type == "overlay" and v2.options[0] == f"lowerdir={fs[0]}:{fs[1]}"
    assert not any(o.startswith(("upperdir", "workdir")) for o in v2.options)


# ---------------------------------------------------------------------------------------------
# the mount helpers themselves


def test_mount_helpers_handle_escaped_paths_and_stacks(tmp_path: Path) -> None:
    src = tmp_path / "src dir\twith\\odd chars"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("f")
    target = tmp_path / "tar get"
    target.mkdir()
    assert not mnt.is_mounted(target)
    mnt.unmount(target)  # nothing mounted: not an error
    try:
        mnt.mount([Mount("bind", str(src), ("ro", "rbind"))], target)
        assert mnt.is_mounted(target)  # mountinfo's \040 / \011 / \134 escapes decoded
        assert (target / "f").read_text() == "f"
        with pytest.raises(OSError):
            (target / "g").write_text("read-only bind")
        # a second mount stacked on top, and a submount below it
        mnt.mount([Mount("bind", str(src / "sub"), ("rw", "rbind"))], target)
        (target / "x").mkdir()
        mnt.mount([Mount("bind", str(src), ("rw", "rbind"))], target / "x")
        assert mnt.is_mounted(target / "x")
    finally:
        done = mnt.unmount_all_under(tmp_path)
    assert len(done) == 3 and done[0] == str(target / "x")
    assert not mnt.is_mounted(target)
    assert (src / "sub" / "x").is_dir()  # the dir was made through the rw mount


def test_failed_mount_raises_with_the_reason(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(mnt.MountError) as ei:
        mnt.mount([Mount("overlay", "overlay", (f"lowerdir={tmp_path / 'missing'}",))], target)
    assert ei.value.errno is not None and not mnt.is_mounted(target)
