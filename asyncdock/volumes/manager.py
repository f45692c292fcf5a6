"""VolumeManager: named and anonymous volumes (driver plugins, `local` by default), their use by
containers (in-use refusal, copy-up of image content, mount/unmount events) and the /volumes API.

The container path calls: prepare_mounts (create) -> spec_binds (start) -> release_mounts (stop)
-> container_removed (remove).
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .. import plugins
from ..base import errors
from ..containers.models import MountPoint
from ..containers.spec import BindMount
from ..base.timefmt import rfc3339nano
from ..events.sink import EventSink
from ..snapshots.base import Mount
from ..base.ids import new_id
from .base import Volume, VolumeDriver
from .store import VolumeStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_PROPAGATION = {"shared", "rshared", "slave", "rslave", "private", "rprivate"}


class VolumeManager:
    def __init__(self, *, bus: EventSink, data_root: Path, exec_root: Path) -> None:
        self.bus = bus
        self.root = Path(data_root) / "volumes"
        # where a container's snapshot is mounted for the copy-up of image content at create
        self.copyup_root = Path(exec_root) / "volume-copyup"
        # staging bind mounts of VolumeOptions.Subpath (safepath.py): <cid>/<n>, what the
        # runtime binds into the container; unmounted once it has
        self.subpath_root = Path(exec_root) / "volume-subpaths"
        self.store = VolumeStore(self.root)
        self.drivers: dict[str, VolumeDriver] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        for name, reg in plugins.discover(plugins.VOLUMES).items():
            self.drivers[name] = reg.factory(plugins.InitContext(self.root))
        await asyncio.to_thread(self.store.load)
        await asyncio.to_thread(self._cleanup_leftovers)

    def _cleanup_leftovers(self) -> None:
        """Mounts a previous run that died left: a copy-up's view of a container's snapshot
        (a crash in the middle of a create) and volumes mounted for containers (nothing runs
        at start: containers do not outlive the daemon)."""
        from ..snapshots.mount import unmount_all_under

        from .safepath import unstage_all

        copyup = self.copyup_root
        for staged in self.subpath_root.iterdir() if self.subpath_root.exists() else ():
            try:
                unstage_all(staged)
            except OSError as e:
                log.warning("unmounting the subpath mounts a previous run left in %s: %s", staged, e)
        for where in (copyup, self.root):
            try:
                for point in unmount_all_under(where):
                    log.info("unmounted %s, left by a previous run", point)
            except OSError as e:
                log.warning("unmounting what a previous run left under %s: %s", where, e)
        # rmdir, never a recursive delete: a mount point still mounted (the unmount failed)
        # shows a container's files
        for d in copyup.iterdir() if copyup.exists() else ():
            with contextlib.suppress(OSError):
                d.rmdir()

    async def shutdown(self) -> None:
        for d in self.drivers.values():
            fn = getattr(d, "unmount_all", None)
            if fn is not None:
                await asyncio.to_thread(fn)

    # ------------------------------------------------------------------ CRUD
    def _driver(self, name: str) -> VolumeDriver:
        d = self.drivers.get(name or "local")
        if d is None:
            raise errors.NotFound(f'plugin "{name}" not found')
        return d

    def get(self, name: str) -> Volume:
        v = self.store.volumes.get(name)
        if v is None:
            raise errors.NotFound(f"get {name}: no such volume")
        return v

    async def create(self, name: str = "", driver: str = "local", options: dict[str, str] | None = None,
                     labels: dict[str, str] | None = None, *, anonymous: bool = False) -> tuple[Volume, bool]:
        """Returns (volume, created). An existing name answers the existing volume, as Docker."""
        driver = driver or "local"
        if not name:
            name, anonymous = new_id(), True
        if not _NAME.match(name):
            raise errors.InvalidParameter(
                f'create {name}: "{name}" includes invalid characters for a local volume name, only '
                f'"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path')
        async with self._lock:
            have = self.store.volumes.get(name)
            if have is not None:
                if have.driver != driver:
                    raise errors.Conflict(f"create {name}: volume name already in use with driver {have.driver}")
                return have, False
            d = self._driver(driver)
            await asyncio.to_thread(d.create, name, dict(options or {}))
            now = time.time_ns()
            v = Volume(name=name, driver=driver, created_at=_created_at(now), created_ns=now,
                       labels=None if anonymous and labels is None else dict(labels or {}),
                       options=None if anonymous and options is None else dict(options or {}), anonymous=anonymous)
            try:
                await asyncio.to_thread(self.store.save, v)
            except BaseException:
                await asyncio.to_thread(d.remove, name)
                raise
        self.bus.event("volume", "create", name, {"driver": driver})
        return v, True

    async def remove(self, name: str, *, force: bool = False) -> None:
        async with self._lock:
            v = self.store.volumes.get(name)
            if v is None:
                if force:
                    return
                raise errors.NotFound(f"get {name}: no such volume")
            if v.users:
                raise errors.Conflict(f"remove {name}: volume is in use - [{', '.join(v.users)}]")
            await asyncio.to_thread(self._driver(v.driver).remove, name)
            await asyncio.to_thread(self.store.delete, name)
        self.bus.event("volume", "destroy", name, {"driver": v.driver})

    def list(self, filters: dict[str, list[str]] | None = None) -> list[Volume]:
        from ..base.filters import bool_filter, match_label

        f = filters or {}
        for key in f:
            if key not in ("dangling", "name", "label", "label!", "driver", "all"):
                raise errors.InvalidParameter(f"invalid filter '{key}'")
        dangling = bool_filter(f.get("dangling", []), "dangling")
        out = []
        for v in sorted(self.store.volumes.values(), key=lambda x: x.name):
            if dangling is not None and (not v.users) != dangling:
                continue
            if f.get("name") and not any(n in v.name for n in f["name"]):
                continue
            if f.get("driver") and v.driver not in f["driver"]:
                continue
            if f.get("label") and not match_label(v.labels or {}, f["label"]):
                continue
            if f.get("label!") and any(match_label(v.labels or {}, [x]) for x in f["label!"]):
                continue
            out.append(v)
        return out

    async def prune(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        f = dict(filters or {})
        f.pop("all", None)  # API 1.41 prunes every unused volume, named or anonymous
        deleted: list[str] = []
        reclaimed = 0
        for v in self.list({k: vals for k, vals in f.items()}):
            if v.users:
                continue
            try:
                size = await asyncio.to_thread(self._driver(v.driver).usage, v.name)
                await self.remove(v.name)
            except errors.EngineError:
                continue
            deleted.append(v.name)
            reclaimed += max(size, 0)
        return deleted, reclaimed

    def volume_json(self, v: Volume, *, usage: tuple[int, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"CreatedAt": v.created_at, "Driver": v.driver, "Labels": v.labels,
                               "Mountpoint": str(self._driver(v.driver).path(v.name)), "Name": v.name,
                               "Options": v.options, "Scope": "local"}
        if usage is not None:
            out["UsageData"] = {"Size": usage[0], "RefCount": usage[1]}
        return out

    async def df(self) -> list[dict[str, Any]]:
        """The Volumes section of `GET /system/df`."""
        out = []
        for v in self.list():
            size = await asyncio.to_thread(self._driver(v.driver).usage, v.name)
            out.append(self.volume_json(v, usage=(size, len(v.users))))
        return out

    # ------------------------------------------------------------------ containers
    async def prepare_mounts(self, cid: str, *, binds: list[str] | None = None, mounts: list[Any] | None = None,
                             image_volumes: dict[str, Any] | None = None,
                             config_volumes: dict[str, Any] | None = None,
                             volumes_from: list[tuple[list[MountPoint], str]] | None = None,
                             rootfs_view: Path | None = None, volume_driver: str = "",
                             readonly_non_recursive: bool = False) -> list[MountPoint]:
        """At container create: parse -v / --mount / VOLUME / --volumes-from, create the volumes
        they name (anonymous ones for bare paths), copy the image's content into new empty
        volumes (from `rootfs_view`, the container's rootfs mounted), record the container as
        a user. Returns the MountPoints for the record (inspect `Mounts`), in precedence order:
        --mount and -v beat --volumes-from, which beats the image's VOLUME.
        `readonly_non_recursive`: the request came through an API below 1.44, where a read-only
        bind was not recursively read-only (moby's DefaultReadOnlyNonRecursive)."""
        by_dest: dict[str, MountPoint] = {}
        nocopy: set[str] = set()
        created: list[str] = []
        try:
            # lazily, in order: a duplicate is reported before a later entry is parsed
            parsed = itertools.chain((self._parse_bind(spec) for spec in binds or []),
                                     (self._parse_mount(m) for m in mounts or []))
            for mp, no_copy in parsed:
                if mp.destination in by_dest:
                    raise errors.InvalidParameter(f"Duplicate mount point: {mp.destination}")
                if readonly_non_recursive and mp.type == "bind" and not mp.rw:
                    mp.ro_non_recursive = True
                by_dest[mp.destination] = mp
                if no_copy:
                    nocopy.add(mp.destination)
            for other_mounts, mode in volumes_from or []:
                for om in other_mounts:
                    if om.destination in by_dest or om.type == "tmpfs":
                        continue
                    rw = om.rw if mode in ("", None) else mode == "rw"
                    by_dest[om.destination] = MountPoint(type=om.type, source=om.source, destination=om.destination,
                                                         mode=om.mode, rw=rw, propagation=om.propagation,
                                                         name=om.name, driver=om.driver, subpath=om.subpath,
                                                         ro_non_recursive=om.ro_non_recursive,
                                                         ro_force_recursive=om.ro_force_recursive)
            for dest in list(config_volumes or {}) + list(image_volumes or {}):
                dest = _clean(dest)
                if dest in by_dest:
                    continue
                by_dest[dest] = MountPoint(type="volume", source="", destination=dest, mode="", rw=True,
                                           propagation="", name="", driver=volume_driver or "local")
            out: list[MountPoint] = []
            for dest, mp in by_dest.items():
                if mp.type == "volume":
                    fresh = False
                    if not mp.name:
                        v, fresh = await self.create("", mp.driver or "local", anonymous=True)
                    else:
                        try:
                            v = self.get(mp.name)
                        except errors.NotFound:
                            v, fresh = await self.create(mp.name, mp.driver or volume_driver or "local")
                    if fresh:
                        created.append(v.name)
                    mp = MountPoint(type="volume", source=str(self._driver(v.driver).path(v.name)),
                                    destination=dest, mode=mp.mode, rw=mp.rw, propagation=mp.propagation,
                                    name=v.name, driver=v.driver, subpath=mp.subpath)
                    if dest not in nocopy and rootfs_view is not None and (mp.subpath or not v.populated):
                        await self._copy_up(v, rootfs_view, dest, cid=cid, subpath=mp.subpath)
                    await self._add_user(v.name, cid)
                elif mp.type == "bind":
                    if not os.path.exists(mp.source):
                        # -v creates a missing host directory (Docker's legacy behaviour); --mount
                        # refused it already in _parse_mount
                        os.makedirs(mp.source, exist_ok=True)
                out.append(mp)
            return out
        except BaseException:
            for name in created:
                with contextlib.suppress(Exception):
                    await self._drop_user(name, cid)
                    await self.remove(name, force=True)
            raise

    def _parse_bind(self, spec: str) -> tuple[MountPoint, bool]:
        parts = spec.split(":")
        if len(parts) == 1 or len(parts) > 3 or not all(parts[:2]):
            raise errors.InvalidParameter(f"invalid volume specification: '{spec}'")
        src, dst = parts[0], parts[1]
        mode = parts[2] if len(parts) == 3 else ""
        if not dst.startswith("/"):
            raise errors.InvalidParameter(f"invalid volume specification: '{spec}': invalid mount config for type "
                                          f"\"{'bind' if src.startswith('/') else 'volume'}\": invalid mount path: "
                                          f"'{dst}' mount path must be absolute")
        rw, propagation, no_copy = True, "", False
        for o in [x for x in mode.split(",") if x]:
            if o == "ro":
                rw = False
            elif o in ("rw", "z", "Z"):
                continue
            elif o == "nocopy":
                no_copy = True
            elif o in _PROPAGATION:
                propagation = o
            else:
                raise errors.InvalidParameter(f"invalid mode: {mode}")
        dst = _clean(dst)
        if src.startswith("/"):
            return MountPoint(type="bind", source=_clean(src), destination=dst, mode=mode, rw=rw,
                              propagation=propagation or "rprivate"), False
        if propagation:
            raise errors.InvalidParameter(f"invalid mode: {mode}")
        return MountPoint(type="volume", source="", destination=dst, mode=mode or "z", rw=rw, propagation="",
                          name=src, driver=""), no_copy

    def _parse_mount(self, m: Any) -> tuple[MountPoint, bool]:
        g = (lambda k, d=None: m.get(k, d)) if isinstance(m, dict) else (
            lambda k, d=None: getattr(m, _snake(k), d))
        typ, src, dst = g("Type", "volume") or "volume", g("Source", "") or "", g("Target", "") or ""
        ro = bool(g("ReadOnly", False))
        if not dst or not dst.startswith("/"):
            raise errors.InvalidParameter(f"invalid mount config for type \"{typ}\": invalid mount path: '{dst}' "
                                          f"mount path must be absolute")
        dst = _clean(dst)
        if typ == "bind":
            if not src:
                raise errors.InvalidParameter('invalid mount config for type "bind": field Source must not be empty')
            if not os.path.exists(src):
                raise errors.InvalidParameter(
                    f'invalid mount config for type "bind": bind source path does not exist: {src}')
            bo = g("BindOptions") or {}
            prop = bo.get("Propagation") or "rprivate"
            return MountPoint(type="bind", source=src, destination=dst, mode="", rw=not ro, propagation=prop,
                              ro_non_recursive=bool(bo.get("ReadOnlyNonRecursive")),
                              ro_force_recursive=bool(bo.get("ReadOnlyForceRecursive"))), False
        if typ == "volume":
            from .safepath import is_local

            vo = g("VolumeOptions") or {}
            subpath = vo.get("Subpath") or ""
            if subpath:
                # moby's linux_parser: checked here lexically; what it names is resolved (and
                # refused if it leads out of the volume) at each start, see spec_binds
                if not src:
                    raise errors.InvalidParameter('invalid mount config for type "volume": '
                                                  'must not set Subpath when using anonymous volumes')
                if not isinstance(subpath, str) or not is_local(subpath):
                    raise errors.InvalidParameter('invalid mount config for type "volume": '
                                                  'subpath must be a relative path within the volume')
            drv = ((vo.get("DriverConfig") or {}).get("Name") or "")
            return MountPoint(type="volume", source="", destination=dst, mode="", rw=not ro, propagation="",
                              name=src, driver=drv, subpath=subpath), bool(vo.get("NoCopy"))
        if typ == "tmpfs":
            if src:
                raise errors.InvalidParameter('invalid mount config for type "tmpfs": field Source must not be specified')
            return MountPoint(type="tmpfs", source="", destination=dst, mode="", rw=not ro, propagation=""), False
        if typ == "image":
            raise errors.NotImplementedYet('mount type "image" (API 1.48) is not supported by this engine yet')
        raise errors.InvalidParameter(f"mount type unknown: {typ}")

    async def _copy_up(self, v: Volume, rootfs: Path, dest: str, *, cid: str, subpath: str = "") -> None:
        """The image's content at `dest` into the volume (or, with a subpath, into that
        directory of it, reached through a staging mount as at start; one that does not
        resolve is skipped, as moby does) when the target is empty."""
        from ..containers.spec import resolve_in_rootfs
        from .safepath import stage, unstage_all

        volume_path = self._driver(v.driver).path(v.name)

        def copy(data: Path) -> bool:
            try:
                src = resolve_in_rootfs(rootfs, dest)
            except Exception:
                return False
            if not src.is_dir() or not data.is_dir() or any(data.iterdir()):
                return False
            res = subprocess.run(["cp", "-a", f"{src}/.", f"{data}/"], capture_output=True, text=True)
            if res.returncode != 0:
                raise errors.SystemError_(f"copying image content into volume {v.name}: {res.stderr.strip()}")
            return True

        def work() -> bool:
            if not subpath:
                return copy(volume_path)
            where = self.subpath_root / f"copyup-{cid}"
            try:
                staged = stage(volume_path, subpath, where / "0")
            except errors.NotFound:
                return False
            try:
                copy(staged)
            finally:
                unstage_all(where)
            return False  # the volume's root stays as it was: a later container still copies

        if await asyncio.to_thread(work):
            v.populated = True
            await asyncio.to_thread(self.store.save, v)

    async def _add_user(self, name: str, cid: str) -> None:
        v = self.store.volumes.get(name)
        if v is not None and cid not in v.users:
            v.users.append(cid)
            await asyncio.to_thread(self.store.save, v)

    async def _drop_user(self, name: str, cid: str) -> None:
        v = self.store.volumes.get(name)
        if v is not None and cid in v.users:
            v.users.remove(cid)
            await asyncio.to_thread(self.store.save, v)

    async def spec_binds(self, cid: str, mount_points: list[MountPoint], *, ref: str | None = None) -> list[BindMount]:
        """At container start: the bind mounts for the OCI spec (volumes mounted by their driver
        first); emits `volume mount` events. tmpfs mount points are the spec's own business.
        `ref`: the driver's user, when not the run of `cid` (docker cp's view of its files)."""
        out: list[BindMount] = []
        await self.release_staging(ref or cid)  # a previous start's, should its clean-up have failed
        for i, mp in enumerate(mount_points):
            if mp.type == "volume":
                v = self.get(mp.name or "")
                driver = self._driver(v.driver)
                path = await asyncio.to_thread(driver.mount, v.name, ref or cid, dict(v.options or {}))
                if mp.subpath:
                    path = await self._stage_subpath(ref or cid, i, path, mp.subpath)
                out.append(BindMount(source=str(path), destination=mp.destination, readonly=not mp.rw,
                                     propagation=mp.propagation or ""))
                self.bus.event("volume", "mount", v.name, {
                    "container": cid, "destination": mp.destination, "driver": v.driver,
                    "propagation": mp.propagation or "", "read/write": str(mp.rw).lower()})
            elif mp.type == "bind":
                out.append(BindMount(source=mp.source, destination=mp.destination, readonly=not mp.rw,
                                     propagation=mp.propagation if mp.propagation != "rprivate" else "",
                                     readonly_non_recursive=mp.ro_non_recursive,
                                     readonly_force_recursive=mp.ro_force_recursive))
        return out

    async def _stage_subpath(self, key: str, index: int, path: Path, subpath: str) -> Path:
        from .safepath import stage

        # on failure the launcher's release_mounts undoes the driver mounts and the staging
        # points of this start (`key`: the container, or docker cp's own reference to it)
        return await asyncio.to_thread(stage, Path(path), subpath, self.subpath_root / key / str(index))

    async def release_staging(self, cid: str) -> None:
        """Unmount the subpath staging mounts of `cid`'s start (or of a cp reference): called
        once the runtime has bound them into the container (its own mounts stay), and at stop."""
        from .safepath import unstage_all

        where = self.subpath_root / cid
        if where.exists():
            await asyncio.to_thread(unstage_all, where)

    async def release_mounts(self, cid: str, mount_points: list[MountPoint], *, ref: str | None = None) -> None:
        """At container stop (or the end of what `ref` took): driver unmounts, subpath staging
        mounts and `volume unmount` events."""
        try:
            await self.release_staging(ref or cid)
        except OSError as e:
            log.warning("unmounting the subpath mounts of %s: %s", (ref or cid)[:12], e)
        for mp in mount_points:
            if mp.type != "volume" or not mp.name:
                continue
            v = self.store.volumes.get(mp.name)
            if v is None:
                continue
            await asyncio.to_thread(self._driver(v.driver).unmount, v.name, ref or cid)
            self.bus.event("volume", "unmount", v.name, {"container": cid, "driver": v.driver})

    async def container_removed(self, cid: str, mount_points: list[MountPoint], *, remove_anonymous: bool) -> None:
        """At container remove: drop the references; with `rm -v` / `--rm`, remove its anonymous
        volumes nobody else uses (named volumes always stay)."""
        for mp in mount_points:
            if mp.type != "volume" or not mp.name:
                continue
            await self._drop_user(mp.name, cid)
            v = self.store.volumes.get(mp.name)
            if remove_anonymous and v is not None and v.anonymous and not v.users:
                with contextlib.suppress(errors.EngineError):
                    await self.remove(v.name)

    def users_of(self, name: str) -> list[str]:
        v = self.store.volumes.get(name)
        return list(v.users) if v else []

    @contextlib.asynccontextmanager
    async def copyup_view(self, cid: str, mounts: list[Mount]) -> AsyncIterator[Path]:
        """The container's prepared snapshot (`mounts`, from its snapshotter) mounted at a
        temporary path, the `rootfs_view` of prepare_mounts. Under copyup_root, which start()
        unmounts after a crash in the middle of a create."""
        from ..snapshots.mount import mount, unmount

        target = self.copyup_root / cid
        target.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(mount, mounts, target)
        try:
            yield target
        finally:
            await asyncio.to_thread(unmount, target)
            with contextlib.suppress(OSError):
                target.rmdir()


def _clean(p: str) -> str:
    p = os.path.normpath(p)
    return "/" + p.lstrip("/") if p.startswith("/") else p


def _snake(k: str) -> str:
    return {"Type": "type", "Source": "source", "Target": "target", "ReadOnly": "read_only",
            "BindOptions": "bind_options", "VolumeOptions": "volume_options", "TmpfsOptions": "tmpfs_options"}.get(k, k)


def _created_at(ns: int) -> str:
    # Docker's volume CreatedAt: RFC 3339, seconds, with the daemon's zone offset ("Z" in UTC)
    return rfc3339nano((ns // 1_000_000_000) * 1_000_000_000)
