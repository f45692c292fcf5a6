"""/_ping, /version, /info, /system/df."""
from __future__ import annotations

import os
import platform
import socket
import time

import msgspec

from ...base.buildcache import BuildCacheSource, as_json
from ...base.errors import InvalidParameter
from ...base.version import __version__
from ...containers import seccomp
from ...hostinfo import host_facts
from .. import shapes
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
            components.append(ComponentVersion(name, probe.version, {"GitCommit": probe.commit}))
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
    # Each runtime under its own name and path (Docker lists its runc as "runc" and
    # "io.containerd.runc.v2"; we run no containerd shim, so only the names a container can use).
    # `status` (1.44) is omitempty in moby, and we report no runtime features: never sent.
    runtimes = {name: {"path": rt.path} for name, rt in engine.runtimes.items()}
    runc = engine.runtime_probes.get("runc")
    runc_commit = (runc.commit or runc.version) if runc is not None and runc.ok else ""
    networks = getattr(engine, "networks", None)
    volumes = getattr(engine, "volumes", None)
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
            "Volume": sorted(volumes.drivers) if volumes is not None else [],
            "Network": sorted(networks.drivers) if networks is not None else [],
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
        # runc's own commit, whichever runtime is the default (crun's is under Components)
        "RuncCommit": {"ID": runc_commit, "Expected": runc_commit},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": [f"name=seccomp,profile={seccomp.PROFILE_NAME}"],
        "FirewallBackend": {"Driver": "nftables"},  # networks/firewall.py: our own nft table
        "CDISpecDirs": [],  # no CDI devices: moby sends [] when CDI is off
        "Warnings": warnings or None,
    }
    return json_response(shapes.for_version(shapes.INFO, body, req.api_version))


_DF_TYPES = ("container", "image", "volume", "build-cache")


async def system_df(req: Request) -> Response:
    """`GET /system/df` in the union shape (shapes.SYSTEM_DF trims it): the legacy lists
    (LayersSize, Images, Containers, Volumes, BuildCache) beside 1.52's per-type usage objects.
    `type` computes only the kinds named; `verbose` (1.52) asks for the usage objects alone."""
    from .containers import _size, summary_of
    from .images import list_summaries

    engine = req.engine
    version = req.api_version
    query = shapes.for_version(shapes.SYSTEM_DF_QUERY, dict(req.query), version)
    wanted = set(_DF_TYPES)
    if "type" in query:
        wanted = set(req.query_list("type"))
        for t in wanted:
            if t not in _DF_TYPES:
                raise InvalidParameter(f"unknown object type: {t}")
    verbose = "verbose" in query and req.arg_bool("verbose")
    legacy: dict[str, object] = {}
    usage: dict[str, object] = {}
    if "image" in wanted:
        store = engine.images
        images = store.list()
        layer_size: dict[str, int] = {}
        for img in images:
            layer_size.update(zip(img.chain_ids, img.layer_sizes))
        # moby lists the images as `docker images` does (intermediates hidden), with shared sizes
        items = list_summaries(req, store, {}, show_all=False, with_shared=True)
        total = sum(layer_size.values())
        legacy["LayersSize"] = total
        legacy["Images"] = items
        usage["ImageUsage"] = _usage(
            items, active=sum(1 for i in items if i["Containers"] > 0), total=total,
            reclaimable=sum(i["Size"] - i["SharedSize"] for i in items if i["Containers"] == 0))
    if "container" in wanted:
        containers = []
        active = reclaimable = total = 0
        for rec in sorted(engine.containers.store, key=lambda r: r.created_ns, reverse=True):
            size = await _size(req, rec)
            total += size[0]
            if rec.state.running or rec.state.paused or rec.state.restarting:
                active += 1
            else:
                reclaimable += size[0]
            containers.append(shapes.for_version(shapes.CONTAINER_SUMMARY, summary_of(req, rec, size=size), version))
        legacy["Containers"] = containers
        usage["ContainerUsage"] = _usage(containers, active=active, total=total, reclaimable=reclaimable)
    if "volume" in wanted:
        volumes = await engine.volumes.df()
        sizes = [(v["UsageData"]["Size"], v["UsageData"]["RefCount"]) for v in volumes]
        legacy["Volumes"] = volumes
        usage["VolumeUsage"] = _usage(
            volumes, active=sum(1 for size, refs in sizes if size != -1 and refs > 0),
            total=sum(size for size, _ in sizes if size != -1),
            reclaimable=sum(size for size, refs in sizes if size != -1 and refs == 0))
    if "build-cache" in wanted:
        legacy["BuildCache"], usage["BuildCacheUsage"] = build_cache_usage(engine)
    body: dict[str, object] = {} if verbose else legacy
    body.update(usage)
    return json_response(shapes.for_version(shapes.SYSTEM_DF, body, version))


def build_cache_records(engine: object) -> list[dict[str, object]]:
    """The build cache, from whichever of the engine or its builder is a BuildCacheSource
    (none: nothing was built, so nothing is cached)."""
    for source in (engine, getattr(engine, "builder", None)):
        if isinstance(source, BuildCacheSource):
            return [as_json(r) for r in source.build_cache_records()]
    return []


def build_cache_usage(engine: object) -> tuple[list[dict[str, object]], dict[str, object]]:
    """The legacy BuildCache list and 1.52's BuildCacheUsage, counted as moby's builder does:
    active = in use, reclaimable = neither in use nor shared."""
    records = build_cache_records(engine)
    return records, _usage(
        list(records), active=sum(1 for r in records if r.get("InUse")),
        total=sum(_int(r.get("Size")) for r in records),
        reclaimable=sum(_int(r.get("Size")) for r in records if not r.get("InUse") and not r.get("Shared")))


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _usage(items: list[object], *, active: int, total: int, reclaimable: int) -> dict[str, object]:
    """One of 1.52's per-type usage objects; every field is omitempty in moby."""
    out: dict[str, object] = {"ActiveCount": active, "Items": items, "Reclaimable": reclaimable,
                              "TotalCount": len(items), "TotalSize": total}
    return {k: v for k, v in out.items() if v}


def register(router: Router) -> None:
    router.add("GET", "/system/df", system_df)
    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", info)
