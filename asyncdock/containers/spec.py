"""A container's OCI runtime spec (config.json, runtime-spec 1.0.2) with Docker's defaults.

`SpecInput` holds what the engine decided for the container (the resolved HostConfig and
Config); `build_spec(inp)` turns it into the dict written as the bundle's config.json. The
defaults follow moby's (oci/defaults.go, daemon/oci_linux.go): capability set, masked and
read-only /proc paths, mounts, device rules, namespaces, seccomp, `--privileged`, `--init`.

Also here, because they read the image's rootfs the way the runtime will see it (symlinks
resolved inside the rootfs, never on the host): `resolve_user` (USER -> uid/gid/groups, as
moby's user.GetExecUser) and `find_executable` (Docker's "executable file not found" errors
before the runtime is even asked).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec

from asyncdock.containers import seccomp as _seccomp
from asyncdock.base.errors import InvalidParameter
from asyncdock.util.errtext import os_error_text
from asyncdock.runtime.cgroups import cgroup_mode

OCI_VERSION = "1.0.2"
DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024

# Every capability of Linux 6.x, by number (the bit in /proc/<pid>/status Cap* masks).
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON",
    "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# Docker's default set (moby's caps.DefaultCapabilities): CapEff 0x00000000a80425fb for root.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

# Device cgroup rules every container gets: deny all, then the devices the runtime creates in
# /dev (null, zero, full, random, urandom, tty, console, ptmx, pts/*) and mknod of anything
# (creating a node is harmless when opening it is denied). runc and crun add the same list
# themselves; it is spelled out so the spec alone says what the container may open.
_DEFAULT_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    *({"allow": True, "type": "c", "major": 1, "minor": n, "access": "rwm"} for n in (3, 5, 7, 8, 9)),
    *({"allow": True, "type": "c", "major": 5, "minor": n, "access": "rwm"} for n in (0, 1, 2)),
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
]

# Directories of the host's /dev that `--privileged` does not copy (runtime-made or virtual).
_HOST_DEV_SKIP = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


class BindMount(msgspec.Struct, frozen=True):
    source: str
    destination: str
    readonly: bool = False
    # "" means Docker's default, rprivate.
    propagation: str = ""
    recursive: bool = True
    # More mount(8) options (nosuid, nodev, noexec, ...).
    options: tuple[str, ...] = ()
    # A read-only bind is recursively read-only (`rro`: its submounts too, API 1.44) where the
    # kernel and runtime can; BindOptions.ReadOnlyNonRecursive asks for plain `ro`, and
    # ReadOnlyForceRecursive for an error instead of a fallback to `ro`.
    readonly_non_recursive: bool = False
    readonly_force_recursive: bool = False


class TmpfsMount(msgspec.Struct, frozen=True):
    destination: str
    # `--tmpfs /x:size=64m,mode=1777,exec`: merged over Docker's noexec,nosuid,nodev.
    options: tuple[str, ...] = ()


class DeviceMapping(msgspec.Struct, frozen=True):
    path_on_host: str
    path_in_container: str = ""
    permissions: str = "rwm"


class Ulimit(msgspec.Struct, frozen=True):
    name: str  # "nofile", "nproc", ... (RLIMIT_ suffix, any case)
    soft: int
    hard: int


class Resources(msgspec.Struct):
    memory: int = 0
    # -1: unlimited swap; 0: not set. Docker's "twice --memory" default is the caller's
    # (it is stored in HostConfig at create time).
    memory_swap: int = 0
    memory_reservation: int = 0
    memory_swappiness: int | None = None
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    # --cpus, in 1e-9 CPUs: becomes quota over a 100 ms period.
    nano_cpus: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    # None or <= 0: unlimited.
    pids_limit: int | None = None
    oom_kill_disable: bool = False
    blkio_weight: int = 0


class SpecInput(msgspec.Struct):
    rootfs: str
    args: list[str]
    env: list[str] = msgspec.field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = msgspec.field(default_factory=list)
    hostname: str = ""
    domainname: str = ""
    tty: bool = False
    readonly_rootfs: bool = False
    privileged: bool = False
    cap_add: list[str] = msgspec.field(default_factory=list)
    cap_drop: list[str] = msgspec.field(default_factory=list)
    no_new_privileges: bool = False
    # "default", "unconfined", a profile as JSON text (what Docker's API carries), or a path.
    seccomp: str = "default"
    apparmor: str = ""  # accepted, ignored: no AppArmor support
    # --security-opt systempaths=unconfined: no masked / read-only /proc paths.
    systempaths_unconfined: bool = False
    # HostConfig.MaskedPaths / ReadonlyPaths as the container's record holds them (what inspect
    # shows); None: the defaults below.
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    binds: list[BindMount] = msgspec.field(default_factory=list)
    tmpfs: list[TmpfsMount] = msgspec.field(default_factory=list)
    devices: list[DeviceMapping] = msgspec.field(default_factory=list)
    sysctls: dict[str, str] = msgspec.field(default_factory=dict)
    ulimits: list[Ulimit] = msgspec.field(default_factory=list)
    resources: Resources = msgspec.field(default_factory=Resources)
    # Namespaces. network: "none"/"private"/"" (new, lo only), "host", or a netns path.
    # pid: "private", "host" or a path. ipc: "private", "shareable", "none", "host" or a path.
    # uts: "private" or "host". cgroupns: "host", "private", "" (Docker's: private on v2).
    network: str = "none"
    pid: str = "private"
    ipc: str = "private"
    uts: str = "private"
    cgroupns: str = ""
    shm_size: int = DEFAULT_SHM_SIZE
    # Bind this directory at /dev/shm instead of a fresh tmpfs (shareable IPC / joined IPC).
    shm_path: str = ""
    init: bool = False
    init_path: str = ""  # "": default_init_path()
    cgroups_path: str = ""
    oom_score_adj: int = 0
    # /etc files the engine manages, bound over the image's: {"hostname"|"hosts"|
    # "resolv.conf": host path}.
    etc_files: dict[str, str] = msgspec.field(default_factory=dict)
    # Why a read-only bind cannot be made recursively read-only here (moby's texts: the
    # kernel has no mount_setattr, the runtime has no `rro`); "": it can.
    rro_unsupported: str = ""


class ExecutableError(InvalidParameter):
    """The command cannot be run: Docker's start error; `exit_code` is what the container
    records (127 not found, 126 not executable)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- capabilities --------------------------------------------------------------------------

