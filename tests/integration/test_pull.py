"""The streaming puller against a real registry (docker-registry v2.8), in process: real overlay
snapshots, real unpacking, the fault proxy for broken transfers, htpasswd and token auth.

Each test builds the image subsystem (content store, image store, overlay snapshotter, puller)
in its own temporary data root and drives `Puller.pull` directly, so progress messages, blob GETs
and the files left on disk can all be checked."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from asyncdock.config import DaemonConfig
from asyncdock.content.store import ContentStore
from asyncdock.base.errors import EngineError, NotFound, Unauthorized
from asyncdock.events import EventBus, LayerProgress
from asyncdock.images.pull import Puller
from asyncdock.images.store import ImageStore
from asyncdock.registry.auth import AuthConfig
from asyncdock.registry.client import RegistryClient
from asyncdock.registry.reference import parse_pull_reference
from asyncdock.snapshots import mount as mnt
from asyncdock_snapshotter_copy import CopySnapshotter
from asyncdock_snapshotter_overlay import OverlaySnapshotter
from tests.support import imagebuild as ib
from tests.support.process import free_port

T = TypeVar("T")
DEADLINE = 60.0


class Harness:
    """The image subsystem of one engine, without the API server."""

    def __init__(self, root: Path, *, stall_timeout: float = 30.0, snapshotter: str = "overlayfs",
                 **cfg: Any) -> None:
        self.root = root
        self.config = DaemonConfig(data_root=str(root), config_dir=str(root / "etc"), **cfg)
        self.bus = EventBus()
        self.content = ContentStore(root / "content")
        kind = OverlaySnapshotter if snapshotter == "overlayfs" else CopySnapshotter
        self.snapshotter = kind(root / "snapshots", durable=False)
        self.images = ImageStore(root / "images", self.content, self.snapshotter, bus=self.bus)
        self.registry = RegistryClient(self.config, stall_timeout=stall_timeout)
        self.puller = Puller(self.config, self.content, self.images, self.snapshotter, self.bus,
                             registry=self.registry)
        self.messages: list[dict[str, Any]] = []

    async def pull(self, ref: str, auth: AuthConfig | None = None, **kw: Any) -> Any:
        self.messages = []

        async def progress(msg: dict[str, Any]) -> None:
            self.messages.append(msg)

        return await self.puller.pull(parse_pull_reference(ref), auth, progress, **kw)

    async def close(self) -> None:
        await self.puller.close()

    async def staging(self) -> list[str]:
        return [i.name for i in await self.snapshotter.list() if i.kind == "active"]

    async def tree(self, image_id: str, paths: list[str]) -> dict[str, bytes | None]:
        """Mount the image read-only and read `paths` (None: absent)."""
        rec = self.images.get(image_id)
        top = ImageStore.top_chain_id(rec)
        assert top is not None
        key = f"view-{time.monotonic_ns()}"
        mounts = await self.snapshotter.view(key, top)
        target = self.root / "mnt"
        target.mkdir(exist_ok=True)
        mnt.mount(mounts, target)
        try:
            out: dict[str, bytes | None] = {}
            for p in paths:
                f = target / p
                out[p] = f.read_bytes() if f.is_file() else (b"<dir>" if f.is_dir() else None)
            return out
        finally:
            mnt.unmount(target)
            await self.snapshotter.remove(key)


def run(root: Path, body: Callable[[Harness], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        h = Harness(root, **kw)
        try:
            return await asyncio.wait_for(body(h), DEADLINE)
        finally:
            await h.close()
    return asyncio.run(main())


def layer_statuses(messages: list[dict[str, Any]], short: str) -> list[str]:
    out: list[str] = []
    for m in messages:
        if m.get("id") == short and (not out or out[-1] != m["status"]):
            out.append(m["status"])
    return out


async def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------


def test_pull_single_layer_progress_and_tree(tmp_path: Path, registry: Any) -> None:
    img = registry.images["busybox"]
    ref = registry.ref("busybox")
    layer = img.tag().layers[0]
    short = layer[7:19]

    async def body(h: Harness) -> None:
        events = h.bus.subscribe()
        rec = await h.pull(ref)
        assert rec.id == img.tag().config_digest
        msgs = h.messages
        assert msgs[0] == {"status": "Pulling from library/busybox", "id": "latest"}
        assert msgs[1] == {"status": "Pulling fs layer", "progressDetail": {}, "id": short}
        seq = layer_statuses(msgs, short)
        assert seq[0] == "Pulling fs layer" and seq[-1] == "Pull complete"
        # Docker's order, whatever ran concurrently underneath.
        order = [s for s in seq if s in ("Downloading", "Verifying Checksum", "Download complete",
                                         "Extracting", "Pull complete")]
        assert order == ["Downloading", "Verifying Checksum", "Download complete", "Extracting", "Pull complete"]
        dl = [m for m in msgs if m.get("status") == "Downloading"]
        assert dl[-1]["progressDetail"] == {"current": layer_size(img, layer), "total": layer_size(img, layer)}
        assert dl[-1]["progress"].startswith("[" + "=" * 50 + ">]")
        assert msgs[-2] == {"status": f"Digest: {img.digest}"}
        assert msgs[-1] == {"status": f"Status: Downloaded newer image for {ref}"}
        assert h.images.repo_tags(rec.id) == [ref]
        assert h.images.repo_digests(rec.id) == [f"{registry.host}/library/busybox@{img.digest}"]
        assert h.content.exists(layer) and h.content.exists(rec.id) and h.content.exists(img.digest)
        assert await h.staging() == [] and h.content.list_ingests() == {}
        tree = await h.tree(rec.id, ["bin/busybox", "etc/passwd", "bin/sh"])
        assert tree["etc/passwd"] == ib.PASSWD.encode()
        assert tree["bin/busybox"] and tree["bin/sh"] == tree["bin/busybox"]
        # Every progress message went out on the bus too, and the pull event.
        seen = []
        while (env := events.get_nowait()) is not None:
            seen.append(env.message)
        assert [m.message for m in seen if isinstance(m, LayerProgress)] == msgs
        pulls = [m for m in seen if getattr(m, "action", "") == "pull"]
        assert len(pulls) == 1 and pulls[0].actor.id == ref
        assert pulls[0].actor.attributes["name"] == f"{registry.host}/library/busybox"

        # Second pull: nothing to do, exactly Docker's three lines.
        await h.pull(ref)
        assert h.messages == [
            {"status": "Pulling from library/busybox", "id": "latest"},
            {"status": f"Digest: {img.digest}"},
            {"status": f"Status: Image is up to date for {ref}"},
        ]

    run(tmp_path, body)


def layer_size(img: Any, digest: str) -> int:
    return (img.layout / "blobs" / "sha256" / digest[7:]).stat().st_size


@pytest.mark.parametrize("snapshotter", ["overlayfs", "copy"])
def test_pull_multi_layer_whiteouts(tmp_path: Path, registry: Any, snapshotter: str) -> None:
    img = registry.images["layers"]

    async def body(h: Harness) -> None:
        rec = await h.pull(registry.ref("layers"))
        assert rec.diff_ids == img.tag().diff_ids
        assert len(rec.chain_ids) == 4
        for chain in rec.chain_ids:
            assert await h.snapshotter.exists(chain)
        tree = await h.tree(rec.id, list(ib.LAYERS_EXPECTED))
        for path, want in ib.LAYERS_EXPECTED.items():
            if want is None:
                assert tree[path] is None, path
            elif want == b"":
                assert tree[path] is not None, path
            else:
                assert tree[path] == want, path
        for short in (d[7:19] for d in img.tag().layers):
            assert layer_statuses(h.messages, short)[-1] == "Pull complete"
        assert h.messages[-1]["status"].startswith("Status: Downloaded newer image for ")
        assert await h.staging() == []

    run(tmp_path, body, snapshotter=snapshotter)


def test_concurrent_pulls_share_layers(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    proxy = faulty_registry()
    busybox, layers = registry.images["busybox"], registry.images["layers"]
    assert busybox.tag().layers[0] == layers.tag().layers[0]  # the shared base layer

    async def body(h: Harness) -> None:
        a, b, c = await asyncio.gather(h.puller.pull(parse_pull_reference(proxy.ref("busybox"))),
                                       h.puller.pull(parse_pull_reference(proxy.ref("layers"))),
                                       h.puller.pull(parse_pull_reference(proxy.ref("layers"))))
        assert b.id == c.id == layers.tag().config_digest and a.id == busybox.tag().config_digest
        gets = proxy.stats.blob_gets
        for digest in layers.tag().layers:
            assert gets[digest] == 1, (digest, gets)
        assert await h.staging() == []

    run(tmp_path, body, insecure_registries=[])


def test_corrupt_blob_fails_clearly_and_leaves_nothing(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["layers"]
    bad = img.tag().layers[1]
    proxy = faulty_registry("corrupt-blob", digests={bad})

    async def body(h: Harness) -> None:
        with pytest.raises(EngineError) as exc:
            await h.pull(proxy.ref("layers"))
        assert str(exc.value) == f"filesystem layer verification failed for digest {bad}"
        assert not h.content.exists(bad)
        # The bad bytes are dropped; siblings cancelled by the failure keep theirs for a resume.
        assert ContentStore.ref_for(bad) not in h.content.list_ingests()
        assert await h.staging() == []
        assert h.images.list() == []
        # The stream told the layer's story up to the failure, without Pull complete for it.
        assert "Pull complete" not in layer_statuses(h.messages, bad[7:19])
        # Fixed registry: the next pull works.
        proxy.clear()
        rec = await h.pull(proxy.ref("layers"))
        assert rec.id == img.tag().config_digest

    run(tmp_path, body)


def test_cut_transfer_resumes_with_range(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["busybox"]
    layer = img.tag().layers[0]
    cut = 200_000
    proxy = faulty_registry(f"cut-after={cut}", digests={layer})

    async def body(h: Harness) -> None:
        rec = await h.pull(proxy.ref("busybox"))
        assert rec.id == img.tag().config_digest
        ranges = [r for d, r in proxy.stats.range_requests if d == layer]
        assert ranges[:2] == [f"bytes={cut}-", f"bytes={2 * cut}-"]
        assert any(m["status"].startswith("Resuming from ") for m in h.messages if m.get("id") == layer[7:19])

    run(tmp_path, body)


def _start_then_cancel(h: Harness, ref: str, layer: str, at_least: int) -> Callable[[], Awaitable[None]]:
    async def go() -> None:
        task = asyncio.create_task(h.pull(ref))
        await wait_for(lambda: h.content.ingest_offset(ContentStore.ref_for(layer)) >= at_least or task.done(),
                       "the partial download")
        assert not task.done(), task
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Cancelled: the staging snapshot is gone, the partial blob stays for a resume.
        await wait_for(lambda: not h.puller._jobs, "layer jobs to finish")
        assert await h.staging() == []
        assert h.content.ingest_offset(ContentStore.ref_for(layer)) >= at_least
        assert not h.content.exists(layer)
    return go


def test_cancelled_pull_resumes_on_next_pull(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["busybox"]
    layer = img.tag().layers[0]
    proxy = faulty_registry("stall=300000", digests={layer})

    async def body(h: Harness) -> None:
        await _start_then_cancel(h, proxy.ref("busybox"), layer, 300_000)()
        proxy.clear()
        proxy.release_stalls()
        rec = await h.pull(proxy.ref("busybox"))
        assert rec.id == img.tag().config_digest
        assert (layer, "bytes=300000-") in proxy.stats.range_requests
        assert h.content.list_ingests() == {}

    run(tmp_path, body)


def test_resume_falls_back_when_range_ignored(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["busybox"]
    layer = img.tag().layers[0]
    proxy = faulty_registry("stall=300000", digests={layer})

    async def body(h: Harness) -> None:
        await _start_then_cancel(h, proxy.ref("busybox"), layer, 300_000)()
        proxy.release_stalls()
        proxy.set_fault("ignore-range", digests={layer})
        rec = await h.pull(proxy.ref("busybox"))
        assert rec.id == img.tag().config_digest
        assert proxy.stats.faults[layer] >= 2  # the stall, then a range the server ignored
        tree = await h.tree(rec.id, ["etc/passwd"])
        assert tree["etc/passwd"] == ib.PASSWD.encode()

    run(tmp_path, body)


def test_stall_reconnects_at_offset(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["busybox"]
    layer = img.tag().layers[0]
    # Every response stops after 300 kB and hangs: each reconnect still makes progress.
    proxy = faulty_registry("stall=300000", digests={layer})

    async def body(h: Harness) -> None:
        rec = await h.pull(proxy.ref("busybox"))
        assert rec.id == img.tag().config_digest
        ranges = [r for d, r in proxy.stats.range_requests if d == layer]
        assert ranges[:2] == ["bytes=300000-", "bytes=600000-"]
        proxy.release_stalls()

    run(tmp_path, body, stall_timeout=0.3)


def test_stall_times_out_clearly(tmp_path: Path, registry: Any, faulty_registry: Any) -> None:
    img = registry.images["busybox"]
    layer = img.tag().layers[0]
    proxy = faulty_registry("stall=0", digests={layer})

    async def body(h: Harness) -> None:
        with pytest.raises(EngineError) as exc:
            await h.pull(proxy.ref("busybox"))
        assert str(exc.value) == (f"layer {layer[7:19]}: download stalled: no data for 0.3s 3 times in a row, "
                                  f"giving up at 0 of {layer_size(img, layer)} bytes")
        assert proxy.stats.blob_gets[layer] == 3
        assert await h.staging() == []
        proxy.release_stalls()

    run(tmp_path, body, stall_timeout=0.3)


def test_unknown_image_is_404_before_progress(tmp_path: Path, registry: Any) -> None:
    async def body(h: Harness) -> None:
        with pytest.raises(NotFound) as exc:
            await h.pull(registry.ref("nosuch", "v9"))
        assert str(exc.value) == (f"manifest for {registry.host}/library/nosuch:v9 not found: "
                                  "manifest unknown: manifest unknown")
        assert h.messages == []

    run(tmp_path, body)


def test_docker_io_through_mirrors(tmp_path: Path, registry: Any) -> None:
    """docker.io names go to the mirrors first (a dead one is skipped), with Docker's familiar
    names in tags, digests and the final status line."""
    img = registry.images["busybox"]
    dead = f"http://127.0.0.1:{free_port()}"

    async def body(h: Harness) -> None:
        rec = await h.pull("busybox")
        assert rec.id == img.tag().config_digest
        assert h.images.repo_tags(rec.id) == ["busybox:latest"]
        assert h.images.repo_digests(rec.id) == [f"busybox@{img.digest}"]
        assert h.messages[0] == {"status": "Pulling from library/busybox", "id": "latest"}
        assert h.messages[-1] == {"status": "Status: Downloaded newer image for busybox:latest"}
        assert h.images.resolve("busybox").id == rec.id
        assert h.images.resolve("docker.io/library/busybox:latest").id == rec.id
        assert h.images.resolve(rec.id[7:19]).id == rec.id
        assert h.images.resolve(f"busybox@{img.digest}").id == rec.id
        with pytest.raises(NotFound, match="^No such image: alpine:latest$"):
            h.images.resolve("alpine")

    run(tmp_path, body, registry_mirrors=[dead, registry.url])


def test_manifest_list_picks_linux_amd64(tmp_path: Path, registry: Any) -> None:
    img = registry.images["multiarch"]
    index = img.tag()
    amd64 = next(c for c in index.children if c.platform == "linux/amd64")

    async def body(h: Harness) -> None:
        rec = await h.pull(registry.ref("multiarch"))
        assert rec.id == amd64.config_digest
        assert h.images.repo_digests(rec.id) == [f"{registry.host}/library/multiarch@{index.descriptor.digest}"]
        assert h.messages[-2] == {"status": f"Digest: {index.descriptor.digest}"}
        assert h.images.config(rec).architecture == "amd64"
        # An explicit platform picks another entry.
        from asyncdock.registry.platforms import parse_platform
        arm = next(c for c in index.children if c.platform.startswith("linux/arm64"))
        rec2 = await h.pull(registry.ref("multiarch"), platform=parse_platform("linux/arm64"))
        assert rec2.id == arm.config_digest

    run(tmp_path, body)


def test_zstd_and_docker_v2s2(tmp_path: Path, registry: Any) -> None:
    async def body(h: Harness) -> None:
        rec = await h.pull(registry.ref("zstd"))
        tree = await h.tree(rec.id, ["zstd/hello.txt", "bin/busybox"])
        assert tree["zstd/hello.txt"] == b"hello from a zstd layer\n" and tree["bin/busybox"]
        rec2 = await h.pull(registry.ref("busybox", "v2s2"))
        assert rec2.diff_ids == registry.images["busybox"].tag().diff_ids
        # Same diff ID as the zstd base layer: its snapshot is reused.
        assert any(m.get("status") == "Already exists" for m in h.messages)

    run(tmp_path, body)


def test_basic_auth(tmp_path: Path, auth_registry: Any) -> None:
    ref = auth_registry.ref("busybox")

    async def body(h: Harness) -> None:
        with pytest.raises(Unauthorized) as exc:
            await h.pull(ref)
        assert "no basic auth credentials" in str(exc.value)
        with pytest.raises(EngineError):
            await h.pull(ref, AuthConfig(username=auth_registry.username, password="wrong"))
        rec = await h.pull(ref, AuthConfig(username=auth_registry.username, password=auth_registry.password))
        assert rec.id == auth_registry.images["busybox"].tag().config_digest
        login = AuthConfig(username=auth_registry.username, password=auth_registry.password,
                           serveraddress=auth_registry.host)
        assert await h.registry.login(login) == ("Login Succeeded", "")
        with pytest.raises(Unauthorized):
            await h.registry.login(AuthConfig(username="x", password="y", serveraddress=auth_registry.host))

    run(tmp_path, body)


def test_bearer_token_auth(tmp_path: Path, token_registry: Any) -> None:
    ts = token_registry.token_server
    creds = AuthConfig(username=token_registry.username, password=token_registry.password)

    async def body(h: Harness) -> None:
        ts.reset_counters()
        rec = await h.pull(token_registry.ref("busybox"))  # anonymous pull is allowed there
        assert rec.id == token_registry.images["busybox"].tag().config_digest
        # One token for the whole pull (manifest, config, layer): cached per scope.
        assert ts.count(account=None, status=200) == 1
        private = f"{token_registry.host}/private/busybox:latest"
        with pytest.raises(EngineError) as exc:
            await h.pull(private)
        assert "private/busybox" in str(exc.value)
        rec = await h.pull(private, creds)
        assert rec.id == token_registry.images["busybox"].tag().config_digest
        assert ts.count(account=token_registry.username, status=200) >= 1
        assert h.images.repo_tags(rec.id) == sorted([token_registry.ref("busybox"), private])
        status, identity = await h.registry.login(AuthConfig(username=creds.username, password=creds.password,
                                                             serveraddress=token_registry.host))
        # the token server's refresh token is the identity token `docker login` stores
        assert status == "Login Succeeded" and identity
        await h.images.untag(private)
        rec = await h.pull(private, AuthConfig(identitytoken=identity))
        assert rec.id == token_registry.images["busybox"].tag().config_digest

    run(tmp_path, body)


def test_rmi_removes_snapshots_and_blobs(tmp_path: Path, registry: Any) -> None:
    async def body(h: Harness) -> None:
        bb = await h.pull(registry.ref("busybox"))
        ly = await h.pull(registry.ref("layers"))
        base = bb.chain_ids[0]
        assert ly.chain_ids[0] == base
        out = await h.images.delete(registry.ref("layers"))
        assert out[0] == {"Untagged": registry.ref("layers")}
        assert out[1]["Untagged"].startswith(f"{registry.host}/library/layers@sha256:")
        assert out[2] == {"Deleted": ly.id}
        # The three layers only `layers` had are gone, top first; the shared base stays.
        assert [d["Deleted"] for d in out[3:]] == list(reversed(ly.chain_ids[1:]))
        assert await h.snapshotter.exists(base)
        for d in ly.layers[1:]:
            assert not h.content.exists(d.digest)
        assert h.content.exists(ly.layers[0].digest) and not h.content.exists(ly.id)
        # Dangling prune after an untag with a container using nothing: nothing to prune.
        report = await h.images.prune()
        assert report.deleted == [] and report.reclaimed == 0
        report = await h.images.prune(dangling_only=False)
        assert {"Deleted": bb.id} in report.deleted and report.reclaimed > 0
        assert h.content.list() == [] and await h.snapshotter.list() == []

    run(tmp_path, body)


def test_pull_waits_for_a_cancelled_transfer_to_release_the_ingest(tmp_path: Path, registry: Any) -> None:
    """A transfer whose client went away may still hold the blob's ingest for a moment after it
    gave up its place: a new pull of the same blob waits for it instead of failing."""
    from asyncdock.content.store import ContentStore, IngestLocked

    async def body(h: Harness) -> None:
        ref = registry.ref("library/busybox")
        repo = await h.registry.repository(parse_pull_reference(ref), None)
        layer = (await repo.resolve()).manifest.layers[0]
        digest, size = layer.digest, layer.size
        held = await asyncio.to_thread(h.content.ingest, ContentStore.ref_for(digest), digest, size)
        refused = asyncio.Event()
        real_ingest = h.content.ingest

        def spy(*args: Any, **kwargs: Any) -> Any:
            try:
                return real_ingest(*args, **kwargs)
            except IngestLocked:
                h.loop.call_soon_threadsafe(refused.set)
                raise

        h.loop = asyncio.get_running_loop()
        h.content.ingest = spy  # type: ignore[method-assign]
        pull = asyncio.ensure_future(h.pull(ref))
        await asyncio.wait_for(refused.wait(), 20)  # the pull met the held ingest ...
        assert not pull.done()  # ... and waits instead of failing
        await asyncio.to_thread(held.close)
        rec = await asyncio.wait_for(pull, 30)
        assert h.content.exists(digest) and rec.id

    run(tmp_path, body)


def test_ingest_opened_for_a_cancelled_transfer_is_not_left_locked(tmp_path: Path) -> None:
    """A transfer cancelled while its worker thread is opening the blob's ingest (a sibling
    layer failed at that moment): the open completes in the thread, and the writer it made must
    be closed, or every later pull of that blob waits for the lock and fails."""
    from asyncdock.content.store import IngestLocked
    from asyncdock.base.oci import Descriptor

    digest = "sha256:" + "ab" * 32
    desc = Descriptor(mediaType="application/vnd.oci.image.layer.v1.tar+gzip", digest=digest, size=10)

    async def body(h: Harness) -> None:
        for _ in range(20):  # the cancel lands while the open runs in its thread
            opening = asyncio.create_task(h.puller._open_ingest(desc))
            await asyncio.sleep(0)
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                (await opening).close()  # an open that won the race is closed by its owner
            try:
                h.content.ingest(ContentStore.ref_for(digest), digest, 10).close()
            except IngestLocked:
                pytest.fail("the ingest of a cancelled transfer stayed locked")
    run(tmp_path, body)
