"""Reading the host's cgroups: which layout it has (v1, hybrid, v2), where a container's cgroup
directories are, and whether the kernel OOM-killed something in one.

Paths are cgroupfs-style (`/asyncdock/<id>`), relative to each hierarchy's root -- what runc and
crun do with an absolute `linux.cgroupsPath` under the cgroupfs manager.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CgroupMode = Literal["v1", "hybrid", "v2"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    version: Literal[1, 2]
    controllers: frozenset[str]  # v1: from the mount options (incl. "name=systemd"); v2: empty


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field


MOUNTINFO = "/proc/self/mountinfo"


def hierarchies(mountinfo: str = MOUNTINFO) -> list[Hierarchy]:
    """The cgroup hierarchies mounted on the host. The host's are read once: they do not change
    while the daemon runs, and mountinfo grows with every container's mounts, so parsing it at
    each container start and exit would cost more the more containers run."""
    if mountinfo == MOUNTINFO:
        return list(_host_hierarchies())
    return _parse_hierarchies(mountinfo)


@functools.cache
def _host_hierarchies() -> tuple[Hierarchy, ...]:
    return tuple(_parse_hierarchies(MOUNTINFO))


def _parse_hierarchies(mountinfo: str) -> list[Hierarchy]:
    found: list[Hierarchy] = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(fields) < 5 or len(rfields) < 3:
                continue
            fstype = rfields[0]
            if fstype == "cgroup2":
                found.append(Hierarchy(Path(_unescape(fields[4])), 2, frozenset()))
            elif fstype == "cgroup":
                opts = set(rfields[2].split(","))
                ctrls = frozenset(o for o in opts if o not in {"rw", "ro", "relatime", "noatime",
                                                                "nosuid", "nodev", "noexec",
                                                                "clone_children", "xattr",
                                                                "noprefix"}
                                  and not o.startswith("release_agent="))
                found.append(Hierarchy(Path(_unescape(fields[4])), 1, ctrls))
    return found


def cgroup_mode(mountinfo: str = MOUNTINFO) -> CgroupMode:
    """v2: /sys/fs/cgroup is cgroup2. hybrid: v1 controllers plus a cgroup2 mount at
    /sys/fs/cgroup/unified (what crun refuses). v1: no cgroup2 anywhere relevant."""
    hs = hierarchies(mountinfo)
    if any(h.version == 2 and h.mountpoint == CGROUP_ROOT for h in hs):
        return "v2"
    if any(h.version == 2 and h.mountpoint == UNIFIED for h in hs):
        return "hybrid"
    return "v1"


def _rel(cgroups_path: str) -> str:
    return cgroups_path.lstrip("/")


def cgroup_dirs(cgroups_path: str) -> list[Path]:
    """Every directory a container with this cgroupfs path may have: one per v1 hierarchy
    under /sys/fs/cgroup (and the unified one on hybrid hosts), or the single v2 one."""
    rel = _rel(cgroups_path)
    mode = cgroup_mode()
    if mode == "v2":
        return [CGROUP_ROOT / rel]
    return [h.mountpoint / rel for h in hierarchies()
            if h.mountpoint.parent == CGROUP_ROOT]


def existing_cgroup_dirs(cgroups_path: str) -> list[Path]:
    return [d for d in cgroup_dirs(cgroups_path) if d.is_dir()]


def _memory_dir(cgroups_path: str) -> Path | None:
    rel = _rel(cgroups_path)
    for h in hierarchies():
        if h.version == 1 and "memory" in h.controllers:
            return h.mountpoint / rel
    if cgroup_mode() == "v2":
        return CGROUP_ROOT / rel
    return None


def _counter(path: Path, key: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def oom_killed(cgroups_path: str) -> bool:
    """Whether the kernel OOM-killed a process in this container's memory cgroup. Ask before the
    runtime's `delete`, which removes the cgroup. v2: memory.events `oom_kill`; v1:
    memory.oom_control `oom_kill` (kernel >= 4.13)."""
    d = _memory_dir(cgroups_path)
    if d is None:
        return False
    if (d / "memory.events").exists():
        return _counter(d / "memory.events", "oom_kill") > 0
    return _counter(d / "memory.oom_control", "oom_kill") > 0


def _read_at(dir_fd: int, name: str) -> str:
    import os

    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.read(fd, 1 << 20).decode()
    finally:
        os.close(fd)


def _thaw(dir_fd: int) -> None:
    """A frozen v1 freezer thawed: a frozen task does not die until it runs again."""
    import os

    try:
        if _read_at(dir_fd, "freezer.state").strip() == "THAWED":
            return
        fd = os.open("freezer.state", os.O_WRONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return  # no freezer in this hierarchy
    try:
        os.write(fd, b"THAWED")
    except OSError:
        pass
    finally:
        os.close(fd)


def cgroup_pids(cgroups_path: str, *, nested: bool = False, thaw: bool = False) -> set[int]:
    """Host pids in a container's cgroups, one per hierarchy (`docker top`'s set); `nested`:
    in the cgroups a container made below them too, walked iteratively to any depth; `thaw`:
    frozen freezers are thawed on the way. Unreadable or vanishing directories are skipped.
    The pids come from the kernel's cgroup files, never from the container."""
    import os

    from ..util.fstree import walk

    pids: set[int] = set()
    for top in existing_cgroup_dirs(cgroups_path):
        try:
            dirs = (((e.dir_fd, e.name) for e in walk(top, stat_leaves=False) if e.is_dir) if nested
                    else iter([(None, str(top))]))
            for parent_fd, name in dirs:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent_fd)
                except OSError:
                    continue
                try:
                    if thaw:
                        _thaw(fd)
                    pids.update(int(x) for x in _read_at(fd, "cgroup.procs").split() if x.isdigit())
                except OSError:
                    pass
                finally:
                    os.close(fd)
        except OSError:
            continue
    return pids


def kill_cgroup_processes(cgroups_path: str) -> int:
    """SIGKILL every process still in a container's cgroups (and in the ones below them);
    returns how many were signalled. For recovery, where the runtime no longer knows the
    container (its state went halfway in a crash) but its processes live on."""
    import os
    import signal

    pids = cgroup_pids(cgroups_path, nested=True, thaw=True)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
