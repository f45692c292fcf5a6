"""What `POST /build` asks for (the query parameters moby's build router reads)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..registry.auth import AuthConfig


@dataclass
class BuildOptions:
    dockerfile: str = "Dockerfile"
    tags: list[str] = field(default_factory=list)
    target: str = ""
    buildargs: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    nocache: bool = False
    pull: bool = False
    rm: bool = True
    forcerm: bool = False
    quiet: bool = False
    cachefrom: list[str] = field(default_factory=list)
    shmsize: int = 0
    extrahosts: list[str] = field(default_factory=list)
    networkmode: str = "default"
    platform: str = ""
    memory: int = 0
    memswap: int = 0
    cpushares: int = 0
    cpusetcpus: str = ""
    cpusetmems: str = ""
    cpuperiod: int = 0
    cpuquota: int = 0
    auth: dict[str, AuthConfig] = field(default_factory=dict)