def _cap_last() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return len(ALL_CAPABILITIES) - 1


def host_capabilities() -> list[str]:
    """Every capability the kernel knows and this process may grant (its bounding set): an
    engine running with fewer cannot hand out more, and asking the runtime to would fail."""
    known = ALL_CAPABILITIES[:_cap_last() + 1]
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return [c for i, c in enumerate(known) if mask >> i & 1]
    except OSError:
        pass
    return list(known)


def _normalize_caps(caps: list[str]) -> list[str]:
    out: list[str] = []
    for c in caps:
        name = c.strip().upper()
        if name != "ALL" and not name.startswith("CAP_"):
            name = "CAP_" + name
        if name != "ALL" and name not in ALL_CAPABILITIES:
            raise InvalidParameter(f'unknown capability: "{name}"')
        if name not in out:
            out.append(name)
    return out


def tweak_capabilities(cap_add: list[str], cap_drop: list[str], privileged: bool) -> list[str]:
    """moby's caps.TweakCapabilities over the default set."""
    if privileged:
        return host_capabilities()
    if not cap_add and not cap_drop:
        return list(DEFAULT_CAPABILITIES)
    adds, drops = _normalize_caps(cap_add), _normalize_caps(cap_drop)
    if "ALL" in adds:
        return [c for c in host_capabilities() if c not in drops]
    if "ALL" in drops:
        return [c for c in adds if c != "ALL"]
    caps = [c for c in DEFAULT_CAPABILITIES if c not in drops]
    return caps + [c for c in adds if c not in caps]


# --- mounts --------------------------------------------------------------------------------

def _mount(dest: str, typ: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": typ, "source": source, "options": options}


def _default_mounts(inp: SpecInput) -> list[dict[str, Any]]:
    ro = [] if inp.privileged else ["ro"]
    mounts = [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts",
               ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", *ro]),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", [*ro, "nosuid", "noexec", "nodev"]),
    ]
    if inp.ipc == "host":
        # A new mqueue instance belongs to the mounter's IPC namespace: share the host's.
        mounts.append(_mount("/dev/mqueue", "bind", "/dev/mqueue", ["rbind", "nosuid", "noexec",
                                                                     "nodev"]))
    else:
        mounts.append(_mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]))
    if inp.ipc == "host":
        mounts.append(_mount("/dev/shm", "bind", "/dev/shm", ["rbind", "nosuid", "noexec",
                                                               "nodev"]))
    elif inp.shm_path:
        mounts.append(_mount("/dev/shm", "bind", inp.shm_path, ["rbind", "rprivate"]))
    elif inp.ipc != "none":
        mounts.append(_mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                                          f"size={inp.shm_size}"]))
    return mounts


