"""What is specific to our snapshotters, beyond the conformance suite every snapshotter passes
(tests/conformance/test_snapshotter.py): the shared metadata store's crash windows and group
commit (dirstore.py, under both overlayfs and copy), overlay's mount options (short ids,
lowerdir fallbacks), and the mount helpers themselves. Real kernel, real mounts.

Every mount a test makes is undone in a finally; an autouse fixture fails the test if anything
is still mounted under its tmp dir afterwards.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncdock.plugins import SNAPSHOTTERS, InitContext, discover
from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.base import Mount, Snapshotter
from tests.support.snapshots import chain, layer, mounted

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="real mounts need root"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    yield
    left = mnt.unmount_all_under(tmp_path)
    assert not left, f"test left mounts behind: {left}"


# the two plugins built on dirstore.py
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


# ---------------------------------------------------------------------------------------------


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

    import asyncdock.snapshots.dirstore as dirstore

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


async def test_128_layers_mount_with_relative_lowerdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback for kernels without `lowerdir+`: relative paths from a common parent."""
    import asyncdock_snapshotter_overlay

    if not asyncdock_snapshotter_overlay.supported(tmp_path):
        pytest.skip("overlayfs not usable here")
    monkeypatch.setattr(mnt, "_lowerdir_plus", False)
    snap = discover(SNAPSHOTTERS)["overlayfs"].factory(InitContext(root=tmp_path / "root"))
    blobs = [layer(("file", f"layer-{i:03d}", str(i)), ("file", "common", str(i))) for i in range(128)]
    top = await chain(snap, blobs)
    m = await snap.prepare("container", top)
    (lower,) = [o for o in m[0].options if o.startswith("lowerdir=")]
    assert lower.count(":") == 127  # top-down chain of all 128 layers
    with mounted(m, tmp_path / "rootfs") as t:
        assert (t / "layer-000").read_text() == "0"
        assert (t / "layer-127").read_text() == "127"
        assert (t / "common").read_text() == "127"
        assert len(os.listdir(t)) == 129
        (t / "written").write_text("rw")
    assert (snap.upper_dir("container") / "written").read_text() == "rw"


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
