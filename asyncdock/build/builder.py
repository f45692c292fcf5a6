"""The classic builder (moby builder/dockerfile): a Dockerfile's stages run step by step, each
step an image whose parent is the one before. A RUN step is a real container run by the engine's
ContainerManager; config steps make (and remove) a container they never start, as dockerd does;
COPY/ADD write into a snapshot prepared on the parent. Every new layer is a LayerCommitter diff.

`Builder` is the engine's (one per engine: the cache index); `Build` is one request."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..base import errors
from ..base.ids import new_id, short_id
from ..base.oci import ContainerConfig, ImageConfig
from .buildargs import BuildArgs
from .state import BuildFailed, StageState, config_copy
from .cache import BuildCache, CacheFromSources
from .options import BuildOptions
from .parse import Instruction, Parsed, parse
from .shellwords import Lex
from ..util.tasks import TaskSet

if TYPE_CHECKING:
    from ..containers.manager import ContainerManager
    from ..content.store import ContentStore
    from ..images.pull import Puller
    from ..images.store import ImageRecord, ImageStore
    from ..snapshots.base import Snapshotter

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]
DOCKER_VERSION = "29.0.0"  # what the config's docker_version says (moby writes its own version)
_RED, _RESET = "\x1b[91m", "\x1b[0m"


class Builder:
    def __init__(self, *, images: ImageStore, content: ContentStore, snapshotter: Snapshotter,
                 containers: ContainerManager, puller: Puller, work_root: str | os.PathLike[str]) -> None:
        self.images = images
        self.content = content
        self.snapshotter = snapshotter
        self.containers = containers
        self.puller = puller
        self.work_root = os.fspath(work_root)
        os.makedirs(self.work_root, exist_ok=True)
        self.cache = BuildCache(images)
        # removals of the snapshots COPY steps wrote into (thousands of files: seconds), off the
        # build's path; awaited at engine close
        self._tasks = TaskSet("build")

    async def recover(self) -> None:
        """At start-up: the scratch snapshots of builds a crash interrupted."""
        for info in await self.snapshotter.list():
            if info.name.startswith("build-") and info.kind != "committed":
                await self.snapshotter.remove(info.name)

    async def close(self) -> None:
        await self._tasks.close(timeout=None)

    def remove_snapshot_later(self, key: str) -> None:
        async def remove() -> None:
            await self.snapshotter.remove(key)

        self._tasks.spawn(remove(), name=f"remove snapshot {key}", failure_level=logging.WARNING)

    async def build(self, opts: BuildOptions, context: Any, emit: Emit) -> str:
        """Run the build; messages go to `emit`; returns the final image ID."""
        b = Build(self, opts, context, emit)
        return await b.run()

    def http_session(self) -> Any:
        """The engine's HTTP client session (the registry client's) for remote contexts."""
        return self.puller.registry.session()

    async def tag(self, image_id: str, name: str) -> str:
        return await self.images.tag(image_id, name)

    def cache_records(self) -> list[dict[str, Any]]:
        return self.cache.records()

    async def prune(self, *, all_: bool = False) -> tuple[list[str], int]:
        return await self.cache.prune(all_=all_)


class Build:
    def __init__(self, builder: Builder, opts: BuildOptions, context: Any, emit: Emit) -> None:
        self.b = builder
        self.opts = opts
        self.context = context
        self._emit = emit
        self.stage_images: dict[str, str] = {}  # stage name / index -> image ID
        self.tmp_containers: list[str] = []
        self.lex = Lex()
        self.cache_from = (CacheFromSources(builder.images, builder.cache, opts.cachefrom, self._restore_cached)
                           if opts.cachefrom else None)

    # ---- output
    async def out(self, text: str) -> None:
        await self._emit({"stream": text})

    async def err(self, text: str) -> None:
        await self._emit({"stream": _RED + text + _RESET})

    async def raw(self, msg: dict[str, Any]) -> None:
        await self._emit(msg)

    # ---- the build
    async def run(self) -> str:
        from .dispatch import Dispatcher

        parsed: Parsed = parse(self.context.dockerfile(self.opts.dockerfile))
        self.lex = Lex(parsed.escape)
        stages = parsed.stages
        if self.opts.target:
            names = [s.name for s in stages]
            target = self.opts.target.lower()
            if target not in names:
                raise BuildFailed(f"failed to reach build target {self.opts.target} in Dockerfile")
            stages = stages[:names.index(target) + 1]
        for k in sorted(self.opts.labels):
            # moby's buildLabelOptions: one LABEL step each, at the end of the last stage
            v = self.opts.labels[k]
            stages[-1].commands.append(Instruction("LABEL", [k, v], {}, False, f"LABEL {k}={v}", 0, no_expand=True))
        total = len(parsed.meta_args) + sum(1 + len(s.commands) for s in stages)
        args = BuildArgs(self.opts.buildargs)
        step = 0
        for m in parsed.meta_args:
            step += 1
            await self.out(f"Step {step}/{total} : {m.original}\n")
            for word in m.args:
                key, eq, value = word.partition("=")
                val: str | None = None
                if eq:
                    val = self.lex.process_word(value, args.all_meta())
                args.add_meta(key, val)
        state: StageState | None = None
        try:
            for index, stage in enumerate(stages):
                if stage.name and stage.name in self.stage_images:
                    raise BuildFailed(f"duplicate name {stage.name}")
                step += 1
                await self.out(f"Step {step}/{total} : {stage.original}\n")
                state = StageState(args.clone_for_stage(), name=stage.name)
                d = Dispatcher(self, state)
                await d.from_(stage)
                await self.out(f" ---> {short_id(state.image_id)}\n")
                for inst in stage.commands:
                    step += 1
                    await self.out(f"Step {step}/{total} : {inst.original}\n")
                    await d.dispatch(inst)
                    await self.out(f" ---> {short_id(state.image_id)}\n")
                if state.image_id:
                    await self.raw({"aux": {"ID": state.image_id}})
                args.merge_referenced(state.args)
                self.stage_images[str(index)] = state.image_id
                if stage.name:
                    self.stage_images[stage.name] = state.image_id
        except asyncio.CancelledError:
            await self._remove_all()
            raise
        except BaseException:
            if self.opts.forcerm:
                await self._remove_all()
            raise
        unused = args.unused()
        if unused:
            await self.err(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        if state is None or not state.image_id:
            raise BuildFailed("No image was generated. Is your Dockerfile empty?")
        return state.image_id

    @property
    def images(self) -> ImageStore:
        return self.b.images

    def stage(self, name: str) -> str | None:
        return self.stage_images.get(name.lower())

    # ---- base images
    async def check_platform(self, spec: str) -> None:
        from ..registry.platforms import host_platform, parse_platform

        want, host = parse_platform(spec), host_platform()
        if want.os != host.os or (want.architecture and want.architecture != host.architecture) or \
                (want.variant and host.variant and want.variant != host.variant):
            have = "/".join(p for p in (host.os, host.architecture, host.variant) if p)
            raise errors.InvalidParameter(
                f'the classic builder runs steps on this host ({have}) only: platform "{spec}" cannot be built here')

    async def image_for(self, name: str) -> ImageRecord:
        """A FROM or COPY --from image: the local one, else (and with pull=1 always) pulled
        through the engine's puller, its progress in the build's stream."""
        from ..registry.platforms import parse_platform
        from ..registry.reference import parse_normalized

        images = self.b.images
        if not self.opts.pull:
            try:
                return images.resolve(name)
            except errors.NotFound:
                pass
        ref = parse_normalized(name)
        if ref.tag is None and ref.digest is None:
            ref = ref.with_default_tag()
        auth = self.opts.auth.get(ref.domain)
        if auth is None and ref.domain == "docker.io":
            auth = self.opts.auth.get("https://index.docker.io/v1/")
        platform = parse_platform(self.opts.platform) if self.opts.platform else None
        try:
            return await self.b.puller.pull(ref, auth, self.raw, platform=platform)
        except errors.EngineError as e:
            if self.opts.pull:
                try:
                    return images.resolve(name)  # moby: a failed --pull of a local image builds on it
                except errors.NotFound:
                    pass
            raise BuildFailed(str(e)) from None

    # ---- the cache
    async def probe(self, state: StageState, cc: ContainerConfig) -> bool:
        if self.opts.nocache:
            return False
        if self.cache_from is not None:
            hit = await self.cache_from.lookup(state.image_id, cc, os_=state.os)
        else:
            hit = self.b.cache.lookup(state.image_id, cc, os_=state.os)
        if hit is None:
            return False
        await self.out(" ---> Using cache\n")
        state.image_id = hit
        rec = self.b.images.get(hit)
        state.image, state.image_config = rec, self.b.images.config(rec)
        return True

    # ---- steps
    async def create_container(self, state: StageState, cfg: ContainerConfig) -> Any:
        from ..containers.models import CreateRequest, HostConfig, LogConfig

        body = msgspec.convert(msgspec.to_builtins(cfg), CreateRequest)
        body.image = state.image_id
        o = self.opts
        body.host_config = HostConfig(
            network_mode=o.networkmode or "default", extra_hosts=o.extrahosts or None, shm_size=o.shmsize,
            memory=o.memory, memory_swap=o.memswap, cpu_shares=o.cpushares, cpuset_cpus=o.cpusetcpus,
            cpuset_mems=o.cpusetmems, cpu_period=o.cpuperiod, cpu_quota=o.cpuquota,
            log_config=LogConfig(type="none"))
        rec = await self.b.containers.create(body, None)
        self.tmp_containers.append(rec.id)
        await self.out(f" ---> Running in {short_id(rec.id)}\n")
        return rec

    async def commit_config_step(self, state: StageState, cc: ContainerConfig) -> None:
        if await self.probe(state, cc):
            return
        cid = ""
        if state.image_id:
            rec = await self.create_container(state, cc)
            cid = rec.id
        await self.new_image(state, cc, None, cid)
        if cid and self.opts.rm:
            await self.remove_container(cid)

    async def workdir_step(self, state: StageState, cc: ContainerConfig) -> None:
        if await self.probe(state, cc):
            return
        if not state.image_id:
            await self.new_image(state, cc, None, "")
            return
        rec = await self.create_container(state, cc)
        path = state.run_config.working_dir
        async with self.mounted(rec.id) as root_fd:
            await asyncio.to_thread(mkdir_all, root_fd, path)
        layer = await self.committer().commit(rec.id, self._top(state))
        await self.new_image(state, cc, layer, rec.id)
        if self.opts.rm:
            await self.remove_container(rec.id)

    async def run_step(self, state: StageState, run: ContainerConfig, probe: ContainerConfig) -> None:
        from ..containers.attachment import Attachment

        if await self.probe(state, probe):
            return
        if not state.image_id:
            raise BuildFailed("a RUN step needs a base image (FROM scratch has no shell)")
        mgr = self.b.containers
        rec = await self.create_container(state, run)
        att = Attachment(mgr, rec, stream=True)
        pump = asyncio.ensure_future(self._pump(att.output))
        try:
            await mgr.start(rec)
            code = await mgr.wait(rec, "not-running")
            await pump
        finally:
            if not pump.done():
                pump.cancel()
            att.close()
        if code != 0:
            raise BuildFailed(f"The command '{' '.join(run.cmd or [])}' returned a non-zero code: {code}", code)
        layer = await self.committer().commit(rec.id, self._top(state))
        await self.new_image(state, probe, layer, rec.id)
        if self.opts.rm:
            await self.remove_container(rec.id)

    async def _pump(self, q: asyncio.Queue[tuple[int, bytes] | None] | None) -> None:
        if q is None:
            return
        while True:
            item = await q.get()
            if item is None:
                return
            stream, data = item
            text = data.decode("utf-8", "replace")
            if stream == 2:
                await self.err(text)
            else:
                await self.out(text)

    async def copy_step(self, state: StageState, cmd: str, sources: list[str], dest: str, *, chown: str,
                        chmod: str, source_image: ImageRecord | None, add: bool) -> None:
        """COPY/ADD: the cache key is the sources' checksum in the Cmd text
        (`#(nop) COPY file:<sum> in /dest `); on a miss, a snapshot on the parent is mounted,
        written through build/copy and committed."""
        from . import copy as copy_mod

        copy_mod.refuse_heredocs(cmd, sources)
        mode = copy_mod.parse_chmod(chmod) if chmod else None
        numeric = copy_mod.numeric_chown(chown) if chown else None
        session = self.b.http_session() if add else None
        key = f"build-{new_id()}"
        adopted = ""
        src_key = f"build-src-{new_id()}" if source_image is not None else ""
        workdir = state.run_config.working_dir or "/"
        try:
            async with contextlib.AsyncExitStack() as stack:
                src_fd: int | None = None
                if source_image is not None:
                    top = await self.b.images.ensure_layers(source_image)
                    if top:
                        await self.b.snapshotter.view(src_key, top)
                    else:
                        await self.b.snapshotter.prepare(src_key, None)
                    src_fd = await stack.enter_async_context(self.mounted(src_key))
                checksum = await copy_mod.source_checksum(self.context, sources, dest=dest, src_fd=src_fd, add=add,
                                                          session=session)
                cc = config_copy(state.run_config)
                cc.cmd = [*(state.run_config.shell or ["/bin/sh", "-c"]), f"#(nop) {cmd} {checksum} in {dest} "]
                if await self.probe(state, cc):
                    return
                t0 = time.perf_counter()
                # The step's parent layers, present (a committed image's are unpacked later).
                parent_top = await self.b.images.ensure_layers(state.image) if state.image is not None else None
                await self.b.snapshotter.prepare(key, parent_top)
                async with self.mounted(key) as root_fd:
                    ids = numeric
                    if chown and ids is None:
                        ids = await asyncio.to_thread(self._chown_ids, key, chown)
                    await copy_mod.copy_into(self.context, sources, dest, root_fd, workdir=workdir, chown=ids,
                                             chmod=mode, add=add, session=session, src_fd=src_fd)
            t1 = time.perf_counter()
            # Nothing else writes the scratch snapshot: it becomes the layer's snapshot itself.
            layer = await self.committer().commit(key, parent_top, snapshot="adopt")
            if layer is not None and not await self.b.snapshotter.exists(key):
                adopted = key
            t2 = time.perf_counter()
            await self.new_image(state, cc, layer, "")
            log.debug("%s: copy %.1f ms, layer commit %.1f ms, image %.1f ms", cmd, 1000 * (t1 - t0),
                      1000 * (t2 - t1), 1000 * (time.perf_counter() - t2))
        finally:
            for k in (key, src_key):
                if k and k != adopted:
                    self.b.remove_snapshot_later(k)

    def _chown_ids(self, key: str, chown: str) -> tuple[int, int]:
        """--chown=name[:group]: the ids from the step's rootfs (containers/spec.resolve_user:
        moby's rules; a name alone takes its passwd group)."""
        from ..containers.spec import resolve_user

        uid, gid, _ = resolve_user(self._mount_dir(key), chown)
        return uid, gid

    # ---- mounts, layers, images
    def _mount_dir(self, key: str) -> Path:
        return Path(self.b.work_root) / key

    @contextlib.asynccontextmanager
    async def mounted(self, key: str) -> AsyncIterator[int]:
        """The snapshot `key` mounted in the builder's work dir; yields an O_PATH fd of its root."""
        from ..containers.rootfs_fs import open_root
        from ..snapshots.mount import mount, unmount

        target = self._mount_dir(key)
        target.mkdir(parents=True, exist_ok=True)
        mounts = await self.b.snapshotter.mounts(key)
        await asyncio.to_thread(mount, mounts, target)
        fd = -1
        try:
            fd = open_root(target)
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)
            await asyncio.to_thread(unmount, target, detach=True)
            with contextlib.suppress(OSError):
                target.rmdir()

    def committer(self) -> Any:
        from ..images.layercommit import LayerCommitter

        return LayerCommitter(self.b.content, self.b.snapshotter)

    def _top(self, state: StageState) -> str | None:
        return self.b.images.top_chain_id(state.image) if state.image is not None else None

    async def new_image(self, state: StageState, cc: ContainerConfig, layer: Any, container_id: str) -> None:
        """The step's image (images/newimage, shared with commit): the run config, the step's
        container_config, History CreatedBy the Cmd joined (moby's CommitBuildStep)."""
        from ..base.oci import History
        from ..images.newimage import make_image

        cfg = ImageConfig(config=config_copy(state.run_config), container_config=cc, container=container_id,
                          author=state.maintainer, docker_version=DOCKER_VERSION,
                          os=state.os, architecture=state.arch)
        rec = await make_image(self.b.images, self.b.content, parent=state.image, config=cfg, layer=layer,
                               history=History(created_by=" ".join(cc.cmd or []), author=state.maintainer),
                               parent_id_link=True)
        self.b.cache.added(rec)
        state.image_id, state.image, state.image_config = rec.id, rec, self.b.images.config(rec)

    async def _restore_cached(self, parent: ImageRecord | None, target: ImageRecord, index: int,
                              cc: ContainerConfig) -> ImageRecord:
        """moby restoreCachedImage: the step's image made from history entry `index` of the
        --cache-from image `target` (its layer, if the entry has one) on `parent`."""
        from ..images.layercommit import NewLayer
        from ..images.newimage import make_image
        from .cache import history_layer_index

        t_cfg = self.b.images.config(target)
        entry = (t_cfg.history or [])[index]
        li = history_layer_index(list(t_cfg.history or []), index)
        layer = None
        if li is not None:
            layer = NewLayer(target.diff_ids[li], target.layers[li],
                             target.layer_sizes[li] if li < len(target.layer_sizes) else 0, target.chain_ids[li])
        cfg = ImageConfig(config=cc, author=t_cfg.author, docker_version=DOCKER_VERSION, os=t_cfg.os,
                          architecture=t_cfg.architecture, created=entry.created)
        rec = await make_image(self.b.images, self.b.content, parent=parent, config=cfg, layer=layer,
                               history=entry, parent_id_link=parent is not None)
        self.b.cache.added(rec)
        return rec

    # ---- temporary containers
    async def remove_container(self, cid: str) -> None:
        mgr = self.b.containers
        try:
            rec = mgr.get(cid)
        except errors.NotFound:
            return
        with contextlib.suppress(errors.NotFound):
            await mgr.remove(rec, force=True, volumes=True)
        if cid in self.tmp_containers:
            self.tmp_containers.remove(cid)
        await self.out(f" ---> Removed intermediate container {short_id(cid)}\n")

    async def _remove_all(self) -> None:
        """After a failure with forcerm, or a cancelled build (nobody is left to look at them):
        the build's containers go. Without forcerm a failed step's container stays, as in
        dockerd, for `docker logs` / `docker commit`."""
        for cid in list(self.tmp_containers):
            try:
                await asyncio.shield(self.remove_container(cid))
            except Exception as e:  # noqa: BLE001 - a leftover container is not the build's error
                log.warning("cannot remove build container %s: %s", short_id(cid), e)
        self.tmp_containers.clear()


def mkdir_all(root_fd: int, path: str) -> None:
    """WORKDIR's mkdir -p inside a rootfs, every component resolved in the root (a symlink in
    the image never leads out of it)."""
    from ..containers.rootfs_fs import open_in_root

    cur = "/"
    for part in [p for p in path.split("/") if p]:
        parent = open_in_root(root_fd, cur)
        try:
            try:
                os.mkdir(part, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
        finally:
            os.close(parent)
        cur = posixpath.join(cur, part)
