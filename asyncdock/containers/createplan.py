"""The create plan: what `docker create` makes of its request, as a pure function.

`plan_create` turns the request, the image's config and the daemon's facts into the record the
manager stores: the image's config merged under the request's (daemon/create.go), the
host-config defaults Docker fills in, and every check of the request that needs nothing but the
request and those facts, with Docker's texts. It does no I/O, reads no clock and reaches no store:
the manager resolves the image, picks the id and the name and reads the clock before it; after it,
the manager checks what names other objects (a `container:<name>` mode, the networks) and does the
I/O (the name reserved, the snapshot, the network, the mounts, the record on disk).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..base import errors, oci
from ..base.healthcheck import HealthConfig
from ..base.timefmt import rfc3339nano
from ..logs.base import LogDriver
from .models import RESTART_POLICIES, ContainerConfig, ContainerRecord, CreateRequest, HostConfig, LogConfig
from .resources import check_resources
from .spec import DEFAULT_SHM_SIZE, MASKED_PATHS, READONLY_PATHS


@dataclass(frozen=True)
class DaemonFacts:
    """What the daemon and the host give every new container: read once by the manager (none of
    it changes while the daemon runs)."""

    default_runtime: str  # for a container that names none
    runtimes: frozenset[str]  # the OCI runtimes that work on this host
    log_drivers: Mapping[str, LogDriver]  # by name: their option checks and LogPath (no I/O)
    log_driver: str  # the daemon's log driver, for a container that names none
    log_opts: Mapping[str, str]  # its options, for a container that gives none
    storage_driver: str  # what inspect's Driver shows
    cpu_count: int  # the upper bound of --cpus
    cgroup_v2: bool  # the default cgroupns: private on a unified host, host on v1
    swap_limit: bool  # the kernel limits swap: --memory-swap then defaults to twice --memory


def plan_create(req: CreateRequest, image: oci.ContainerConfig | None, *, image_id: str, cid: str, name: str,
                now_ns: int, facts: DaemonFacts, container_dir: Path) -> ContainerRecord:
    """The record of a new container `cid` named `name` (with its "/"), created at `now_ns` from
    the image `image_id` whose config block is `image` (None: it has none), or
    errors.InvalidParameter with Docker's text. `container_dir` holds the container's files (the
    log driver's LogPath is in it). The request is left as it was."""
    req = copy.deepcopy(req)
    hc = req.host_config or HostConfig()
    cfg = _merge_config(req, image, cid)
    argv = list(cfg.entrypoint or []) + list(cfg.cmd or [])
    if not argv:
        raise errors.InvalidParameter("No command specified")
    runtime = hc.runtime or facts.default_runtime
    if runtime not in facts.runtimes:
        raise errors.InvalidParameter(f"Unknown runtime specified {runtime}")
    _apply_host_defaults(hc, runtime, facts)
    log_driver = hc.log_config.type
    driver = facts.log_drivers.get(log_driver)
    if driver is None:
        raise errors.InvalidParameter(f'logger: no log driver named \'{log_driver}\' is registered')
    driver.validate_options(dict(hc.log_config.config or {}))
    restart = hc.restart_policy.name or "no"
    if restart not in RESTART_POLICIES:
        raise errors.InvalidParameter(f"invalid restart policy '{restart}'")
    if hc.auto_remove and restart != "no":
        raise errors.InvalidParameter("can't create 'AutoRemove' container with restart policy")
    return ContainerRecord(
        id=cid, name=name, created=rfc3339nano(now_ns), created_ns=now_ns, image=req.image,
        image_id=image_id, path=argv[0], args=argv[1:], config=cfg, host_config=hc,
        runtime=runtime, driver=facts.storage_driver, log_path=driver.log_path(container_dir, cid),
    )


def _merge_config(req: CreateRequest, image: oci.ContainerConfig | None, cid: str) -> ContainerConfig:
    """The image's config under the request's, as Docker merges them (daemon/create.go, with
    daemon/commit.go's merge).

    The request's Env comes first, then the image's entries it does not name (moby appends the
    image's after the user's). Where moby's merge differs, ours is kept as it has always been: a
    request's Healthcheck replaces the image's whole (moby fills the fields it leaves zero from
    the image's), and the image's ArgsEscaped (Windows only) is not taken with its Cmd."""
    ic = image if image is not None else oci.ContainerConfig()
    cfg = ContainerConfig(**{f: getattr(req, f) for f in ContainerConfig.__struct_fields__})
    img_env = list(ic.env or [])
    if img_env:
        keys = {e.split("=", 1)[0] for e in (cfg.env or [])}
        cfg.env = list(cfg.env or []) + [e for e in img_env if e.split("=", 1)[0] not in keys]
    if cfg.entrypoint is None or (not cfg.entrypoint and not cfg.cmd):
        if cfg.entrypoint is None:
            cfg.entrypoint = list(ic.entrypoint or []) or None
        if not cfg.cmd:
            cfg.cmd = list(ic.cmd or []) or None
    elif cfg.entrypoint == [""]:
        cfg.entrypoint = None
    if not cfg.working_dir:
        cfg.working_dir = ic.working_dir or ""
    if not cfg.user:
        cfg.user = ic.user or ""
    labels = dict(ic.labels or {})
    labels.update(cfg.labels or {})
    cfg.labels = labels
    for attr in ("exposed_ports", "volumes"):
        merged = dict(getattr(ic, attr) or {})
        merged.update(getattr(cfg, attr) or {})
        setattr(cfg, attr, merged or None)
    if cfg.stop_signal is None and ic.stop_signal:
        cfg.stop_signal = ic.stop_signal
    if cfg.healthcheck is None and ic.healthcheck is not None:
        h = ic.healthcheck
        cfg.healthcheck = HealthConfig(test=h.test, interval=h.interval, timeout=h.timeout,
                                       start_period=h.start_period, retries=h.retries)
    if not cfg.hostname:
        cfg.hostname = cid[:12]
    if cfg.on_build is None and ic.on_build:
        cfg.on_build = list(ic.on_build)
    return cfg


def _apply_host_defaults(hc: HostConfig, runtime: str, facts: DaemonFacts) -> None:
    """What Docker fills in of a HostConfig at create (what inspect then shows), and its
    resource checks."""
    hc.runtime = runtime
    if hc.pids_limit is not None and hc.pids_limit <= 0:
        # moby's create route: 0 and any negative value mean "unlimited", stored (and shown) as null
        hc.pids_limit = None
    if hc.memory_swappiness == -1:
        # the CLI sends -1 for "not set"; the cgroup v2 hosts we run on have no swappiness knob
        # (dockerd discards the setting there), so inspect shows null as Docker does
        hc.memory_swappiness = None
    if not hc.log_config.type:
        # the daemon's driver; its options only when the request gave none
        hc.log_config = LogConfig(facts.log_driver, hc.log_config.config or dict(facts.log_opts))
    if hc.log_config.config is None:
        hc.log_config.config = {}
    if not hc.network_mode:
        hc.network_mode = "default"
    if hc.port_bindings is None:
        hc.port_bindings = {}
    if not hc.shm_size:
        hc.shm_size = DEFAULT_SHM_SIZE
    if not hc.cgroupns_mode:
        hc.cgroupns_mode = "private" if facts.cgroup_v2 else "host"
    if not hc.ipc_mode:
        hc.ipc_mode = "private"
    for attr in ("dns", "dns_options", "dns_search", "blkio_weight_device", "blkio_device_read_bps",
                 "blkio_device_write_bps", "blkio_device_read_i_ops", "blkio_device_write_i_ops",
                 "devices", "ulimits"):
        if getattr(hc, attr) is None:
            setattr(hc, attr, [])
    if hc.privileged:
        hc.masked_paths = None
        hc.readonly_paths = None
    else:
        if hc.masked_paths is None:
            hc.masked_paths = list(MASKED_PATHS)
        if hc.readonly_paths is None:
            hc.readonly_paths = list(READONLY_PATHS)
    check_resources(hc, facts.cpu_count)
    if hc.memory > 0 and hc.memory_swap == 0 and facts.swap_limit:
        # Docker's default: as much swap as memory (daemon_unix.go adaptContainerSettings)
        hc.memory_swap = hc.memory * 2