_PROPAGATIONS = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
_FLAG_PAIRS = {"exec": "noexec", "suid": "nosuid", "dev": "nodev", "rw": "ro",
               "atime": "noatime", "diratime": "nodiratime"}


def merge_tmpfs_options(options: list[str]) -> list[str]:
    """Later options win over earlier ones (moby's MergeTmpfsOptions): `exec` cancels a default
    `noexec`; `size=` etc. keep the last value."""
    opposite = {**_FLAG_PAIRS, **{v: k for k, v in _FLAG_PAIRS.items()}}
    out: list[str] = []
    for opt in options:
        key = opt.split("=", 1)[0]
        if "=" in opt:
            out = [o for o in out if o.split("=", 1)[0] != key]
        else:
            out = [o for o in out if o not in (opt, opposite.get(opt))]
        out.append(opt)
    return out


def _readonly_option(b: BindMount, rro_unsupported: str) -> str:
    """moby's oci_linux.go WithMounts: `rro` unless asked not to or not possible."""
    if not b.readonly:
        if b.readonly_non_recursive:
            raise InvalidParameter("mount options conflict: !ReadOnly && BindOptions.ReadOnlyNonRecursive")
        if b.readonly_force_recursive:
            raise InvalidParameter("mount options conflict: !ReadOnly && BindOptions.ReadOnlyForceRecursive")
        return "rw"
    if b.readonly_non_recursive:
        if b.readonly_force_recursive:
            raise InvalidParameter("mount options conflict: ReadOnlyNonRecursive && BindOptions.ReadOnlyForceRecursive")
        return "ro"
    if rro_unsupported:
        if b.readonly_force_recursive:
            raise InvalidParameter(rro_unsupported)
        return "ro"
    return "rro"


def _bind_mount(b: BindMount, rro_unsupported: str = "") -> dict[str, Any]:
    prop = b.propagation or "rprivate"
    if prop not in _PROPAGATIONS:
        raise InvalidParameter(f"invalid propagation mode: {b.propagation}")
    opts = ["rbind" if b.recursive else "bind", prop, _readonly_option(b, rro_unsupported), *b.options]
    return _mount(b.destination, "bind", b.source, opts)


def _tmpfs_mount(t: TmpfsMount) -> dict[str, Any]:
    opts = merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", *t.options])
    return _mount(t.destination, "tmpfs", "tmpfs", opts)


def _depth(dest: str) -> int:
    return len([p for p in dest.split("/") if p])


def _mounts(inp: SpecInput) -> list[dict[str, Any]]:
    user: list[dict[str, Any]] = [_bind_mount(b, inp.rro_unsupported) for b in inp.binds]
    user += [_tmpfs_mount(t) for t in inp.tmpfs]
    for name, source in inp.etc_files.items():
        # Read-only with a read-only rootfs, as Docker does.
        user.append(_mount(f"/etc/{name}", "bind", source,
                           ["rbind", "rprivate", "ro" if inp.readonly_rootfs else "rw"]))
    if inp.init:
        user.append(_mount("/dev/init", "bind", inp.init_path or default_init_path(),
                           ["bind", "ro"]))
    # The first mount at a destination wins (a user volume beats an /etc file), and parents
    # are mounted before what they contain.
    seen: set[str] = set()
    unique = []
    for m in user:
        dest = os.path.normpath(m["destination"])
        if dest not in seen:
            seen.add(dest)
            unique.append(m)
    unique.sort(key=lambda m: _depth(m["destination"]))
    mount_dev = "/dev" in seen
    defaults = [m for m in _default_mounts(inp)
                if m["destination"] not in seen
                and not (mount_dev and m["destination"].startswith("/dev/"))]
    return defaults + unique


def _rootfs_propagation(binds: list[BindMount]) -> str | None:
    props = {b.propagation for b in binds}
    if props & {"shared", "rshared"}:
        return "rshared"
    if props & {"slave", "rslave"}:
        return "rslave"
    return None


def default_init_path() -> str:
    """The init bound at /dev/init for `--init`: a static tini, since it runs inside images
    that may have no libc at all (Docker ships docker-init, a static tini, for that reason)."""
    for p in ("/usr/libexec/docker/docker-init", "/usr/bin/docker-init", "/usr/bin/tini-static",
              "/usr/bin/tini"):
        if os.access(p, os.X_OK):
            return p
    raise InvalidParameter("--init: no init binary found (install tini)")


