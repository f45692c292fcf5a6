"""Daemon settings: dockerd's daemon.json keys where they mean the same."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

from .base import apiversion

DEFAULT_SOCKET = "/run/asyncdock.sock"
DEFAULT_DATA_ROOT = "/var/lib/asyncdock"
DEFAULT_EXEC_ROOT = "/run/asyncdock"
DEFAULT_MAX_LAYER_SIZE = 1 << 40  # 1 TiB


class RuntimeConfig(msgspec.Struct, rename="camel"):
    path: str = ""
    runtime_args: list[str] = msgspec.field(default_factory=list)


class DaemonConfig(msgspec.Struct, rename="kebab", forbid_unknown_fields=False):
    data_root: str = DEFAULT_DATA_ROOT
    exec_root: str = DEFAULT_EXEC_ROOT
    hosts: list[str] = msgspec.field(default_factory=lambda: [f"unix://{DEFAULT_SOCKET}"])
    insecure_registries: list[str] = msgspec.field(default_factory=list)
    registry_mirrors: list[str] = msgspec.field(default_factory=list)
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5  # dockerd's default: layers pushed at once
    # 0: max(cores, max-concurrent-downloads), so every download unpacks as it arrives
    max_concurrent_unpacks: int = 0
    # Bytes one layer may expand to, uncompressed, while it is unpacked (a small gzip can hold
    # gigabytes of zeros). Integer bytes; 0: no limit. The default is above any real layer.
    max_layer_size: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_MAX_LAYER_SIZE
    default_runtime: str = ""  # "": probe crun, then runc
    runtimes: dict[str, RuntimeConfig] = msgspec.field(default_factory=dict)
    storage_driver: str = ""  # "": overlayfs when the kernel has it, else copy
    log_driver: str = "json-file"
    log_opts: dict[str, str] = msgspec.field(default_factory=dict)
    debug: bool = False
    detach_keys: str = ""  # "": Docker's ctrl-p,ctrl-q
    # Where `certs.d/<host>/ca.crt` lives (dockerd: /etc/docker).
    config_dir: str = "/etc/asyncdock"
    # The oldest Engine API version served (dockerd's key); "": 1.24. DOCKER_MIN_API_VERSION wins.
    min_api_version: str = ""

    @property
    def unpack_limit(self) -> int:
        return self.max_concurrent_unpacks or max(os.cpu_count() or 1, self.max_concurrent_downloads)


def load_config(path: str | os.PathLike[str] | None, **overrides: object) -> DaemonConfig:
    """Read a daemon.json-style file (if given) and apply command-line overrides (None = unset)."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise SystemExit(f"asyncdock: cannot read config file {path}: {e.strerror}") from None
        try:
            data = msgspec.json.decode(raw)
        except msgspec.DecodeError as e:
            raise SystemExit(f"asyncdock: config file {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise SystemExit(f"asyncdock: config file {path} must hold a JSON object")
    for key, value in overrides.items():
        if value is not None:
            data[key.replace("_", "-")] = value
    try:
        config = msgspec.convert(data, DaemonConfig)
    except msgspec.ValidationError as e:
        raise SystemExit(f"asyncdock: invalid configuration: {e}") from None
    try:
        apiversion.configured_minimum(config.min_api_version, os.environ)
    except ValueError as e:
        raise SystemExit(f"asyncdock: {e}") from None
    return config
