"""Facts about the host, read once (they do not change while the daemon runs)."""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class HostFacts:
    kernel: str
    os_name: str
    os_version: str
    go_arch: str
    mem_total: int
    cgroup_version: str
    swap_limit: bool
    ip_forward: bool


_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64", "i686": "386"}


def go_arch() -> str:
    m = platform.machine()
    return _GO_ARCH.get(m, m)


def cgroup_version() -> str:
    """"2" on a unified host; "1" on v1 and hybrid hosts (Docker reports hybrid as 1)."""
    try:
        return "2" if os.statvfs("/sys/fs/cgroup") and _fstype("/sys/fs/cgroup") == "cgroup2" else "1"
    except OSError:
        return "1"


def _fstype(path: str) -> str:
    best = ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")):
                if len(parts[1]) >= len(best[0]):
                    best = (parts[1], parts[2])
    return best[1]


@functools.cache
def host_facts() -> HostFacts:
    os_name, os_version = "Linux", ""
    try:
        with open("/etc/os-release") as f:
            kv = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        os_name = kv.get("PRETTY_NAME", "Linux").strip('"')
        os_version = kv.get("VERSION_ID", "").strip('"')
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    cg = cgroup_version()
    swap = os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") if cg == "1" else True
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            fwd = f.read().strip() == "1"
    except OSError:
        fwd = False
    return HostFacts(platform.release(), os_name, os_version, go_arch(), mem, cg, swap, fwd)
