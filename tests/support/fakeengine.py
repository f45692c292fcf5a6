"""A ContainerManager on the fake runtime and a fake clock, for lifecycle tests that run in
milliseconds: no image store, no snapshots, no networks, no mounts, no processes.

`container_manager()` is the one place that builds the manager from stand-ins for its
dependencies (just what create, start, exit, restart, stop and remove reach): when
the manager's dependencies change shape, this function is what changes. The rootfs is the
bundle's own directory (nothing is mounted): the stand-in snapshotter puts the executable
the spec builder looks for there, which is all a fake container's "image" needs.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from asyncdock.containers.deps import ContainerDeps, ContainerSettings
from asyncdock.containers.manager import ContainerManager
from asyncdock.containers.models import ContainerRecord, CreateRequest
from asyncdock.events import EventBus
from asyncdock.leftovers import Leftovers
from asyncdock.plugins import InitContext
from asyncdock_logdriver_none import plugin as none_logdriver
from tests.support.fakeclock import FakeClock
from tests.support.fakeruntime import FakeRuntime

__all__ = ["APP", "container_manager", "create"]

APP = "/bin/app"  # the one executable of every fake container's rootfs
IMAGE_ID = "sha256:" + "f" * 64


class _Images:
    def resolve(self, ref: str) -> Any:
        return SimpleNamespace(id=IMAGE_ID)

    def config(self, image: Any) -> Any:
        return None  # no image config: the request's Cmd is all there is

    def top_chain_id(self, image: Any) -> str | None:
        return None


class _Snapshots:
    def __init__(self, bundles: Path) -> None:
        self.bundles = bundles

    async def prepare(self, key: str, parent: str | None) -> None:
        pass

    async def mounts(self, key: str) -> list[Any]:
        app = self.bundles / key / "rootfs" / APP.lstrip("/")
        app.parent.mkdir(parents=True, exist_ok=True)
        app.touch(mode=0o755)
        return []

    async def remove(self, key: str) -> None:
        pass

    async def usage(self, key: str) -> int:
        return 0


class _Networks:
    def validate_mode(self, mode: str, endpoints: Any) -> None:
        pass

    async def container_created(self, cid: str, name: str, mode: str, endpoints: Any, extra_hosts: Any) -> None:
        pass

    async def container_start(self, cid: str) -> Any:
        return SimpleNamespace(netns="none")

    async def publish(self, cid: str, bindings: Any, exposed: Any, publish_all: bool) -> None:
        pass

    def hosts_entries(self, cid: str, hostname: str) -> list[str]:
        return []

    def dns_servers(self, cid: str) -> list[str] | None:
        return None

    async def release(self, cid: str, events: bool = True) -> None:
        pass

    async def container_removed(self, cid: str) -> None:
        pass


class _Volumes:
    async def prepare_mounts(self, cid: str, **kwargs: Any) -> list[Any]:
        return []

    async def spec_binds(self, cid: str, mounts: Any) -> list[Any]:
        return []

    async def release_mounts(self, cid: str, mounts: Any) -> None:
        pass

    async def container_removed(self, cid: str, mounts: Any, *, remove_anonymous: bool) -> None:
        pass


def container_manager(root: Path, runtime: FakeRuntime, clock: FakeClock) -> ContainerManager:
    data_root, exec_root = root / "data", root / "exec"
    settings = ContainerSettings(data_root=data_root, exec_root=exec_root, default_runtime=runtime.name,
                                 storage_driver="fake", log_driver="none", log_opts={})
    return ContainerManager(ContainerDeps(
        settings=settings, bus=EventBus(clock=clock.time_ns), images=_Images(),  # type: ignore[arg-type]
        runtimes={runtime.name: runtime}, snapshotter=_Snapshots(exec_root / "bundles"),  # type: ignore[arg-type]
        networks=_Networks(), volumes=_Volumes(),  # type: ignore[arg-type]
        logdrivers={"none": none_logdriver.factory(InitContext(data_root / "containers"))},
        # the fake's pids are no processes: their exits come from the runtime itself
        exits=SimpleNamespace(watch=runtime.watch, send_signal=lambda pid, sig: False),  # type: ignore[arg-type]
        leftovers=Leftovers(clock.monotonic), clock=clock))


async def create(mgr: ContainerManager, **request: Any) -> ContainerRecord:
    """A container of the fake image running APP; `request` as CreateRequest's fields."""
    return await mgr.create(CreateRequest(image="fake", cmd=[APP], **request), None)
