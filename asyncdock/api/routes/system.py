"""/_ping, /version, /info, /system/df."""
from __future__ import annotations

import os
import platform
import socket
import time

import msgspec

from ...base.version import __version__
from ...containers import seccomp
from ...hostinfo import host_facts
from ..http import Request, Response, Router, json_response
from ..server import API_VERSION_STR

_PING_HEADERS = [("Cache-Control", "no-cache, no-store, must-revalidate"), ("Pragma", "no-cache")]
_PING_GET = Response(200, b"OK", content_type="text/plain; charset=utf-8", headers=_PING_HEADERS)
_PING_HEAD = Response(200, b"", content_type="text/plain; charset=utf-8", headers=_PING_HEADERS)


def ping(req: Request) -> Response:
    return _PING_HEAD if req.method == "HEAD" else _PING_GET


class ComponentVersion(msgspec.Struct, rename="pascal"):
    name: str
    version: str
    details: dict[str, str] = msgspec.field(default_factory=dict)


class PlatformInfo(msgspec.Struct, rename="pascal"):
    name: str


class VersionInfo(msgspec.Struct):
    platform: PlatformInfo = msgspec.field(name="Platform")
    components: list[ComponentVersion] = msgspec.field(name="Components")
    version: str = msgspec.field(name="Version")
    api_version: str = msgspec.field(name="ApiVersion")
    min_api_version: str = msgspec.field(name="MinAPIVersion")
    git_commit: str = msgspec.field(name="GitCommit")
    go_version: str = msgspec.field(name="GoVersion")
    os: str = msgspec.field(name="Os")
    arch: str = msgspec.field(name="Arch")
    kernel_version: str = msgspec.field(name="KernelVersion")
    build_time: str = msgspec.field(name="BuildTime")


async def version(req: Request) -> Response:
    engine = req.engine
    facts = host_facts()
    components = [ComponentVersion("Engine", __version__, {
        "ApiVersion": API_VERSION_STR, "Arch": facts.go_arch, "BuildTime": "", "Experimental": "false",
        "GitCommit": "", "GoVersion": f"python{platform.python_version()}", "KernelVersion": facts.kernel,
        "MinAPIVersion": req.app.min_version_text, "Os": "linux"})]
    for name, probe in sorted(engine.runtime_probes.items()):
        if probe.ok:
            components.append(ComponentVersion(name, probe.version, {"GitCommit": ""}))
    init = engine.init_binary_version()
    if init:
        components.append(ComponentVersion("docker-init", init, {"GitCommit": ""}))
    return json_response(VersionInfo(
        platform=PlatformInfo("asyncdock"), components=components, version=__version__,
        api_version=API_VERSION_STR, min_api_version=req.app.min_version_text, git_commit="",
        go_version=f"python{platform.python_version()}", os="linux", arch=facts.go_arch,
        kernel_version=facts.kernel, build_time=""))


