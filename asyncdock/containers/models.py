"""Docker's container wire models (API 1.41), used both to decode create requests and to answer
inspect. Defaults reproduce Docker's null-vs-empty choices: `null` where the daemon sends null
(Binds, CapAdd, Links...), `[]`/`{}` where it sends those (Dns, PortBindings, Devices...)."""
from __future__ import annotations

from typing import Any

import msgspec

from ..base.healthcheck import HealthConfig
from ..base.timefmt import ZERO_TIME


class ContainerConfig(msgspec.Struct, rename="pascal"):
    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: dict[str, dict[str, Any]] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool | None = None
    image: str = ""
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str = ""
    entrypoint: list[str] | None = None
    network_disabled: bool | None = None
    mac_address: str | None = None
    on_build: list[str] | None = None
    labels: dict[str, str] | None = None
    stop_signal: str | None = None
    stop_timeout: int | None = None
    shell: list[str] | None = None


# The names RestartPolicy.Name may take (create and update refuse any other).
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")


class RestartPolicy(msgspec.Struct, rename="pascal"):
    name: str = "no"
    maximum_retry_count: int = 0


class LogConfig(msgspec.Struct, rename="pascal"):
    type: str = ""
    config: dict[str, str] | None = None


class Ulimit(msgspec.Struct, rename="pascal"):
    name: str
    soft: int
    hard: int


class DeviceMapping(msgspec.Struct, rename="pascal"):
    path_on_host: str
    path_in_container: str = ""
    cgroup_permissions: str = "rwm"


class PortBinding(msgspec.Struct, rename="pascal"):
    host_ip: str = ""
    host_port: str = ""


class MountSpec(msgspec.Struct, rename="pascal", omit_defaults=True):
    """HostConfig.Mounts (`--mount`)."""

    type: str = "volume"
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_options: dict[str, Any] | None = None
    volume_options: dict[str, Any] | None = None
    tmpfs_options: dict[str, Any] | None = None


class HostConfig(msgspec.Struct, rename="pascal"):
    binds: list[str] | None = None
    container_id_file: str = msgspec.field(default="", name="ContainerIDFile")
    log_config: LogConfig = msgspec.field(default_factory=LogConfig)
    network_mode: str = "default"
    port_bindings: dict[str, list[PortBinding] | None] | None = msgspec.field(default_factory=dict)
    restart_policy: RestartPolicy = msgspec.field(default_factory=RestartPolicy)
    auto_remove: bool = False
    volume_driver: str = ""
    volumes_from: list[str] | None = None
    mounts: list[MountSpec] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroupns_mode: str = ""
    dns: list[str] | None = msgspec.field(default_factory=list)
    dns_options: list[str] | None = msgspec.field(default_factory=list)
    dns_search: list[str] | None = msgspec.field(default_factory=list)
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    ipc_mode: str = ""
    cgroup: str = ""
    links: list[str] | None = None
    oom_score_adj: int = 0
    pid_mode: str = ""
    privileged: bool = False
    publish_all_ports: bool = False
    readonly_rootfs: bool = False
    security_opt: list[str] | None = None
    storage_opt: dict[str, str] | None = None
    tmpfs: dict[str, str] | None = None
    uts_mode: str = msgspec.field(default="", name="UTSMode")
    userns_mode: str = ""
    shm_size: int = 0
    sysctls: dict[str, str] | None = None
    runtime: str = ""
    console_size: list[int] = msgspec.field(default_factory=lambda: [0, 0])
    isolation: str = ""
    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = 0
    cgroup_parent: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[Any] | None = msgspec.field(default_factory=list)
    blkio_device_read_bps: list[Any] | None = msgspec.field(default_factory=list)
    blkio_device_write_bps: list[Any] | None = msgspec.field(default_factory=list)
    blkio_device_read_i_ops: list[Any] | None = msgspec.field(default_factory=list, name="BlkioDeviceReadIOps")
    blkio_device_write_i_ops: list[Any] | None = msgspec.field(default_factory=list, name="BlkioDeviceWriteIOps")
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_realtime_period: int = 0
    cpu_realtime_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: list[DeviceMapping] | None = msgspec.field(default_factory=list)
    device_cgroup_rules: list[str] | None = None
    device_requests: list[Any] | None = None
    kernel_memory: int = 0
    kernel_memory_tcp: int = msgspec.field(default=0, name="KernelMemoryTCP")
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = False
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = msgspec.field(default_factory=list)
    cpu_count: int = 0
    cpu_percent: int = 0
    io_maximum_i_ops: int = msgspec.field(default=0, name="IOMaximumIOps")
    io_maximum_bandwidth: int = msgspec.field(default=0, name="IOMaximumBandwidth")
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    init: bool | None = None
    annotations: dict[str, str] | None = None  # API 1.43


