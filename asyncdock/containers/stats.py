"""`GET /containers/{id}/stats`: cgroup v1 or v2 counters in the JSON shape the docker CLI
computes its percentages from (cpu_stats/precpu_stats with system_cpu_usage and online_cpus,
memory_stats with the page-cache counters it subtracts). Sent by api/streams/stats.py."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .models import ContainerRecord
from ..base.timefmt import rfc3339nano
from ..base.timefmt import ZERO_TIME

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_NS = 1_000_000_000



if TYPE_CHECKING:
    from .supervisor import Supervisor

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _pids(d: Path) -> dict[str, Any]:
    """pids_stats from a pids cgroup directory (v1 controller or v2 group: same file names)."""
    out: dict[str, Any] = {}
    cur = _int(d / "pids.current")
    if cur is not None:
        out["current"] = cur
    lim = _int(d / "pids.max")
    if lim:
        out["limit"] = lim
    return out


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def system_cpu_usage() -> int:
    """Host CPU time in ns (moby: the first `cpu` line of /proc/stat, user..steal)."""
    for line in (_read(Path("/proc/stat")) or "").splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(x) for x in line.split()[1:8])
            return ticks * _NS // _CLK_TCK
    return 0


def online_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def machine_memory() -> int:
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _dirs(cgroups_path: str) -> tuple[str, dict[str, Path]]:
    """("v1", {controller: dir}) or ("v2", {"": dir})."""
    from ..runtime.cgroups import CGROUP_ROOT, cgroup_mode, hierarchies

    rel = cgroups_path.lstrip("/")
    if cgroup_mode() == "v2":
        return "v2", {"": Path(CGROUP_ROOT) / rel}
    dirs: dict[str, Path] = {}
    for h in hierarchies():
        if h.version == 1:
            for c in h.controllers:
                dirs.setdefault(c, h.mountpoint / rel)
    return "v1", dirs


def _blkio_v1(d: Path | None, name: str) -> list[dict[str, Any]]:
    if d is None:
        return []
    out = []
    for line in (_read(d / name) or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            try:
                out.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
            except ValueError:
                pass
    return out


def sample(cgroups_path: str) -> dict[str, Any]:
    """One reading: cpu_stats, memory_stats, pids_stats, blkio_stats."""
    mode, dirs = _dirs(cgroups_path)
    sys_usage = system_cpu_usage()
    ncpu = online_cpus()
    empty_blkio = {k: [] for k in ("io_service_bytes_recursive", "io_serviced_recursive", "io_queue_recursive",
                                   "io_service_time_recursive", "io_wait_time_recursive", "io_merged_recursive",
                                   "io_time_recursive", "sectors_recursive")}
    limit_cap = machine_memory()
    if mode == "v1":
        acct = dirs.get("cpuacct")
        cpu = dirs.get("cpu")
        percpu = [int(x) for x in (_read(acct / "cpuacct.usage_percpu") or "").split()] if acct else []
        st = _kv(acct / "cpuacct.stat") if acct else {}
        thr = _kv(cpu / "cpu.stat") if cpu else {}
        cpu_stats: dict[str, Any] = {
            "cpu_usage": {
                "total_usage": (_int(acct / "cpuacct.usage") or 0) if acct else 0,
                "percpu_usage": percpu,
                "usage_in_kernelmode": st.get("system", 0) * _NS // _CLK_TCK,
                "usage_in_usermode": st.get("user", 0) * _NS // _CLK_TCK,
            },
            "system_cpu_usage": sys_usage,
            "online_cpus": ncpu,
            "throttling_data": {"periods": thr.get("nr_periods", 0), "throttled_periods": thr.get("nr_throttled", 0),
                                "throttled_time": thr.get("throttled_time", 0)},
        }
        mem = dirs.get("memory")
        memory_stats: dict[str, Any] = {}
        if mem is not None and mem.is_dir():
            limit = _int(mem / "memory.limit_in_bytes") or 0
            if limit_cap and (limit == 0 or limit > limit_cap):
                limit = limit_cap
            memory_stats = {
                "usage": _int(mem / "memory.usage_in_bytes") or 0,
                "max_usage": _int(mem / "memory.max_usage_in_bytes") or 0,
                "stats": _kv(mem / "memory.stat"),
                "limit": limit,
            }
            failcnt = _int(mem / "memory.failcnt")
            if failcnt:
                memory_stats["failcnt"] = failcnt
        pids = dirs.get("pids")
        pids_stats = _pids(pids) if pids is not None else {}
        blk = dirs.get("blkio")
        blkio = dict(empty_blkio)
        if blk is not None:
            blkio["io_service_bytes_recursive"] = _blkio_v1(blk, "blkio.throttle.io_service_bytes_recursive")
            blkio["io_serviced_recursive"] = _blkio_v1(blk, "blkio.throttle.io_serviced_recursive")
    else:
        d = dirs[""]
        st = _kv(d / "cpu.stat")
        cpu_stats = {
            "cpu_usage": {
                "total_usage": st.get("usage_usec", 0) * 1000,
                "usage_in_kernelmode": st.get("system_usec", 0) * 1000,
                "usage_in_usermode": st.get("user_usec", 0) * 1000,
            },
            "system_cpu_usage": sys_usage,
            "online_cpus": ncpu,
            "throttling_data": {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                                "throttled_time": st.get("throttled_usec", 0) * 1000},
        }
        limit = _int(d / "memory.max") or 0
        if limit_cap and (limit == 0 or limit > limit_cap):
            limit = limit_cap
        memory_stats = {"usage": _int(d / "memory.current") or 0, "stats": _kv(d / "memory.stat"), "limit": limit}
        pids_stats = _pids(d)
        blkio = dict(empty_blkio)
        svc_bytes: list[dict[str, Any]] = []
        svc_ios: list[dict[str, Any]] = []
        for line in (_read(d / "io.stat") or "").splitlines():
            parts = line.split()
            if not parts or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            vals = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            for key, op, target in (("rbytes", "read", svc_bytes), ("wbytes", "write", svc_bytes),
                                    ("rios", "read", svc_ios), ("wios", "write", svc_ios)):
                if key in vals:
                    target.append({"major": int(major), "minor": int(minor), "op": op, "value": int(vals[key])})
        blkio["io_service_bytes_recursive"] = svc_bytes
        blkio["io_serviced_recursive"] = svc_ios
    return {"cpu_stats": cpu_stats, "memory_stats": memory_stats, "pids_stats": pids_stats, "blkio_stats": blkio}


def network_stats(pid: int) -> dict[str, dict[str, int]] | None:
    """Per-interface counters of the container's network namespace, read from its init's
    /proc/<pid>/net/dev (Docker's `networks` object; loopback is left out as Docker does)."""
    text = _read(Path(f"/proc/{pid}/net/dev")) if pid else None
    if text is None:
        return None
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        f = rest.split()
        if name == "lo" or len(f) < 16:
            continue
        n = [int(x) for x in f]
        out[name] = {"rx_bytes": n[0], "rx_packets": n[1], "rx_errors": n[2], "rx_dropped": n[3],
                     "tx_bytes": n[8], "tx_packets": n[9], "tx_errors": n[10], "tx_dropped": n[11]}
    return out or None


def _empty_cpu() -> dict[str, Any]:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}


