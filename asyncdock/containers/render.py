"""Docker's JSON views of a container record: inspect (`GET /containers/{id}/json`) and the list
item (`GET /containers/json`). Pure functions of the record and of what the network manager
reports for it (NetworkSettings, the PORTS list)."""
from __future__ import annotations

import re
import shlex
from functools import lru_cache
from typing import Any

import msgspec

from .models import ContainerRecord, mount_point_json
from .status import status_text

# shlex.quote's notion of a word that needs no quotes; checked first because almost every
# argument is one, and the list endpoint quotes every container's command on every call
_PLAIN = re.compile(r"[\w@%+=:,./-]+", re.ASCII).fullmatch


def command_string(rec: ContainerRecord) -> str:
    return _command_string(rec.path, tuple(rec.args))


@lru_cache(maxsize=4096)
def _command_string(path: str, args: tuple[str, ...]) -> str:
    # A memo of a pure function: a list of 1,000 containers quotes 1,000 commands per call.
    return " ".join(a if _PLAIN(a) else (shlex.quote(a) if a else "''") for a in (path, *args))


def inspect(rec: ContainerRecord, *, files_dir: str, network_settings: dict[str, Any], size: tuple[int, int] | None = None,
            exec_ids: list[str] | None = None, graph: dict[str, str] | None = None,
            links: list[str] | None = None) -> dict[str, Any]:
    """`links`: HostConfig.Links as Docker shows them (containers/links.inspect_links)."""
    state = msgspec.to_builtins(rec.state)
    if rec.state.restarting:
        # Docker keeps Running true while a policy restart is pending (State.SetRestarting)
        state["Running"] = True
    if rec.state.health is None:
        state.pop("Health", None)
    hc = msgspec.to_builtins(rec.host_config)
    hc.pop("Init", None) if rec.host_config.init is None else None
    hc["Links"] = links
    # moby's omitempty fields of HostConfig: absent when unset or empty (KernelMemory and
    # KernelMemoryTCP since 1.42; api/shapes.py puts them back for older versions)
    for key in ("Mounts", "StorageOpt", "Sysctls", "Tmpfs", "Annotations", "KernelMemory", "KernelMemoryTCP"):
        if not hc.get(key):
            hc.pop(key, None)
    cfg = msgspec.to_builtins(rec.config)
    for key in ("Healthcheck", "ArgsEscaped", "MacAddress", "StopSignal", "StopTimeout", "Shell", "ExposedPorts"):
        if cfg.get(key) is None:
            cfg.pop(key, None)
    if cfg.get("NetworkDisabled") is None:
        cfg.pop("NetworkDisabled", None)
    if not cfg.get("OnBuild"):
        cfg.pop("OnBuild", None)  # 1.52's shape; api/shapes.py gives older versions their null
    out: dict[str, Any] = {
        "Id": rec.id,
        "Created": rec.created,
        "Path": rec.path,
        "Args": rec.args,
        "State": state,
        "Image": rec.image_id,
        "ResolvConfPath": f"{files_dir}/resolv.conf",
        "HostnamePath": f"{files_dir}/hostname",
        "HostsPath": f"{files_dir}/hosts",
        "LogPath": rec.log_path,
        "Name": rec.name,
        "RestartCount": rec.restart_count,
        "Driver": rec.driver,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids or None,
        "HostConfig": hc,
        "GraphDriver": {"Data": graph or {}, "Name": rec.driver},
        "Mounts": [mount_point_json(m) for m in rec.mounts],
        "Config": cfg,
        "NetworkSettings": network_settings,
    }
    if size is not None:
        out["SizeRw"], out["SizeRootFs"] = size
    return out


class ListHostConfig(msgspec.Struct, rename="pascal", omit_defaults=True):
    network_mode: str
    annotations: dict[str, str] | None = None  # API 1.46, omitted when empty


class ListHealth(msgspec.Struct, rename="pascal"):
    status: str = "none"
    failing_streak: int = 0


class ListNetworkSettings(msgspec.Struct, rename="pascal"):
    networks: dict[str, Any]


class ListItem(msgspec.Struct, rename={"id": "Id", "names": "Names", "image": "Image",
                                       "image_id": "ImageID", "command": "Command",
                                       "created": "Created", "ports": "Ports",
                                       "labels": "Labels", "state": "State", "status": "Status",
                                       "host_config": "HostConfig",
                                       "network_settings": "NetworkSettings", "mounts": "Mounts",
                                       "size_rw": "SizeRw", "size_root_fs": "SizeRootFs",
                                       "health": "Health"},
               omit_defaults=True):
    """One entry of `GET /containers/json` (moby's types.Container). A Struct rather than a
    dict: the list of 1,000 containers is built and encoded on every call."""

    id: str
    names: list[str]
    image: str
    image_id: str
    command: str
    created: int
    ports: list[dict[str, Any]]
    labels: dict[str, str]
    state: str
    status: str
    host_config: ListHostConfig
    network_settings: ListNetworkSettings
    mounts: list[Any]
    health: ListHealth  # API 1.52: "none" without a health check
    # only with ?size=1
    size_rw: int | msgspec.UnsetType = msgspec.UNSET
    size_root_fs: int | msgspec.UnsetType = msgspec.UNSET


def summary(rec: ContainerRecord, *, ports: list[dict[str, Any]], networks: dict[str, Any],
            size: tuple[int, int] | None = None, now: int | None = None,
            link_names: list[str] | None = None) -> ListItem:
    st = rec.state
    health = st.health.status if st.health is not None else None
    item = ListItem(
        id=rec.id, names=sorted([rec.name, *link_names]) if link_names else [rec.name], image=rec.image, image_id=rec.image_id,
        command=command_string(rec), created=rec.created_ns // 1_000_000_000, ports=ports,
        labels=rec.config.labels or {}, state=st.status,
        # the nanosecond twins of StartedAt/FinishedAt (set together), so no RFC 3339 parsing
        # per container per list call
        status=status_text(st.status, started_at=rec.started_ns or st.started_at,
                           finished_at=rec.finished_ns or st.finished_at,
                           exit_code=st.exit_code, health=health, now=now),
        host_config=ListHostConfig(rec.host_config.network_mode, rec.host_config.annotations or None),
        network_settings=ListNetworkSettings(networks),
        mounts=[mount_point_json(m) for m in rec.mounts],
        health=ListHealth(health, st.health.failing_streak) if st.health is not None and health and st.running
        else ListHealth())
    if size is not None:
        item.size_rw, item.size_root_fs = size
    return item
