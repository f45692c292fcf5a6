"""What the container supervisor needs from the rest of the engine, each as the narrow Protocol
it calls (the shape of moby's router/*/backend.go and containerd's plugin InitContext).

The wiring (engine.py) builds a ContainerDeps and hands it to ContainerManager; nothing in this
package reaches the engine. A Protocol lists only the methods this package calls, so a test can
build a manager from small fakes and a subsystem's other methods stay its own business.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..base.clock import Clock, SystemClock
from ..events.sink import EventSink
from ..leftovers import CleanupQueue
from ..logs.base import LogDriver
from ..runtime.base import OCIRuntime
from ..snapshots.base import Mount, Snapshotter
from .models import MountPoint
from .spec import BindMount

if TYPE_CHECKING:
    from ..base.oci import ImageConfig
    from ..images.store import ImageRecord

# The OCI runtimes that work on this host, by the name a container's HostConfig.Runtime uses.
RuntimeSet = Mapping[str, OCIRuntime]
# The log drivers, by the name HostConfig.LogConfig.Type uses.
LogDrivers = Mapping[str, LogDriver]


class ImageLookup(Protocol):
    """The image store, at container create: the image a reference names, its config (the
    container's defaults) and the layer its rootfs snapshot sits on."""

    def resolve(self, name: str) -> ImageRecord: ...
    def config(self, record: ImageRecord) -> ImageConfig: ...
    def top_chain_id(self, record: ImageRecord) -> str | None: ...
    async def ensure_layers(self, record: ImageRecord) -> str | None:
        """The top chain ID once the image's layer snapshots all exist (a commit's are unpacked
        in the background)."""
        ...


class SandboxInfo(Protocol):
    """A running container's network side, as the spec needs it."""

    @property
    def netns(self) -> str:
        """"host", "none" or the path of the network namespace to join."""
        ...


class NetworkAttacher(Protocol):
    """The network manager along a container's life: created -> start -> publish -> release ->
    removed; and the facts its /etc/hosts and /etc/resolv.conf are written from."""

    def validate_mode(self, network_mode: str, endpoints_config: dict[str, Any] | None = None) -> None: ...
    async def container_created(self, cid: str, name: str, network_mode: str,
                                endpoints_config: dict[str, Any] | None = None,
                                extra_hosts: list[str] | None = None) -> None: ...
    async def container_start(self, cid: str) -> SandboxInfo: ...
    async def publish(self, cid: str, port_bindings: dict[str, Any] | None,
                      exposed_ports: dict[str, Any] | None = None,
                      publish_all: bool = False) -> dict[str, list[dict[str, str]] | None]: ...
    async def release(self, cid: str, *, events: bool = True) -> None: ...
    async def container_renamed(self, cid: str, name: str) -> None: ...
    async def container_removed(self, cid: str) -> None: ...
    def host_gateway_ip(self) -> str: ...
    def hosts_entries(self, cid: str, hostname: str) -> list[str]: ...
    def dns_servers(self, cid: str) -> list[str] | None: ...
    def bridge_address(self, cid: str) -> str | None: ...


class VolumeMounter(Protocol):
    """The volume manager along a container's life: prepare_mounts (create) -> spec_binds
    (start; release_staging once the runtime made its binds) -> release_mounts (stop) ->
    container_removed (remove)."""

    async def prepare_mounts(self, cid: str, *, binds: list[str] | None = None, mounts: list[Any] | None = None,
                             image_volumes: dict[str, Any] | None = None,
                             config_volumes: dict[str, Any] | None = None,
                             volumes_from: list[tuple[list[MountPoint], str]] | None = None,
                             rootfs_view: Path | None = None, volume_driver: str = "",
                             readonly_non_recursive: bool = False) -> list[MountPoint]: ...
    def copyup_view(self, cid: str, mounts: list[Mount]) -> AbstractAsyncContextManager[Path]: ...
    async def spec_binds(self, cid: str, mount_points: list[MountPoint], *,
                         ref: str | None = None) -> list[BindMount]: ...
    async def release_staging(self, cid: str) -> None: ...
    async def release_mounts(self, cid: str, mount_points: list[MountPoint], *, ref: str | None = None) -> None: ...
    async def container_removed(self, cid: str, mount_points: list[MountPoint], *,
                                remove_anonymous: bool) -> None: ...


class ExitWatch(Protocol):
    """The engine's child subreaper (runtime/reaper.py): the exit of a container's init or an
    exec, and signals sent through its pidfd."""

    def watch(self, pid: int) -> asyncio.Future[int]: ...
    def send_signal(self, pid: int, sig: int) -> bool: ...


@dataclass(frozen=True)
class ContainerSettings:
    """The daemon's facts a container is made with, fixed for the daemon's run."""

    data_root: Path
    exec_root: Path
    default_runtime: str
    storage_driver: str  # what inspect's Driver shows ("overlay2" for our overlay snapshotter)
    log_driver: str  # the daemon's log driver, for a container that names none
    log_opts: Mapping[str, str]  # its options, for a container that gives none
    # legacy links set their environment variables (containers/links.py); off with
    # DOCKER_KEEP_DEPRECATED_LEGACY_LINKS_ENV_VARS=0, the name of Docker 29's switch for them
    legacy_link_env: bool = True


@dataclass(frozen=True)
class ContainerDeps:
    settings: ContainerSettings
    bus: EventSink
    images: ImageLookup
    runtimes: RuntimeSet
    snapshotter: Snapshotter
    networks: NetworkAttacher
    volumes: VolumeMounter
    logdrivers: LogDrivers
    exits: ExitWatch
    leftovers: CleanupQueue
    # every wait on a period (restart back-off, health intervals) and every timestamp
    clock: Clock = field(default_factory=SystemClock)