class EndpointSettings(msgspec.Struct, rename="pascal"):
    ipam_config: dict[str, Any] | None = msgspec.field(default=None, name="IPAMConfig")
    links: list[str] | None = None
    aliases: list[str] | None = None
    network_id: str = msgspec.field(default="", name="NetworkID")
    endpoint_id: str = msgspec.field(default="", name="EndpointID")
    gateway: str = ""
    ip_address: str = msgspec.field(default="", name="IPAddress")
    ip_prefix_len: int = msgspec.field(default=0, name="IPPrefixLen")
    ipv6_gateway: str = msgspec.field(default="", name="IPv6Gateway")
    global_ipv6_address: str = msgspec.field(default="", name="GlobalIPv6Address")
    global_ipv6_prefix_len: int = msgspec.field(default=0, name="GlobalIPv6PrefixLen")
    mac_address: str = ""
    driver_opts: dict[str, str] | None = None
    gw_priority: int = 0  # API 1.48


class NetworkingConfig(msgspec.Struct, rename="pascal"):
    endpoints_config: dict[str, EndpointSettings | None] | None = None


class CreateRequest(ContainerConfig, rename="pascal"):
    host_config: HostConfig | None = None
    networking_config: NetworkingConfig | None = None


class HealthLogEntry(msgspec.Struct, rename="pascal"):
    start: str
    end: str
    exit_code: int
    output: str


class Health(msgspec.Struct, rename="pascal"):
    status: str = "starting"
    failing_streak: int = 0
    log: list[HealthLogEntry] = msgspec.field(default_factory=list)


class State(msgspec.Struct, rename="pascal"):
    status: str = "created"
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = msgspec.field(default=False, name="OOMKilled")
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    health: Health | None = None


class MountPoint(msgspec.Struct, rename="pascal"):
    type: str
    source: str
    destination: str
    mode: str = ""
    rw: bool = msgspec.field(default=True, name="RW")
    propagation: str = ""
    name: str | None = None
    driver: str | None = None
    # The engine's own, kept in the record and never sent (mount_point_json drops them): a
    # volume's VolumeOptions.Subpath (--volumes-from carries it, as moby's MountPoint.Spec),
    # and a read-only bind's BindOptions.ReadOnlyNonRecursive / ReadOnlyForceRecursive (the
    # first also for a bind created through an API below 1.44, where read-only was not recursive).
    subpath: str = msgspec.field(default="", name="_Subpath")
    ro_non_recursive: bool = msgspec.field(default=False, name="_ReadOnlyNonRecursive")
    ro_force_recursive: bool = msgspec.field(default=False, name="_ReadOnlyForceRecursive")


_ENGINE_ONLY_MOUNT_KEYS = ("_Subpath", "_ReadOnlyNonRecursive", "_ReadOnlyForceRecursive")


def mount_point_json(m: MountPoint) -> dict[str, Any]:
    """A mount point as inspect and the container list show it (Docker's MountPoint)."""
    out: dict[str, Any] = msgspec.to_builtins(m)
    for key in _ENGINE_ONLY_MOUNT_KEYS:
        out.pop(key, None)
    return out


class LinkRecord(msgspec.Struct):
    """One legacy link of a container (containers/links.py): the target by id, since names
    change; its name when linked, for the error once it is gone."""

    alias: str  # as the linking container names it, without the "/<parent>/" path
    target_id: str
    target_name: str


class ContainerRecord(msgspec.Struct, kw_only=True):
    """What the engine keeps on disk per container (its own schema, not Docker's)."""

    id: str
    name: str  # with the leading "/"
    created: str  # RFC 3339 with nanoseconds
    created_ns: int
    image: str  # as the user asked (Config.Image)
    image_id: str
    path: str
    args: list[str]
    config: ContainerConfig
    host_config: HostConfig
    state: State = msgspec.field(default_factory=State)
    restart_count: int = 0
    runtime: str = "runc"
    driver: str = "overlayfs"
    log_path: str = ""
    mounts: list[MountPoint] = msgspec.field(default_factory=list)
    has_been_started: bool = False
    manually_stopped: bool = False
    finished_ns: int = 0
    started_ns: int = 0
    stop_signal_default: str = "SIGTERM"
    links: list[LinkRecord] = msgspec.field(default_factory=list)
