"""Docker's JSON views of a container record: inspect (`GET /containers/{id}/json`) and the list
item (`GET /containers/json`). Pure functions of the record and of what the network manager
reports for it (NetworkSettings, the PORTS list)."""
from __future__ import annotations

import shlex
from typing import Any

import msgspec

from .models import ContainerRecord
from .status import status_text

def command_string(rec: ContainerRecord) -> str:
    return " ".join(shlex.quote(a) if a else "''" for a in [rec.path, *rec.args])


def inspect(rec: ContainerRecord, *, files_dir: str, network_settings: dict[str, Any], size: tuple[int, int] | None = None,
            exec_ids: list[str] | None = None, graph: dict[str, str] | None = None) -> dict[str, Any]:
    state = msgspec.to_builtins(rec.state)
    if rec.state.restarting:
        # Docker keeps Running true while a policy restart is pending (State.SetRestarting)
        state["Running"] = True
    if rec.state.health is None:
        state.pop("Health", None)
    hc = msgspec.to_builtins(rec.host_config)
    hc.pop("Init", None) if rec.host_config.init is None else None
    cfg = msgspec.to_builtins(rec.config)
    for key in ("Healthcheck", "ArgsEscaped", "MacAddress", "StopSignal", "StopTimeout", "Shell", "ExposedPorts"):
        if cfg.get(key) is None:
            cfg.pop(key, None)
    if cfg.get("NetworkDisabled") is None:
        cfg.pop("NetworkDisabled", None)
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
        "Mounts": [msgspec.to_builtins(m) for m in rec.mounts],
        "Config": cfg,
        "NetworkSettings": network_settings,
    }
    if size is not None:
        out["SizeRw"], out["SizeRootFs"] = size
    return out


def summary(rec: ContainerRecord, *, ports: list[dict[str, Any]], networks: dict[str, Any],
            size: tuple[int, int] | None = None, now: int | None = None) -> dict[str, Any]:
    st = rec.state
    health = st.health.status if st.health is not None else None
    item: dict[str, Any] = {
        "Id": rec.id,
        "Names": [rec.name],
        "Image": rec.image,
        "ImageID": rec.image_id,
        "Command": command_string(rec),
        "Created": rec.created_ns // 1_000_000_000,
        "Ports": ports,
        "Labels": rec.config.labels or {},
        "State": st.status,
        "Status": status_text(st.status, started_at=st.started_at, finished_at=st.finished_at,
                              exit_code=st.exit_code, health=health, now=now),
        "HostConfig": {"NetworkMode": rec.host_config.network_mode},
        "NetworkSettings": {"Networks": networks},
        "Mounts": [msgspec.to_builtins(m) for m in rec.mounts],
    }
    if size is not None:
        item["SizeRw"], item["SizeRootFs"] = size
    return item
