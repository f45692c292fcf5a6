"""The Engine owns every subsystem; nothing else holds mutable state.

`async with Engine(config) as engine:` builds the stores, probes the runtimes, recovers what a
crash left behind, and on exit stops running containers (Docker without live-restore).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from . import plugins
from .base.clock import Clock, SystemClock
from .config import DaemonConfig
from .events import EventBus
from .leftovers import Leftovers
from .util.fstree import remove_tree
from .base.ids import new_id
from .util.tasks import TaskSet

if TYPE_CHECKING:
    from .build.builder import Builder
    from .containers.manager import ContainerManager
    from .content.store import ContentStore
    from .images.archive import ImageArchive
    from .images.pull import Puller
    from .images.push import Pusher
    from .images.store import ImageStore
    from .logs.base import LogDriver
    from .networks.manager import NetworkManager
    from .runtime.base import OCIRuntime, ProbeResult
    from .runtime.reaper import ExitWatcher
    from .snapshots.base import Snapshotter
    from .volumes.manager import VolumeManager

log = logging.getLogger(__name__)

HOUSEKEEPING_PERIOD = 30.0


class Engine:
    def __init__(self, config: DaemonConfig | None = None, *, data_root: str | None = None,
                 exec_root: str | None = None, clock: Clock | None = None, **settings: object) -> None:
        cfg = config or DaemonConfig()
        if data_root is not None:
            cfg.data_root = data_root
        if exec_root is not None:
            cfg.exec_root = exec_root
        for k, v in settings.items():
            setattr(cfg, k, v)
        self.config = cfg
        self.data_root = Path(cfg.data_root)
        self.exec_root = Path(cfg.exec_root)
        # the time every subsystem waits on and stamps with (a test's fake one, tests/support)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.bus = EventBus(clock=self.clock.time_ns)
        # clean-ups of what earlier runs left: failures logged and retried, never fatal
        self.leftovers = Leftovers(self.clock.monotonic)
        self.engine_id = ""
        self.runtimes: dict[str, OCIRuntime] = {}
        self.runtime_probes: dict[str, ProbeResult] = {}
        self.default_runtime = ""
        self.logdrivers: dict[str, LogDriver] = {}
        # The subsystems, built by start() in dependency order (None before it).
        self.snapshotter: Snapshotter | None = None
        self.content: ContentStore | None = None
        self.images: ImageStore | None = None
        self.puller: Puller | None = None
        self.archive: ImageArchive | None = None  # docker save / docker load
        self.pusher: Pusher | None = None
        self.containers: ContainerManager | None = None
        self.exits: ExitWatcher | None = None
        self.networks: NetworkManager | None = None
        self.volumes: VolumeManager | None = None
        self.builder: Builder | None = None
        self._started = False
        self._init_version: str | None = None
        self._tasks = TaskSet("engine", clock=self.clock)  # the housekeeping loop

    # ---- lifecycle
    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        for d in (self.data_root, self.exec_root):
            d.mkdir(parents=True, exist_ok=True, mode=0o711)
        self.engine_id = self._load_engine_id()
        # The durable events journal: recovered (torn tail dropped, epoch bumped after a crash)
        # before anything is published, so every event of this run is numbered and journaled.
        self.bus.open_journal(self.data_root / "events")
        from .runtime.reaper import ExitWatcher

        # The engine becomes the child subreaper here, so container inits re-parent to it.
        self.exits = ExitWatcher()
        # Every runtime call spawns a process: the pidfd watcher costs 1.2 ms a spawn against
        # 4 ms for the default threaded one (measured), and never waits on pids it did not spawn.
        if hasattr(asyncio, "PidfdChildWatcher"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                watcher = asyncio.PidfdChildWatcher()
                watcher.attach_loop(asyncio.get_running_loop())
                asyncio.set_child_watcher(watcher)
        self.snapshotter = await self._make_snapshotter()
        from .content.store import ContentStore
        from .images.pull import Puller
        from .images.store import ImageStore

        self.content = ContentStore(self.data_root / "content")
        self.images = ImageStore(self.data_root / "images", self.content, self.snapshotter, bus=self.bus)
        from .images.origins import BlobOrigins
        from .images.push import Pusher

        origins = BlobOrigins(self.data_root / "images" / "distribution")
        self.puller = Puller(self.config, self.content, self.images, self.snapshotter, self.bus, origins=origins)
        self.pusher = Pusher(self.config, self.content, self.images, self.puller.registry, origins, self.bus)
        from .images.archive import ImageArchive
        self.archive = ImageArchive(self.config, self.content, self.images, self.snapshotter, self.bus,
                                    self.data_root / "archive")
        await self.leftovers.run("staging snapshots of interrupted pulls",
                                 _done(self.puller.recover))
        await self.leftovers.run("layer snapshots no image uses",
                                 _done(self.images.remove_unreferenced_layers))
        await self.leftovers.run("staging snapshots of interrupted layer unpacks",
                                 _done(self.images.layers.recover))
        self.logdrivers = {name: reg.factory(plugins.InitContext(self.data_root / "containers"))
                           for name, reg in plugins.discover(plugins.LOGDRIVERS).items()}
        if self.config.log_driver not in self.logdrivers:
            raise SystemExit(f"asyncdock: unknown log driver {self.config.log_driver!r} "
                             f"(have: {', '.join(sorted(self.logdrivers))})")
        await self._select_runtimes()
        # networks and volumes exist before any container is recovered
        from .networks.manager import NetworkManager
        from .volumes.manager import VolumeManager

        self.networks = NetworkManager(bus=self.bus, data_root=self.data_root, exec_root=self.exec_root,
                                       leftovers=self.leftovers)
        await self.networks.start()  # its own leftovers: logged per item, never fatal
        self.volumes = VolumeManager(bus=self.bus, data_root=self.data_root, exec_root=self.exec_root)
        await self.volumes.start()
        from .containers.deps import ContainerDeps, ContainerSettings
        from .containers.manager import ContainerManager

        settings = ContainerSettings(
            data_root=self.data_root, exec_root=self.exec_root, default_runtime=self.default_runtime,
            storage_driver=self.storage_driver_name(), log_driver=self.config.log_driver,
            log_opts=dict(self.config.log_opts),
            legacy_link_env=os.environ.get("DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS", "1") != "0")
        self.containers = ContainerManager(ContainerDeps(
            settings=settings, bus=self.bus, images=self.images, runtimes=self.runtimes,
            snapshotter=self.snapshotter, networks=self.networks, volumes=self.volumes,
            logdrivers=self.logdrivers, exits=self.exits, leftovers=self.leftovers, clock=self.clock))
        self.networks.set_container_lookup(self.containers.get)
        self.images.set_in_use(self.containers.image_users, self.containers.reclaimed)
        await self.containers.recover()
        from .build.builder import Builder

        self.builder = Builder(images=self.images, content=self.content, snapshotter=self.snapshotter,
                               containers=self.containers, puller=self.puller, work_root=self.data_root / "build")
        await self.leftovers.run("scratch snapshots of interrupted builds", _done(self.builder.recover))
        self._tasks.spawn(self._housekeeping(self.snapshotter, self.exits, self.puller), name="housekeeping")
        self._started = True
        self.bus.event("daemon", "start", self.engine_id, {"name": os.uname().nodename})

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._tasks.close()  # no housekeeping pass under the shutdown's feet
        if self.builder is not None:
            await self.builder.close()  # its snapshot removals, before the snapshotter closes
        if self.images is not None:
            await self.images.layers.close()  # a commit's layer still being unpacked
        if self.containers is not None:
            await self.containers.shutdown()
        for rt in self.runtimes.values():
            rt.close()
        # after the containers stopped; removes bridges, veths, netns, our nftables chains and
        # proxies, and restores IPv4 forwarding
        if self.networks is not None:
            await self.networks.shutdown()
        if self.volumes is not None:
            await self.volumes.shutdown()
        if self.puller is not None:
            await self.puller.close()
        if self.snapshotter is not None and hasattr(self.snapshotter, "close"):
            await self.snapshotter.close()  # removals it has not written yet
        self.bus.event("daemon", "stop", self.engine_id, {"name": os.uname().nodename})
        await self.bus.close_journal()  # flush, fsync, mark the stop clean (numbering goes on)

    async def _housekeeping(self, snap: Snapshotter, exits: ExitWatcher, puller: Puller) -> None:
        """Retry clean-ups that failed, reap zombies nobody waits for (orphans of --pid host
        containers and detached execs) and drop partial downloads no pull wants any more."""
        while True:
            await self.clock.sleep(HOUSEKEEPING_PERIOD)
            try:
                await self.leftovers.retry_due()
                # a snapshotter plugin may say that a removal which failed earlier in this run
                # left its directory
                if getattr(snap, "has_leftovers", False):
                    await self.leftovers.run("snapshot directories left behind",
                                             _done(snap.cleanup))
                exits.reap_orphans()
                await puller.gc_ingests()
            except Exception:
                log.exception("housekeeping")

    # ---- construction helpers
    def _load_engine_id(self) -> str:
        p = self.data_root / "engine-id"
        try:
            value = p.read_text().strip()
        except FileNotFoundError:
            value = ""
        except (OSError, UnicodeDecodeError) as e:
            from .util.corrupt import move_aside

            move_aside(p, e, "engine ID file")
            value = ""
        if value:
            return value
        # new, or an empty file (never written by us: the write is atomic): a new ID
        from .util.atomic import atomic_write_bytes

        raw = new_id()[:48].upper()
        value = ":".join(raw[i:i + 4] for i in range(0, 48, 4))
        atomic_write_bytes(p, value.encode())
        return value

    async def _make_snapshotter(self) -> Snapshotter:
        regs = plugins.discover(plugins.SNAPSHOTTERS)
        wanted = self.config.storage_driver
        if wanted in ("overlay2", "overlay"):
            wanted = "overlayfs"
        if not wanted:
            wanted = "overlayfs"
            reg = regs.get(wanted)
            if reg is not None and reg.usable is not None:
                # asked on the data-root's own file system: overlay cannot use every one as upper
                if not await asyncio.to_thread(reg.usable, self.data_root / "snapshots"):
                    log.warning("overlay is not usable here; using the copy snapshotter")
                    wanted = "copy"
        if wanted not in regs:
            raise SystemExit(f"asyncdock: unknown storage driver {wanted!r} (have: {', '.join(sorted(regs))})")
        root = self.data_root / "snapshots" / wanted
        root.mkdir(parents=True, exist_ok=True)
        made = regs[wanted].factory(plugins.InitContext(root))
        if asyncio.iscoroutine(made):
            made = await made
        # the plugin contract: the factory of the snapshotter group makes a Snapshotter (the
        # conformance suite, tests/conformance/test_snapshotter.py, holds every plugin to it)
        snap = cast("Snapshotter", made)
        await self.leftovers.run("snapshot directories left behind", _done(snap.cleanup))
        return snap

    async def _select_runtimes(self) -> None:
        from .runtime.select import select_runtimes

        work = self.exec_root / "probe"
        rootfs = await asyncio.to_thread(self._probe_rootfs)
        try:
            default, runtimes, probes = await select_runtimes(
                self.config, plugins.discover(plugins.RUNTIMES), work, rootfs)
        except Exception as e:
            if type(e).__name__ == "RuntimeUnavailable":
                raise SystemExit(f"asyncdock: {e}") from None
            raise
        self.default_runtime, self.runtimes, self.runtime_probes = default, runtimes, probes

    def _probe_rootfs(self) -> Path:
        """A tiny rootfs (static busybox) to try each runtime on. Built once per exec-root."""
        root = self.exec_root / "probe-rootfs"
        busybox = shutil.which("busybox") or "/bin/busybox"
        if (root / "bin" / "busybox").exists():
            return root
        tmp = root.with_name("probe-rootfs.tmp")
        remove_tree(tmp)
        for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        if os.path.exists(busybox):
            shutil.copy2(busybox, tmp / "bin" / "busybox")
            for applet in ("sh", "true"):
                os.symlink("busybox", tmp / "bin" / applet)
        remove_tree(root)
        os.rename(tmp, root)
        return root

    # ---- facts for /info and /version
    def container_counts(self) -> dict[str, int]:
        if self.containers is None:
            return {"total": 0, "running": 0, "paused": 0, "stopped": 0}
        return self.containers.counts()

    def build_cache_records(self) -> list[dict[str, object]]:
        """`docker system df`'s build cache: the classic builder's cached intermediate images."""
        return self.builder.cache_records() if self.builder is not None else []

    def image_count(self) -> int:
        return len(self.images.list()) if self.images is not None else 0

    def storage_driver_name(self) -> str:
        # Tools parse "overlay2"; our overlay snapshotter lays layers out the same way.
        name = getattr(self.snapshotter, "name", "")
        return "overlay2" if name in ("overlayfs", "overlay") else (name or "")

    def storage_driver_status(self) -> list[list[str]]:
        return [["Snapshotter", getattr(self.snapshotter, "name", "")],
                ["Parallel unpack", str(bool(getattr(self.snapshotter, "independent_layers", False))).lower()]]

    def logdriver_names(self) -> list[str]:
        return list(self.logdrivers)

    def events_listeners(self) -> int:
        return len(self.bus._subs)

    def task_count(self) -> int:
        try:
            return len(asyncio.all_tasks())
        except RuntimeError:
            return 0

    def init_binary_version(self) -> str:
        if self._init_version is None:
            tini = shutil.which("tini") or shutil.which("tini-static")
            out = ""
            if tini:
                try:
                    out = subprocess.run([tini, "--version"], capture_output=True, text=True, timeout=2).stdout
                except (OSError, subprocess.SubprocessError):
                    out = ""
            parts = out.split()
            self._init_version = parts[2] if len(parts) >= 3 else out.strip()
        return self._init_version


def _done(cleanup: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[bool]]:
    """A clean-up for Leftovers.run: done unless it says False (None counts as done)."""
    async def run() -> bool:
        return await cleanup() is not False
    return run
