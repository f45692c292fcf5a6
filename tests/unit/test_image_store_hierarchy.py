"""ImageStore with local parents (ImageRecord.parent), as dockerd's classic image store treats
them (daemon/images/image_delete.go, image_prune.go): a parent with children cannot go, a
deleted child takes its untagged, unused parents with it, prune skips intermediates and frees
them through their children. Images are made with tests/support/imagetree.py over a real
content store and overlay snapshotter directory (no mounts)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from asyncdock.base.errors import Conflict
from asyncdock.content.store import ContentStore
from asyncdock.images.store import ImageRecord, ImageStore, ImageUse
from asyncdock_snapshotter_overlay import OverlaySnapshotter
from tests.support.imagetree import make_image

T = TypeVar("T")


class Tree:
    """base (tagged `base`) <- mid (untagged, new layer) <- top (tagged `app`, new layer)."""

    def __init__(self, root: Path) -> None:
        self.snap = OverlaySnapshotter(root / "snap", durable=False)
        self.content = ContentStore(root / "content")
        self.users: dict[str, list[ImageUse]] = {}
        self.store = ImageStore(root / "images", self.content, self.snap,
                                in_use=lambda image_id: self.users.get(image_id, []))

    async def chain(self, *, tag_base: bool = True) -> tuple[ImageRecord, ImageRecord, ImageRecord]:
        base = await make_image(self.store, None, step="ADD base /", created="2024-01-01T00:00:00Z",
                                tag="base" if tag_base else "")
        mid = await make_image(self.store, base, step="RUN make mid", created="2024-01-02T00:00:00Z",
                               files={"mid": b"m" * 300})
        top = await make_image(self.store, mid, step="COPY top /", created="2024-01-03T00:00:00Z",
                               files={"top": b"t" * 50}, tag="app")
        return base, mid, top


def run(tmp_path: Path, body: Callable[[Tree], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(Tree(tmp_path))
    return asyncio.run(main())


def test_children_heads_and_dangling(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain()
        s = t.store
        assert [c.id for c in s.children(base.id)] == [mid.id] and s.children(top.id) == []
        assert {h.id for h in s.heads()} == {top.id}
        # mid has no reference but a child: an intermediate, not dangling
        assert s.is_intermediate(mid.id) and not s.is_dangling(mid.id)
        assert not s.is_intermediate(base.id)  # tagged
        await s.untag("app")
        assert s.is_dangling(top.id) and not s.is_intermediate(top.id)
        # the parent link survives a restart
        again = ImageStore(s.root, t.content, t.snap)
        assert again.get(top.id).parent == mid.id and again.get(mid.id).parent == base.id

    run(tmp_path, body)


def test_a_parent_with_children_cannot_be_deleted(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain()
        for force in (False, True):
            with pytest.raises(Conflict) as exc:
                await t.store.delete(mid.id[7:19], force=force)
            assert str(exc.value) == (f"conflict: unable to delete {mid.id[7:19]} (cannot be forced) - "
                                      "image has dependent child images")
            assert exc.value.status == 409
        # by its tag: the tag goes, the image stays (an intermediate now), quietly
        assert await t.store.delete("base") == [{"Untagged": "base:latest"}]
        assert t.store.find(base.id) is not None and t.store.is_intermediate(base.id)
        with pytest.raises(Conflict, match="image has dependent child images"):
            await t.store.delete(base.id, force=True)

    run(tmp_path, body)


def test_deleting_a_child_walks_up_its_untagged_parents(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain(tag_base=False)
        out = await t.store.delete("app")
        # moby's imageDeleteHelper: each image, then its removed layers, then its parent
        assert out == [{"Untagged": "app:latest"}, {"Deleted": top.id}, {"Deleted": top.chain_ids[2]},
                       {"Deleted": mid.id}, {"Deleted": mid.chain_ids[1]},
                       {"Deleted": base.id}, {"Deleted": base.chain_ids[0]}]
        assert t.store.list() == [] and await t.snap.list() == []

    run(tmp_path, body)


def test_the_parent_walk_stops_at_a_tag_a_sibling_or_a_container(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain()
        sibling = await make_image(t.store, mid, step="ENV X=1", created="2024-01-04T00:00:00Z", tag="sib")
        out = await t.store.delete("app")
        assert out == [{"Untagged": "app:latest"}, {"Deleted": top.id}, {"Deleted": top.chain_ids[2]}]
        assert t.store.find(mid.id) is not None  # sib is its child still
        # sib has no layer of its own; mid now goes with it, base is tagged and stays
        out = await t.store.delete("sib")
        assert out == [{"Untagged": "sib:latest"}, {"Deleted": sibling.id}, {"Deleted": mid.id},
                       {"Deleted": mid.chain_ids[1]}]
        assert [r.id for r in t.store.list()] == [base.id]
        # a stopped container on the parent ends the walk too
        base2, mid2, top2 = await t.chain(tag_base=False)
        t.users[mid2.id] = [ImageUse("c" * 64)]
        out = await t.store.delete("app")
        assert [r.get("Deleted") for r in out if "Deleted" in r] == [top2.id, top2.chain_ids[2]]
        assert t.store.find(mid2.id) is not None and t.store.find(base2.id) is not None

    run(tmp_path, body)


def test_noprune_keeps_the_parents(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain(tag_base=False)
        out = await t.store.delete("app", noprune=True)
        assert out == [{"Untagged": "app:latest"}, {"Deleted": top.id}, {"Deleted": top.chain_ids[2]}]
        # mid is now a plain dangling image, base its parent
        assert t.store.is_dangling(mid.id) and t.store.is_intermediate(base.id)

    run(tmp_path, body)


def test_prune_dangling_skips_intermediates_and_frees_them_with_their_child(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain(tag_base=False)
        # the only untagged images are intermediates: nothing to prune
        report = await t.store.prune()
        assert report.deleted == [] and report.reclaimed == 0
        await t.store.untag("app")
        report = await t.store.prune()
        assert report.deleted == [{"Deleted": top.id}, {"Deleted": top.chain_ids[2]}, {"Deleted": mid.id},
                                  {"Deleted": mid.chain_ids[1]}, {"Deleted": base.id},
                                  {"Deleted": base.chain_ids[0]}]
        # the layers removed: 50 + 300 + 4 bytes
        assert report.reclaimed == sum(top.layer_sizes)
        assert t.store.list() == []

    run(tmp_path, body)


def test_prune_all_until_and_labels(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        base, mid, top = await t.chain()
        labelled = await make_image(t.store, base, step="LABEL a=b", created="2024-02-01T00:00:00Z",
                                    labels={"a": "b"}, tag="labelled")
        # until before mid's creation: only base qualifies; as in dockerd, -a goes by its tag,
        # which is removed, and the image stays for its children
        report = await t.store.prune(dangling_only=False, until_ns=mid.created_ns - 1)
        assert report.deleted == [{"Untagged": "base:latest"}] and report.reclaimed == 0
        assert t.store.find(base.id) is not None and t.store.is_intermediate(base.id)
        # label a=b: only `labelled` (no layer of its own: nothing reclaimed); base stays for mid
        report = await t.store.prune(dangling_only=False, label_filter=lambda lbl: lbl.get("a") == "b")
        assert report.deleted == [{"Untagged": "labelled:latest"}, {"Deleted": labelled.id}]
        assert report.reclaimed == 0 and t.store.find(base.id) is not None
        # -a: app goes, and its parents with it
        report = await t.store.prune(dangling_only=False)
        deleted = [r["Deleted"] for r in report.deleted if "Deleted" in r]
        assert set(deleted) == {top.id, mid.id, base.id, *top.chain_ids}
        assert report.reclaimed == sum(top.layer_sizes) and t.store.list() == []

    run(tmp_path, body)


def test_prune_refuses_a_second_prune_at_once(tmp_path: Path) -> None:
    async def body(t: Tree) -> None:
        await t.chain()
        gate = asyncio.Event()

        async def settled() -> None:
            await gate.wait()

        t.store.set_in_use(lambda image_id: [], settled)
        first = asyncio.create_task(t.store.prune(dangling_only=False))
        while not t.store._pruning:  # noqa: SLF001 - the task has not started yet
            await asyncio.sleep(0)
        with pytest.raises(Conflict, match="a prune operation is already running"):
            await t.store.prune()
        gate.set()
        assert (await first).deleted

    run(tmp_path, body)