async def info(req: Request) -> Response:
    engine = req.engine
    facts = host_facts()
    counts = engine.container_counts()
    cfg = engine.config
    insecure = ["127.0.0.0/8"] + [r for r in cfg.insecure_registries if "/" in r]
    index_configs: dict[str, object] = {
        "docker.io": {"Name": "docker.io", "Mirrors": list(cfg.registry_mirrors), "Secure": True, "Official": True},
    }
    for r in cfg.insecure_registries:
        if "/" not in r:
            index_configs[r] = {"Name": r, "Mirrors": [], "Secure": False, "Official": False}
    runtimes = {name: {"path": rt.path} for name, rt in engine.runtimes.items()}
    probes = {name: msgspec.to_builtins(p) for name, p in engine.runtime_probes.items()}
    warnings = [f"runtime {n}: {p.error}" for n, p in sorted(engine.runtime_probes.items()) if not p.ok]
    body = {
        "ID": engine.engine_id,
        "Containers": counts["total"],
        "ContainersRunning": counts["running"],
        "ContainersPaused": counts["paused"],
        "ContainersStopped": counts["stopped"],
        "Images": engine.image_count(),
        "Driver": engine.storage_driver_name(),
        "DriverStatus": engine.storage_driver_status(),
        "Plugins": {
            "Volume": [],
            "Network": ["none"],
            "Authorization": None,
            "Log": sorted(engine.logdriver_names()),
        },
        "MemoryLimit": True,
        "SwapLimit": facts.swap_limit,
        "KernelMemory": False,
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "IPv4Forwarding": facts.ip_forward,
        "BridgeNfIptables": False,
        "BridgeNfIp6tables": False,
        "Debug": cfg.debug,
        "NFd": len(os.listdir("/proc/self/fd")),
        "OomKillDisable": facts.cgroup_version == "1",
        "NGoroutines": engine.task_count(),
        "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".%09dZ" % (time.time_ns() % 1_000_000_000),
        "LoggingDriver": cfg.log_driver,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": facts.cgroup_version,
        "NEventsListener": engine.events_listeners(),
        "KernelVersion": facts.kernel,
        "OperatingSystem": facts.os_name,
        "OSVersion": facts.os_version,
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": insecure,
            "IndexConfigs": index_configs,
            "Mirrors": list(cfg.registry_mirrors),
        },
        "NCPU": os.cpu_count() or 1,
        "MemTotal": facts.mem_total,
        "GenericResources": None,
        "DockerRootDir": cfg.data_root,
        "HttpProxy": os.environ.get("HTTP_PROXY", ""),
        "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
        "NoProxy": os.environ.get("NO_PROXY", ""),
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": __version__,
        "Runtimes": runtimes,
        "DefaultRuntime": engine.default_runtime,
        # Beyond Docker: every runtime probe's result, so a user sees why one is not used.
        "X-AsyncdockRuntimeProbes": probes,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                  "Error": "", "RemoteManagers": None},
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": engine.runtime_probes.get(engine.default_runtime).version
                       if engine.default_runtime in engine.runtime_probes else "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": [f"name=seccomp,profile={seccomp.PROFILE_NAME}"],
        "Warnings": warnings or None,
    }
    return json_response(body)


async def system_df(req: Request) -> Response:
    """`GET /system/df` (API 1.41 shape): images with their container counts and shared sizes,
    containers with SizeRw/SizeRootFs, and no volumes or build cache yet (empty lists)."""
    from .containers import _size, summary_of
    from .images import summary

    engine = req.engine
    store = engine.images
    images = store.list()
    users: dict[str, int] = {}
    containers = []
    for rec in sorted(engine.containers.store, key=lambda r: r.created_ns, reverse=True):
        users[rec.image_id] = users.get(rec.image_id, 0) + 1
        containers.append(summary_of(req, rec, size=await _size(req, rec)))
    layer_users: dict[str, int] = {}
    layer_size: dict[str, int] = {}
    for img in images:
        for cid, size in zip(img.chain_ids, img.layer_sizes):
            layer_users[cid] = layer_users.get(cid, 0) + 1
            layer_size[cid] = size
    out_images = []
    for img in images:
        refs = store.references(img.id)
        tags = [r.familiar for r in refs if r.digest is None]
        digests = [r.familiar for r in refs if r.digest is not None]
        item = summary(store, img, tags or ["<none>:<none>"], digests or (["<none>@<none>"] if not tags else []))
        item["Containers"] = users.get(img.id, 0)
        item["SharedSize"] = sum(s for c, s in zip(img.chain_ids, img.layer_sizes) if layer_users.get(c, 0) > 1)
        out_images.append(item)
    out_images.sort(key=lambda i: i["Created"], reverse=True)
    return json_response({
        "LayersSize": sum(layer_size.values()),
        "Images": out_images,
        "Containers": containers,
        "Volumes": await req.engine.volumes.df(),
        "BuildCache": [],
    })


def register(router: Router) -> None:
    router.add("GET", "/system/df", system_df)
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