# --- devices -------------------------------------------------------------------------------

def _device(host_path: str, container_path: str) -> tuple[dict[str, Any], str, int, int] | None:
    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        typ = "c"
    elif stat.S_ISBLK(st.st_mode):
        typ = "b"
    else:
        return None
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    dev = {"path": container_path, "type": typ, "major": major, "minor": minor,
           "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    return dev, typ, major, minor


def devices_from_path(host_path: str, container_path: str,
                      permissions: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`--device HOST[:CONTAINER[:PERMS]]`: a device node, or every node under a directory."""
    if not permissions or any(ch not in "rwm" for ch in permissions):
        raise InvalidParameter(f"invalid device mode: {permissions}")
    container_path = container_path or host_path
    devs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    try:
        found = _device(host_path, container_path)
    except FileNotFoundError:
        raise InvalidParameter(f"error gathering device information while adding custom "
                               f"device \"{host_path}\": no such file or directory") from None
    candidates: list[tuple[dict[str, Any], str, int, int]] = []
    if found is not None:
        candidates.append(found)
    elif os.path.isdir(host_path):
        for dirpath, _, files in os.walk(host_path):
            for f in sorted(files):
                hp = os.path.join(dirpath, f)
                try:
                    d = _device(hp, os.path.join(container_path, os.path.relpath(hp, host_path)))
                except OSError:
                    continue
                if d is not None:
                    candidates.append(d)
    else:
        raise InvalidParameter(f"error gathering device information while adding custom device "
                               f"\"{host_path}\": not a device node")
    for dev, typ, major, minor in candidates:
        devs.append(dev)
        rules.append({"allow": True, "type": typ, "major": major, "minor": minor,
                      "access": permissions})
    return devs, rules


def host_devices() -> list[dict[str, Any]]:
    """Every device node of the host's /dev, for `--privileged`."""
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, files in os.walk("/dev"):
        if dirpath == "/dev":
            dirnames[:] = [d for d in dirnames if d not in _HOST_DEV_SKIP]
        for f in files:
            path = os.path.join(dirpath, f)
            if path in ("/dev/console", "/dev/ptmx"):
                continue  # the runtime makes these for the container
            try:
                if os.path.islink(path):
                    continue
                d = _device(path, path)
            except OSError:
                continue
            if d is not None:
                out.append(d[0])
    return out


# --- resources -----------------------------------------------------------------------------

def linux_resources(r: Resources, device_rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The spec's linux.resources (runtime-spec): also what `docker update` hands the runtime."""
    res: dict[str, Any] = {"devices": device_rules}
    mem: dict[str, Any] = {}
    if r.memory:
        mem["limit"] = r.memory
    if r.memory_reservation:
        mem["reservation"] = r.memory_reservation
    if r.memory_swap:
        mem["swap"] = r.memory_swap
    if r.memory_swappiness is not None and r.memory_swappiness >= 0:
        mem["swappiness"] = r.memory_swappiness
    if r.oom_kill_disable:
        mem["disableOOMKiller"] = True
    if mem:
        res["memory"] = mem
    cpu: dict[str, Any] = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.nano_cpus:
        period = 100_000
        cpu["period"] = period
        cpu["quota"] = r.nano_cpus * period // 1_000_000_000
    else:
        if r.cpu_period:
            cpu["period"] = r.cpu_period
        if r.cpu_quota:
            cpu["quota"] = r.cpu_quota
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        res["cpu"] = cpu
    if r.pids_limit is not None and r.pids_limit > 0:
        res["pids"] = {"limit": r.pids_limit}
    if r.blkio_weight:
        res["blockIO"] = {"weight": r.blkio_weight}
    return res


# --- namespaces ----------------------------------------------------------------------------

def _namespaces(inp: SpecInput) -> list[dict[str, Any]]:
    ns: list[dict[str, Any]] = [{"type": "mount"}]

    def mode(kind: str, value: str, private: set[str]) -> None:
        if value == "host":
            return
        if value in private:
            ns.append({"type": kind})
        elif value.startswith("/"):
            ns.append({"type": kind, "path": value})
        else:
            raise InvalidParameter(f"invalid {kind} namespace mode: {value!r}")

    mode("network", inp.network, {"none", "private", ""})
    mode("pid", inp.pid, {"private", ""})
    mode("ipc", inp.ipc, {"private", "shareable", "none", ""})
    mode("uts", inp.uts, {"private", ""})
    cgroupns = inp.cgroupns or ("private" if cgroup_mode() == "v2" else "host")
    mode("cgroup", cgroupns, {"private"})
    return ns


# --- the spec ------------------------------------------------------------------------------

def _seccomp_for(inp: SpecInput, bounding: list[str],
                 profiles: _seccomp.DefaultProfiles | None) -> dict[str, Any] | None:
    if inp.privileged or inp.seccomp == "unconfined":
        return None
    if inp.seccomp in ("", "default"):
        return profiles.get(bounding) if profiles is not None else _seccomp.default_profile(bounding)
    try:
        return _seccomp.convert_profile(_seccomp.load_profile(inp.seccomp), bounding)
    except (OSError, ValueError) as e:
        why = os_error_text(e, "open") if isinstance(e, OSError) else str(e)
        raise InvalidParameter(f"opening seccomp profile failed: {why}") from None


def build_spec(inp: SpecInput, profiles: _seccomp.DefaultProfiles | None = None) -> dict[str, Any]:
    """config.json for this container."""
    if not inp.args:
        raise InvalidParameter("no command specified")
    caps = tweak_capabilities(inp.cap_add, inp.cap_drop, inp.privileged)
    # Root gets the set in effective/permitted; others only a bounding set, as execve gives a
    # non-root user no capabilities anyway (moby's oci.SetCapabilities; nothing inheritable
    # or ambient since CVE-2022-24769).
    if inp.uid == 0:
        capabilities = {"bounding": caps, "effective": caps, "permitted": caps}
    else:
        capabilities = {"bounding": caps}
    args = ["/dev/init", "--", *inp.args] if inp.init else list(inp.args)

    process: dict[str, Any] = {
        "terminal": inp.tty,
        "user": {"uid": inp.uid, "gid": inp.gid,
                 **({"additionalGids": list(inp.additional_gids)} if inp.additional_gids else {})},
        "args": args,
        "env": list(inp.env),
        "cwd": inp.cwd or "/",
        "capabilities": capabilities,
        "noNewPrivileges": inp.no_new_privileges,
        "oomScoreAdj": inp.oom_score_adj,
    }
    if inp.ulimits:
        process["rlimits"] = [{"type": "RLIMIT_" + u.name.upper().removeprefix("RLIMIT_"),
                               "soft": u.soft, "hard": u.hard} for u in inp.ulimits]

    device_rules = [dict(r) for r in _DEFAULT_DEVICE_RULES]
    devices: list[dict[str, Any]] = []
    if inp.privileged:
        devices = host_devices()
        device_rules = [{"allow": True, "access": "rwm"}]
    else:
        for d in inp.devices:
            devs, rules = devices_from_path(d.path_on_host, d.path_in_container, d.permissions)
            devices += devs
            device_rules += rules

    linux: dict[str, Any] = {
        "namespaces": _namespaces(inp),
        "resources": linux_resources(inp.resources, device_rules),
        "devices": devices,
    }
    if inp.cgroups_path:
        linux["cgroupsPath"] = inp.cgroups_path
    sysctls = dict(inp.sysctls)
    if inp.domainname and inp.uts != "host":
        # As a sysctl rather than the spec's `domainname`, which runc < 1.2 ignores (moby too).
        sysctls.setdefault("kernel.domainname", inp.domainname)
    if sysctls:
        linux["sysctl"] = sysctls
    if not (inp.privileged or inp.systempaths_unconfined):
        linux["maskedPaths"] = list(MASKED_PATHS if inp.masked_paths is None else inp.masked_paths)
        linux["readonlyPaths"] = list(READONLY_PATHS if inp.readonly_paths is None else inp.readonly_paths)
    sc = _seccomp_for(inp, caps, profiles)
    if sc is not None:
        linux["seccomp"] = sc
    prop = _rootfs_propagation(inp.binds)
    if prop:
        linux["rootfsPropagation"] = prop

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        # runc refuses a rootfs path that goes through a symlink (/var/run -> /run ...).
        "root": {"path": os.path.realpath(inp.rootfs), "readonly": inp.readonly_rootfs},
        "mounts": _mounts(inp),
        "linux": linux,
    }
    if inp.uts != "host" and inp.hostname:
        spec["hostname"] = inp.hostname
    return spec


# --- paths inside the rootfs ---------------------------------------------------------------

_MAX_SYMLINKS = 255


def resolve_in_rootfs(rootfs: Path, path: str) -> Path:
    """The host path of `path` as seen from inside `rootfs`: symlinks are followed as the
    container would follow them, with `/` and `..` clamped at the rootfs, so that an image's
    symlink can never point us at a host file. The result may not exist."""
    root = Path(rootfs)
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)  # nothing there: no symlink to follow; `..` still clamps
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(40, "too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def find_executable(rootfs: Path, argv0: str, path_env: str | None, cwd: str = "/") -> None:
    """Raise ExecutableError with Docker's (Go's exec.LookPath's) text when `argv0` cannot be
    executed in the container: missing (127) or not executable (126)."""
    if not argv0:
        raise InvalidParameter("no command specified")
    if "/" in argv0:
        container_path = argv0 if argv0.startswith("/") else os.path.join(cwd or "/", argv0)
        try:
            st = os.stat(resolve_in_rootfs(rootfs, container_path))
        except OSError:
            raise ExecutableError(f'exec: "{argv0}": stat {argv0}: no such file or directory',
                                  127) from None
        if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
            raise ExecutableError(f'exec: "{argv0}": permission denied', 126)
        return
    search = DEFAULT_PATH_ENV if path_env is None else path_env
    for d in search.split(":") if search else []:
        d = d or "."
        container_dir = d if d.startswith("/") else os.path.join(cwd or "/", d)
        try:
            st = os.stat(resolve_in_rootfs(rootfs, os.path.join(container_dir, argv0)))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return
    raise ExecutableError(f'exec: "{argv0}": executable file not found in $PATH', 127)


def path_from_env(env: list[str]) -> str | None:
    for e in reversed(env):
        if e.startswith("PATH="):
            return e[5:]
    return None


# --- users ---------------------------------------------------------------------------------

_MAX_ID = 2**31 - 1


def _read_db(rootfs: Path, name: str) -> list[list[str]] | None:
    """Rows of /etc/passwd or /etc/group (colon-split), None when the file does not exist."""
    try:
        text = resolve_in_rootfs(rootfs, f"/etc/{name}").read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def resolve_user(rootfs: Path, user: str) -> tuple[int, int, list[int]]:
    """USER (`name`, `uid`, `name:group`, `uid:gid`, ...) -> (uid, gid, additional gids), from
    the image's /etc/passwd and /etc/group, with moby's rules and messages. The primary gid
    comes first in the additional gids (moby does the same since 20.10.18)."""
    user_arg, _, group_arg = user.partition(":")
    uid_num, gid_num = _int(user_arg), _int(group_arg)
    uid, gid, matched_name = 0, 0, ""

    passwd = _read_db(rootfs, "passwd")
    match = None
    for row in passwd or ():
        if len(row) < 4:
            continue
        ruid, rgid = _int(row[2]), _int(row[3])
        if ruid is None or rgid is None:
            continue
        if (user_arg == "" and ruid == 0) or (uid_num is not None and ruid == uid_num) or \
                (uid_num is None and row[0] == user_arg):
            match = (row[0], ruid, rgid)
            break
    if match is not None:
        matched_name, uid, gid = match
    elif user_arg:
        if uid_num is None:
            raise InvalidParameter(f"unable to find user {user_arg}: no matching entries in "
                                   f"passwd file")
        if not 0 <= uid_num <= _MAX_ID:
            raise InvalidParameter("uids and gids must be in range 0-2147483647")
        uid = uid_num

    sgids: list[int] = []
    if group_arg or matched_name:
        groups = _read_db(rootfs, "group") or []
        if group_arg:
            found = None
            for row in groups:
                if len(row) >= 3 and ((gid_num is not None and _int(row[2]) == gid_num) or
                                      (gid_num is None and row[0] == group_arg)):
                    found = _int(row[2])
                    break
            if found is not None:
                gid = found
            elif gid_num is None:
                raise InvalidParameter(f"unable to find group {group_arg}: no matching entries "
                                       f"in group file")
            elif not 0 <= gid_num <= _MAX_ID:
                raise InvalidParameter("uids and gids must be in range 0-2147483647")
            else:
                gid = gid_num
        else:
            for row in groups:
                if len(row) >= 4 and matched_name in row[3].split(","):
                    g = _int(row[2])
                    if g is not None:
                        sgids.append(g)
    additional = [gid]
    for g in sgids:
        if g not in additional:
            additional.append(g)
    return uid, gid, additional
