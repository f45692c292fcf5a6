"""Push in process (the image subsystem without the API server) and the upload client, against
real docker-registry processes: existence checks, mounts, chunked and monolithic uploads,
resume after a dropped chunk, uncompressed layers compressed on the way, the manifest."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from asyncdock.base.errors import EngineError
from asyncdock.images.origins import BlobOrigins
from asyncdock.images.push import Pusher
from asyncdock.images.store import ImageRecord, LayerBlob
from asyncdock.registry import upload
from asyncdock.registry.auth import AuthConfig
from asyncdock.registry.reference import parse_normalized
from tests.integration.test_pull import Harness
from tests.support.registry import Registry

T = TypeVar("T")
DEADLINE = 90.0


class PushHarness(Harness):
    def __init__(self, root: Path, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.origins = BlobOrigins(root / "images" / "distribution")
        self.puller.origins = self.origins
        self.pusher = Pusher(self.config, self.content, self.images, self.registry, self.origins, self.bus)

    async def push(self, name: str, tag: str = "", auth: AuthConfig | None = None) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []

        async def progress(msg: dict[str, Any]) -> None:
            messages.append(msg)

        await self.pusher.push(name, tag, auth, progress)
        return messages


def run(root: Path, body: Callable[[PushHarness], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        h = PushHarness(root, **kw)
        try:
            return await asyncio.wait_for(body(h), DEADLINE)
        finally:
            await h.close()
    return asyncio.run(main())


@pytest.fixture
def target() -> Iterator[Registry]:
    """An empty registry to push to (the session `registry` is where images come from)."""
    with Registry(name="push-target") as reg:
        yield reg


def statuses(messages: list[dict[str, Any]], id_: str) -> list[str]:
    return [m["status"] for m in messages if m.get("id") == id_]


def _blob(n: int, seed: bytes = b"x") -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


# ---- the upload client ------------------------------------------------------------------------

def test_upload_chunked_monolithic_and_mount(tmp_path: Path, target: Registry) -> None:
    big = _blob(5 << 20, b"big")
    small = _blob(1000, b"small")

    async def body(h: PushHarness) -> None:
        repo = await h.registry.repository(parse_normalized(f"{target.host}/a/one"), None, actions="push,pull")
        await upload.ping(repo)
        for data, chunk in ((big, 1 << 20), (small, 1 << 20)):
            digest = h.content.put(data)
            src = upload.StoredBlob(h.content.path(digest), digest, len(data))
            assert await upload.blob_exists(repo, digest) is None
            sent: list[int] = []
            got = await upload.upload_blob(repo, src, progress=sent.append, chunk_size=chunk)
            assert got == digest
            assert await upload.blob_exists(repo, digest) == len(data)
            assert sent and sent[-1] == len(data)
        # another repository of the registry mounts it instead of receiving it
        other = await h.registry.repository(parse_normalized(f"{target.host}/b/two"), None, actions="push,pull",
                                            extra_scopes=("repository:a/one:pull",))
        big_digest = "sha256:" + hashlib.sha256(big).hexdigest()
        with pytest.raises(upload.BlobMounted):
            await upload.start_upload(other, mount=big_digest, source_repo="a/one")
        assert await upload.blob_exists(other, big_digest) == len(big)
        # a mount of a blob the source lacks opens a normal upload session (202)
        missing = "sha256:" + "0" * 64
        location = await upload.start_upload(other, mount=missing, source_repo="a/one")
        assert "/v2/b/two/blobs/uploads/" in location
        await upload.cancel_upload(other, location)

    run(tmp_path, body)


# ---- push -------------------------------------------------------------------------------------

def test_push_then_layer_already_exists_then_mount(tmp_path: Path, registry: Any, target: Registry) -> None:
    async def body(h: PushHarness) -> None:
        rec = await h.pull(registry.ref("layers"))
        app = f"{target.host}/app"
        await h.images.tag(registry.ref("layers"), app, "1")
        first = await h.push(app, "1")
        assert first[0] == {"status": f"The push refers to repository [{target.host}/app]"}
        shorts = [d.split(":", 1)[1][:12] for d in rec.diff_ids]
        # Preparing for every layer, the top one first, as dockerd lists them
        assert [m["id"] for m in first if m.get("status") == "Preparing"] == list(reversed(shorts))
        for s in shorts:
            st = statuses(first, s)
            assert st[0] == "Preparing" and st[-1] == "Pushed", st
            assert "Pushing" in st
        pushing = [m for m in first if m.get("status") == "Pushing"]
        assert all(m["progressDetail"].get("total") for m in pushing)
        digest_line = [m for m in first if m.get("status", "").startswith("1: digest: ")]
        assert len(digest_line) == 1
        aux = first[-1]["aux"]
        assert first[-1] == {"progressDetail": {}, "aux": aux}
        assert digest_line[0]["status"] == f"1: digest: {aux['Digest']} size: {aux['Size']}"
        assert f"{target.host}/app@{aux['Digest']}" in h.images.repo_digests(rec.id)
        # the manifest the image came with names the same blobs: it goes byte for byte
        assert aux["Digest"] in rec.manifest_digests

        again = await h.push(app, "1")
        for s in shorts:
            assert statuses(again, s) == ["Preparing", "Layer already exists"]
        assert again[-1]["aux"] == aux

        # another repository of the same registry: every layer is mounted from app
        await h.images.tag(registry.ref("layers"), f"{target.host}/other/app2", "x")
        third = await h.push(f"{target.host}/other/app2", "x")
        for s in shorts:
            assert statuses(third, s)[-1] == "Mounted from app", statuses(third, s)

        # a fresh engine pulls what was pushed: the same image ID
        h2 = PushHarness(tmp_path / "second")
        try:
            back = await h2.pull(f"{app}:1")
            assert back.id == rec.id
        finally:
            await h2.close()

    run(tmp_path, body)


def test_pulled_layers_mount_from_their_source_repository(tmp_path: Path, registry: Any) -> None:
    async def body(h: PushHarness) -> None:
        rec = await h.pull(registry.ref("busybox"))
        await h.images.tag(registry.ref("busybox"), f"{registry.host}/mine/bb", "t")
        out = await h.push(f"{registry.host}/mine/bb", "t")
        short = rec.diff_ids[0].split(":", 1)[1][:12]
        assert statuses(out, short)[-1] in ("Mounted from library/busybox", "Layer already exists")

    run(tmp_path, body)


def test_push_all_tags_and_unknown_image(tmp_path: Path, registry: Any, target: Registry) -> None:
    async def body(h: PushHarness) -> None:
        await h.pull(registry.ref("busybox"))
        for t in ("a", "b"):
            await h.images.tag(registry.ref("busybox"), f"{target.host}/multi", t)
        out = await h.push(f"{target.host}/multi")
        assert [m["aux"]["Tag"] for m in out if "aux" in m] == ["a", "b"]
        with pytest.raises(EngineError) as e:
            await h.push(f"{target.host}/nothing", "1")
        assert str(e.value) == f"An image does not exist locally with the tag: {target.host}/nothing"
        with pytest.raises(EngineError) as e:
            await h.push(f"{target.host}/multi", "zz")
        assert str(e.value) == f"tag does not exist: {target.host}/multi:zz"

    run(tmp_path, body)


async def _loaded_copy(puller: PushHarness, h: PushHarness, src: ImageRecord, ref: str) -> str:
    """Put `src` into `h` with its layers stored uncompressed (as `docker load` stores them)."""
    layers: list[LayerBlob] = []
    for diff_id, blob in zip(src.diff_ids, src.layers):
        raw = gzip.decompress(puller.content.read_bytes(blob.digest))
        assert h.content.put(raw) == diff_id
        layers.append(LayerBlob(diff_id, "application/vnd.docker.image.rootfs.diff.tar", len(raw)))
    image_id = h.content.put(puller.content.read_bytes(src.id))
    await h.images.add(ImageRecord(id=image_id, diff_ids=list(src.diff_ids), layers=layers,
                                   layer_sizes=list(src.layer_sizes)))
    await h.images.set_reference(parse_normalized(ref), image_id)
    return image_id


def test_failed_upload_of_a_compressed_layer_leaves_nothing(tmp_path: Path, registry: Any, target: Registry,
                                                             faulty_registry: Any) -> None:
    proxy = faulty_registry("drop-patch", upstream=target)  # every chunk is lost

    async def body(puller: PushHarness) -> None:
        src = await puller.pull(registry.ref("layers"))
        h = PushHarness(tmp_path / "loaded", insecure_registries=[proxy.host])
        try:
            await _loaded_copy(puller, h, src, f"{proxy.host}/lost:1")
            with pytest.raises(EngineError) as e:
                await h.push(f"{proxy.host}/lost", "1")
            assert "blob upload failed" in str(e.value)
            assert list((h.content.root / "tmp").iterdir()) == []  # no half-written gzip left
            proxy.clear()
            out = await h.push(f"{proxy.host}/lost", "1")
            assert "aux" in out[-1]
        finally:
            await h.close()

    run(tmp_path, body)


def test_uncompressed_layer_is_compressed_once(tmp_path: Path, registry: Any, target: Registry) -> None:
    """An image whose layer blobs are stored uncompressed (as `docker load` stores them):
    gzip on the way, the gzip blob kept, the second push sends nothing and the same manifest."""

    async def body(puller: PushHarness) -> None:
        src = await puller.pull(registry.ref("layers"))
        # a second engine that has the layers only uncompressed, and no record of a registry
        h = PushHarness(tmp_path / "loaded")
        try:
            layers: list[LayerBlob] = []
            for diff_id, blob in zip(src.diff_ids, src.layers):
                raw = gzip.decompress(puller.content.read_bytes(blob.digest))
                assert h.content.put(raw) == diff_id
                layers.append(LayerBlob(diff_id, "application/vnd.docker.image.rootfs.diff.tar", len(raw)))
            cfg_bytes = puller.content.read_bytes(src.id)
            image_id = h.content.put(cfg_bytes)
            await h.images.add(ImageRecord(id=image_id, diff_ids=list(src.diff_ids), layers=layers,
                                           layer_sizes=list(src.layer_sizes)))
            await h.images.set_reference(parse_normalized(f"{target.host}/loaded:1"), image_id)
            before = set(h.content.list())
            first = await h.push(f"{target.host}/loaded", "1")
            shorts = [d.split(":", 1)[1][:12] for d in src.diff_ids]
            for s in shorts:
                assert statuses(first, s)[-1] == "Pushed"
            made = set(h.content.list()) - before
            raw_manifest = h.content.read_bytes(first[-1]["aux"]["Digest"])
            manifest = json.loads(raw_manifest)
            # Go's MarshalIndent with three spaces: byte for byte what dockerd 20.10 pushed for
            # the same blobs (compared once against a real dockerd)
            assert raw_manifest == json.dumps(manifest, indent=3).encode()
            assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
            assert manifest["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json",
                                          "size": len(cfg_bytes), "digest": image_id}
            for layer, diff_id in zip(manifest["layers"], src.diff_ids):
                assert layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                assert layer["digest"] in made  # the gzip blob stays in the content store
                raw = gzip.decompress(h.content.read_bytes(layer["digest"]))
                assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
            second = await h.push(f"{target.host}/loaded", "1")
            for s in shorts:
                assert statuses(second, s) == ["Preparing", "Layer already exists"]
            assert second[-1]["aux"] == first[-1]["aux"]
        finally:
            await h.close()
        await puller.images.delete(registry.ref("layers"), force=True)
        back = await puller.pull(f"{target.host}/loaded:1")
        assert back.id == src.id

    run(tmp_path, body)


def test_basic_auth_push(tmp_path: Path, auth_registry: Any, registry: Any) -> None:
    async def body(h: PushHarness) -> None:
        await h.pull(registry.ref("busybox"))
        name = f"{auth_registry.host}/pushed/bb"
        await h.images.tag(registry.ref("busybox"), name, "1")
        with pytest.raises(EngineError) as e:
            await h.push(name, "1")
        assert str(e.value) == "no basic auth credentials"
        with pytest.raises(EngineError) as e:
            await h.push(name, "1", AuthConfig(username=auth_registry.username, password="wrong"))
        assert str(e.value) == "unauthorized: authentication required"
        out = await h.push(name, "1", AuthConfig(username=auth_registry.username, password=auth_registry.password))
        assert "aux" in out[-1]

    run(tmp_path, body)


def test_token_auth_push(tmp_path: Path, token_registry: Any, registry: Any) -> None:
    ts = token_registry.token_server

    async def body(h: PushHarness) -> None:
        await h.pull(registry.ref("busybox"))
        name = f"{token_registry.host}/alice/bb"
        await h.images.tag(registry.ref("busybox"), name, "1")
        with pytest.raises(EngineError) as e:
            await h.push(name, "1")  # anonymous: a pull-only token
        assert str(e.value) == "unauthorized: authentication required"
        ts.reset_counters()
        out = await h.push(name, "1", AuthConfig(username=token_registry.username,
                                                 password=token_registry.password))
        assert "aux" in out[-1]
        scopes = {s for r in ts.requests for s in r.scopes}
        assert "repository:alice/bb:push,pull" in scopes

    run(tmp_path, body)


def test_msgspec_shape_of_origins(tmp_path: Path) -> None:
    async def body() -> None:
        o = BlobOrigins(tmp_path)
        await o.add([("sha256:" + "a" * 64, __import__("asyncdock.images.origins", fromlist=["x"]).BlobOrigin(
            "sha256:" + "b" * 64, "application/vnd.docker.image.rootfs.diff.tar.gzip", "h:1/r"))])
        again = BlobOrigins(tmp_path)
        assert [x.repository for x in again.of("sha256:" + "a" * 64)] == ["h:1/r"]
        assert msgspec.json.decode((tmp_path / "origins.json").read_bytes())["layers"]

    asyncio.run(body())


_ = os


def test_upload_resumes_after_a_dropped_chunk(tmp_path: Path, faulty_registry: Any, target: Registry) -> None:
    """The third chunk's connection is lost: the upload asks the registry what it holds (two
    chunks) and goes on from there, not from byte 0."""
    proxy = faulty_registry("drop-patch=2", times=1, upstream=target)
    data = _blob(5 << 20, b"resume")

    async def body(h: PushHarness) -> None:
        repo = await h.registry.repository(parse_normalized(f"{proxy.host}/r/resume"), None, actions="push,pull")
        await upload.ping(repo)
        digest = h.content.put(data)
        sent: list[int] = []
        got = await upload.upload_blob(repo, upload.StoredBlob(h.content.path(digest), digest, len(data)),
                                       chunk_size=1 << 20, progress=sent.append)
        assert got == digest
        assert await upload.blob_exists(repo, digest) == len(data)
        stats = proxy.stats
        assert stats.faults["patch"] == 1
        status_gets = [p for m, p, _ in stats.paths if m == "GET" and "/blobs/uploads/" in p]
        assert len(status_gets) == 1
        # 5 chunks, the dropped one sent again: 6 PATCHes, one upload session
        assert stats.patches == 6
        assert stats.by_method["POST"] == 1
        assert 2 << 20 in sent  # resumed at the two chunks the registry kept

    run(tmp_path, body, insecure_registries=[proxy.host])