def document(rec: ContainerRecord, now: dict[str, Any] | None, read_ns: int,
             prev: dict[str, Any] | None, prev_ns: int,
             networks: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The JSON object Docker sends per reading (`networks` only when the container has its own
    interfaces: not with --network host or none, as Docker)."""
    blank = {"cpu_stats": _empty_cpu(), "memory_stats": {}, "pids_stats": {},
             "blkio_stats": {k: None for k in ("io_service_bytes_recursive", "io_serviced_recursive",
                                               "io_queue_recursive", "io_service_time_recursive",
                                               "io_wait_time_recursive", "io_merged_recursive",
                                               "io_time_recursive", "sectors_recursive")}}
    cur = now or blank
    doc = {
        "read": rfc3339nano(read_ns) if now else ZERO_TIME,
        "preread": rfc3339nano(prev_ns) if prev else ZERO_TIME,
        "pids_stats": cur["pids_stats"],
        "blkio_stats": cur["blkio_stats"],
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cur["cpu_stats"],
        "precpu_stats": prev["cpu_stats"] if prev else _empty_cpu(),
        "memory_stats": cur["memory_stats"],
        "name": rec.name,
        "id": rec.id,
        "os_type": "linux",  # API 1.52
    }
    if networks and now:
        doc["networks"] = networks
    return doc


async def readings(mgr: Supervisor, rec: ContainerRecord, *, stream: bool, one_shot: bool) -> AsyncIterator[dict[str, Any]]:
    """The documents `docker stats` gets: one a second while the container runs with `stream`,
    else one (after a first second for the CPU delta, unless `one_shot`: precpu stays empty)."""
    from .launcher import cgroups_path

    path = cgroups_path(rec)
    own_netns = rec.host_config.network_mode not in ("host", "none") and \
        not rec.host_config.network_mode.startswith("container:")

    async def take() -> tuple[dict[str, Any] | None, int]:
        if not rec.state.running:
            return None, 0
        return await asyncio.to_thread(sample, path), time.time_ns()

    def nets() -> dict[str, dict[str, int]] | None:
        return network_stats(mgr.live(rec).pid) if own_netns else None

    prev, prev_ns = None, 0
    if not one_shot:
        prev, prev_ns = await take()
        if prev is not None:
            await asyncio.sleep(1.0)
    while True:
        cur, cur_ns = await take()
        if not rec.state.running:
            cur, prev = None, None
        yield document(rec, cur, cur_ns, prev, prev_ns, nets())
        if not stream or not rec.state.running:
            break
        prev, prev_ns = cur, cur_ns
        await asyncio.sleep(1.0)
