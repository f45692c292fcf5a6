"""ImageStore: Docker's resolve and delete rules (rmi.md, errors.md), tags, prune, persistence.

Images are made by hand: a config blob in a real content store and empty layer snapshots in a
real (directory) snapshotter, no registry and no mounts needed."""
from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from asyncdock.base.timefmt import parse_docker_time
from asyncdock.content.store import ContentStore
from asyncdock.base.errors import Conflict, InvalidParameter, NotFound
from asyncdock.events import EventBus
from asyncdock.images.store import ImageRecord, ImageStore, ImageUse, LayerBlob, chain_ids
from asyncdock.registry.reference import parse_normalized
from asyncdock_snapshotter_overlay import OverlaySnapshotter

T = TypeVar("T")
REG = "127.0.0.1:5000/library/busybox"


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.content = ContentStore(root / "content")
        self.snap = OverlaySnapshotter(root / "snap", durable=False)
        self.bus = EventBus()
        self.users: dict[str, list[ImageUse]] = {}
        self.store = self.open()

    def open(self) -> ImageStore:
        return ImageStore(self.root / "images", self.content, self.snap, bus=self.bus,
                          in_use=lambda image_id: self.users.get(image_id, []))

    async def image(self, name: str, layers: list[bytes], labels: dict[str, str] | None = None,
                    created: str = "2024-01-01T00:00:00Z") -> ImageRecord:
        diff_ids = ["sha256:" + hashlib.sha256(b"diff" + x).hexdigest() for x in layers]
        blobs = [self.content.put(b"blob" + x) for x in layers]
        cfg = {"architecture": "amd64", "os": "linux", "created": created,
               "config": {"Labels": labels} if labels else {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        image_id = self.content.put(json.dumps(cfg).encode())
        chains = chain_ids(diff_ids)
        for i, chain in enumerate(chains):
            if not await self.snap.exists(chain):
                key = f"k-{chain[7:19]}"
                await self.snap.prepare(key, None)
                (self.snap.upper_dir(key) / "f").write_bytes(b"x" * 5000)
                await self.snap.commit(chain, key, parent=chains[i - 1] if i else None)
        rec = ImageRecord(id=image_id, diff_ids=diff_ids,
                          layers=[LayerBlob(b, "application/vnd.oci.image.layer.v1.tar+gzip", 10) for b in blobs],
                          layer_sizes=[1000] * len(layers), created=created, created_ns=parse_docker_time(created))
        await self.store.add(rec)
        manifest = self.content.put(b"manifest-" + name.encode())
        ref = parse_normalized(name).with_default_tag()
        await self.store.set_reference(ref, image_id)
        await self.store.set_reference(ref.trimmed().with_digest(manifest), image_id)
        return rec


def run(tmp_path: Path, body: Callable[[World], Awaitable[T]]) -> T:
    async def main() -> T:
        return await body(World(tmp_path))
    return asyncio.run(main())


def test_resolve_forms_and_errors(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        rec = await w.image(REG, [b"a"])
        s = w.store
        for name in (REG, f"{REG}:latest", rec.id, rec.id[7:], rec.id[7:19], rec.id[:15],
                     s.repo_digests(rec.id)[0]):
            assert s.resolve(name).id == rec.id, name
        with pytest.raises(NotFound) as exc:
            s.resolve("nosuch")
        assert str(exc.value) == "No such image: nosuch:latest"
        with pytest.raises(NotFound, match=r"^No such image: 127.0.0.1:5000/x:1$"):
            s.resolve("127.0.0.1:5000/x:1")
        with pytest.raises(NotFound, match="^No such image: sha256:" + "f" * 64):
            s.resolve("f" * 64)
        with pytest.raises(InvalidParameter, match="must be lowercase"):
            s.resolve("NoSuch")
        assert s.repo_tags(rec.id) == [f"{REG}:latest"]
        assert s.top_chain_id(rec) == rec.chain_ids[-1]
        assert s.config(rec).architecture == "amd64"

    run(tmp_path, body)


def test_rmi_conflicts_as_dockerd(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        rec = await w.image(REG, [b"a"])
        cid, cid2 = "c" * 64, "d" * 64
        w.users[rec.id] = [ImageUse(cid, running=False)]
        with pytest.raises(Conflict) as exc:
            await w.store.delete(REG)
        assert str(exc.value) == (f'conflict: unable to remove repository reference "{REG}" (must force) - '
                                  f"container {cid[:12]} is using its referenced image {rec.id[7:19]}")
        # -f by name: the tag and its repository digest go, the image stays (dangling).
        out = await w.store.delete(REG, force=True)
        assert len(out) == 2 and out[0] == {"Untagged": f"{REG}:latest"}
        assert out[1]["Untagged"].startswith(f"{REG}@sha256:")
        assert w.store.find(rec.id) is not None and w.store.is_dangling(rec.id)
        # By ID while a running container uses it: cannot be forced.
        w.users[rec.id] = [ImageUse(cid2, running=True)]
        with pytest.raises(Conflict) as exc:
            await w.store.delete(rec.id[7:19], force=True)
        assert str(exc.value) == (f"conflict: unable to delete {rec.id[7:19]} (cannot be forced) - "
                                  f"image is being used by running container {cid2[:12]}")
        # Stopped container, no force: must be forced.
        w.users[rec.id] = [ImageUse(cid, running=False)]
        with pytest.raises(Conflict, match=r"\(must be forced\) - image is being used by stopped container"):
            await w.store.delete(rec.id[7:19])
        # Forced by ID: the image goes, but the container's layers stay.
        out = await w.store.delete(rec.id[7:19], force=True)
        assert out == [{"Deleted": rec.id}]
        assert await w.snap.exists(rec.chain_ids[0])

    run(tmp_path, body)


def test_rmi_untags_then_deletes_unshared_layers(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        base = await w.image("busybox", [b"base"])
        app = await w.image("app", [b"base", b"mid", b"top"])
        await w.store.tag("app", "app", "v2")
        await w.store.tag("app", "other/app")
        assert w.store.repo_tags(app.id) == ["app:latest", "app:v2", "other/app:latest"]
        # Several tags: removing one only untags.
        assert await w.store.delete("app:v2") == [{"Untagged": "app:v2"}]
        # By ID with tags in two repositories: soft conflict.
        with pytest.raises(Conflict, match="image is referenced in multiple repositories"):
            await w.store.delete(app.id[7:19])
        out = await w.store.delete(app.id[7:19], force=True)
        untagged = [r["Untagged"] for r in out if "Untagged" in r]
        assert set(untagged) == {"app:latest", "other/app:latest", w_digest(untagged, "app@")}
        deleted = [r["Deleted"] for r in out if "Deleted" in r]
        assert deleted == [app.id, app.chain_ids[2], app.chain_ids[1]]  # the shared base stays
        assert await w.snap.exists(base.chain_ids[0])
        assert not w.content.exists(app.id)
        assert not w.content.exists(app.layers[2].digest) and w.content.exists(app.layers[0].digest)
        # Events: untag, untag..., delete for the image (Actor.ID = image ID).
        actions = [e.message.action for e in w.bus.history() if e.message.type == "image"]
        assert actions.count("delete") == 1 and actions[0] == "tag"

    run(tmp_path, body)


def w_digest(values: list[str], prefix: str) -> str:
    return next(v for v in values if v.startswith(prefix))


def test_tag_untag_and_last_tag_time(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        rec = await w.image("busybox", [b"a"])
        assert w.store.get(rec.id).last_tag_time == ""
        assert await w.store.tag(rec.id[7:19], "127.0.0.1:5000/mine", "v1") == "127.0.0.1:5000/mine:v1"
        assert w.store.get(rec.id).last_tag_time.endswith("Z")
        with pytest.raises(InvalidParameter, match="refusing to create a tag with a digest reference"):
            await w.store.tag("busybox", "busybox@sha256:" + "a" * 64)
        with pytest.raises(InvalidParameter, match="ambiguous"):
            await w.store.tag("busybox", "sha256", "x")
        assert await w.store.untag("127.0.0.1:5000/mine:v1") == "127.0.0.1:5000/mine:v1"
        with pytest.raises(NotFound):
            await w.store.untag("127.0.0.1:5000/mine:v1")
        # Everything survives a restart.
        again = w.open()
        assert again.repo_tags(rec.id) == ["busybox:latest"] and again.get(rec.id).layer_sizes == [1000]

    run(tmp_path, body)


def test_prune(tmp_path: Path) -> None:
    async def body(w: World) -> None:
        keep = await w.image("keep", [b"k"], labels={"team": "a"})
        old = await w.image("old", [b"o"], labels={"team": "b"}, created="2020-01-01T00:00:00Z")
        dangling = await w.image("gone", [b"g"])
        await w.store.untag("gone")
        # Only the digest reference is left: dangling for prune purposes.
        report = await w.store.prune()
        assert {"Deleted": dangling.id} in report.deleted and report.reclaimed == 1000
        assert w.store.find(keep.id) and w.store.find(old.id)
        # until (2020-09): only the image created before goes.
        report = await w.store.prune(dangling_only=False, until_ns=1_600_000_000 * 10**9)
        assert [r for r in report.deleted if "Deleted" in r][0] == {"Deleted": old.id}
        assert w.store.find(keep.id) is not None and w.store.find(old.id) is None
        report = await w.store.prune(dangling_only=False, label_filter=lambda lbl: lbl.get("team") == "b")
        assert report.deleted == [] and report.reclaimed == 0
        report = await w.store.prune(dangling_only=False, label_filter=lambda lbl: lbl.get("team") == "a")
        assert {"Untagged": "keep:latest"} in report.deleted and w.store.list() == []

    run(tmp_path, body)


def test_in_use_accepts_container_records(tmp_path: Path) -> None:
    class State:
        running = True

    class Rec:
        id = "e" * 64
        state = State()

    async def body(w: World) -> None:
        rec = await w.image("busybox", [b"a"])
        w.users[rec.id] = [Rec()]  # type: ignore[list-item]
        with pytest.raises(Conflict, match="running container eeeeeeeeeeee"):
            await w.store.delete(rec.id, force=True)

    run(tmp_path, body)



def test_rmi_waits_for_the_snapshots_of_removed_containers(tmp_path: Path) -> None:
    """A removed container's snapshot goes in the background, and it sits on the image's top
    layer: the image's layers are removed only after the container store says its removals
    are done (not skipped with a conflict, which would leave them on disk for good)."""
    async def body(w: World) -> None:
        app = await w.image("app", [b"one", b"two"])
        await w.snap.prepare("c" * 64, app.chain_ids[-1])  # the removed container's rootfs

        async def reclaimed() -> None:  # the container store's background removal finishing
            await w.snap.remove("c" * 64)

        w.store.set_in_use(lambda image_id: [], reclaimed)
        out = await w.store.delete("app")
        assert [r["Deleted"] for r in out if "Deleted" in r] == [app.id, *reversed(app.chain_ids)]
        assert await w.snap.list() == []

    run(tmp_path, body)
