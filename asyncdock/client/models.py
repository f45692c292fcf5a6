"""Typed views of Docker API answers (msgspec). Unknown fields are ignored, missing ones default,
so the same models read asyncdock, Docker and Podman."""
from __future__ import annotations

from typing import Any

import msgspec

# msgspec-only modules: the client never imports the engine
from ..containers.models import ContainerConfig
from ..events.models import Actor, Event

__all__ = ["Actor", "Event", "Version", "ContainerSummary", "ContainerState", "ContainerConfig",
           "ContainerInspect", "ImageSummary", "WaitResult", "Progress", "Port", "ExecInspect"]


class Version(msgspec.Struct, rename="pascal"):
    version: str = ""
    api_version: str = msgspec.field(default="", name="ApiVersion")
    min_api_version: str = msgspec.field(default="", name="MinAPIVersion")
    os: str = msgspec.field(default="", name="Os")
    arch: str = ""
    kernel_version: str = ""
    git_commit: str = ""
    go_version: str = ""
    build_time: str = ""
    components: list[dict[str, Any]] = msgspec.field(default_factory=list)
    platform: dict[str, Any] = msgspec.field(default_factory=dict)


class Port(msgspec.Struct, rename="pascal"):
    private_port: int = 0
    public_port: int = 0
    type: str = "tcp"
    ip: str = msgspec.field(default="", name="IP")


class ContainerSummary(msgspec.Struct, rename="pascal"):
    id: str = ""
    names: list[str] = msgspec.field(default_factory=list)
    image: str = ""
    image_id: str = msgspec.field(default="", name="ImageID")
    command: str = ""
    created: int = 0
    state: str = ""
    status: str = ""
    ports: list[Port] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    size_rw: int = 0
    mounts: list[dict[str, Any]] = msgspec.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0].lstrip("/") if self.names else ""


class ContainerState(msgspec.Struct, rename="pascal"):
    status: str = ""
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = msgspec.field(default=False, name="OOMKilled")
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ""
    finished_at: str = ""


class ContainerInspect(msgspec.Struct, rename="pascal"):
    id: str = ""
    created: str = ""
    path: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    state: ContainerState = msgspec.field(default_factory=ContainerState)
    image: str = ""
    name: str = ""
    restart_count: int = 0
    config: ContainerConfig = msgspec.field(default_factory=ContainerConfig)
    host_config: dict[str, Any] = msgspec.field(default_factory=dict)
    network_settings: dict[str, Any] = msgspec.field(default_factory=dict)
    mounts: list[dict[str, Any]] = msgspec.field(default_factory=list)


class ImageSummary(msgspec.Struct, rename="pascal"):
    id: str = ""
    parent_id: str = msgspec.field(default="", name="ParentId")
    repo_tags: list[str] | None = None
    repo_digests: list[str] | None = None
    created: int = 0
    size: int = 0
    labels: dict[str, str] | None = None
    containers: int = -1


class WaitResult(msgspec.Struct, rename="pascal"):
    status_code: int = 0
    error: dict[str, Any] | None = None


class ProgressDetail(msgspec.Struct):
    current: int = 0
    total: int = 0


class Progress(msgspec.Struct, omit_defaults=True):
    """One pull or push progress message ({"status","id","progress","progressDetail"}, a
    push's {"aux": {"Tag","Digest","Size"}}, or an error)."""

    status: str = ""
    id: str = ""
    progress: str = ""
    progress_detail: ProgressDetail | None = msgspec.field(default=None, name="progressDetail")
    error: str = ""
    aux: dict[str, Any] | None = None


class ExecInspect(msgspec.Struct, rename="pascal"):
    id: str = msgspec.field(default="", name="ID")
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    container_id: str = msgspec.field(default="", name="ContainerID")
