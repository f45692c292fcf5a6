"""The default seccomp filter, in the OCI runtime-spec form (`linux.seccomp` of config.json).

The default is our own rule set (`BUILTIN_RULES`), written to take the same decisions as
Docker's default profile: what every container may call, what only a capability unlocks, the
clone/clone3/socket/personality argument rules and EPERM for everything else. A host's
containers-common profile (/usr/share/containers/seccomp.json, Podman's) is never picked up on
its own: it lets any container create user namespaces, mount in them and use keyrings, which
Docker's profile refuses (the refusal is what stopped CVE-2022-0492 on cgroup v1 hosts). A user
who wants it names it: `--security-opt seccomp=/usr/share/containers/seccomp.json`.

Profiles are in the Docker/containers-common format -- rules filtered by `includes` /
`excludes` on the capabilities granted (the bounding set), the architecture and the kernel
version -- and are converted here the way moby does it, for this machine's architecture.
Profiles given with `--security-opt seccomp=<file>` go through the same conversion.
"""
from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

EPERM = 1
ENOSYS = 38

# uname -m -> (the name profiles use in `includes.arches` -- moby's, libseccomp's arch names
# with Go's amd64/arm64 -- and libseccomp's SCMP_ARCH_*)
_ARCHES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"),
    "i686": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
    "loongarch64": ("loongarch64", "SCMP_ARCH_LOONGARCH64"),
}

# Which other ABIs each native one can run (32-bit compat); all of them must be filtered.
_SUB_ARCHES: dict[str, list[str]] = {
    "SCMP_ARCH_X86_64": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "SCMP_ARCH_AARCH64": ["SCMP_ARCH_ARM"],
    "SCMP_ARCH_MIPS64": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"],
    "SCMP_ARCH_S390X": ["SCMP_ARCH_S390"],
    "SCMP_ARCH_PPC64LE": [],
    "SCMP_ARCH_RISCV64": [],
    "SCMP_ARCH_LOONGARCH64": [],
}

# --- our own default rule set -------------------------------------------------------------
# System calls any container may make: everything a normal program needs, nothing that
# administers the host (modules, clocks, swap, reboot, keyrings, mounts, namespaces, bpf,
# perf, kexec, accounting, userfaultfd, io_uring). Calls a capability makes harmless are allowed
# with that capability only (rules below). The decisions are Docker's (tests/unit/
# test_seccomp_profiles.py holds a table of them); the list is ours, kept sorted.
_ALLOWED_FOR_ALL = """
_llseek _newselect accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir
chmod chown chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range
creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2
epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2
fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32
fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat get_robust_list get_thread_area getcpu getcwd
getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit getrusage getsid getsockname getsockopt gettid gettimeofday
getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_setup
io_submit ioctl ioprio_get ioprio_set ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listmount listxattr
listxattrat llistxattr lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync
munlock munlockall munmap name_to_handle_at nanosleep newfstatat open openat openat2 pause
pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat renameat2
restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask
rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr
sched_getparam sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select
semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg
sendto set_robust_list set_thread_area set_tid_address setfsgid setfsgid32 setfsuid setfsuid32
setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt
setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write
writev
""".split()

# Architecture-specific calls: (profile arch names, calls).
_ALLOWED_BY_ARCH: list[tuple[list[str], list[str]]] = [
    (["ppc64le"], ["swapcontext", "sync_file_range2"]),
    (["arm", "arm64"], ["arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush",
                        "set_tls", "sync_file_range2"]),
    (["amd64", "x32"], ["arch_prctl"]),
    (["amd64", "x32", "x86"], ["modify_ldt"]),
    (["s390", "s390x"], ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
    (["riscv64"], ["riscv_flush_icache"]),
]

# Since 4.8 the kernel runs the seccomp filter again after a tracer changed the syscall, so
# ptrace can no longer be used to step around the filter: allowed for everyone from then on
# (the kernel's own ptrace checks still apply), with CAP_SYS_PTRACE only before.
_PTRACE = ["process_vm_readv", "process_vm_writev", "ptrace"]

# Calls a capability makes harmless (the kernel checks it anyway); allowed with it only.
_ALLOWED_WITH_CAP: dict[str, list[str]] = {
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    # clone here is unconditional: namespaces may be created with CAP_SYS_ADMIN.
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
                      "fspick", "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules",
                      "lsm_set_self_attr", "mount", "mount_setattr", "move_mount", "open_tree",
                      "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
                      "sethostname", "setns", "syslog", "umount", "umount2", "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "finit_module", "init_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", *_PTRACE],
    "CAP_SYS_RAWIO": ["ioperm", "iopl"],
    "CAP_SYS_TIME": ["clock_settime", "clock_settime64", "settimeofday", "stime"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}

# clone(2) flags that create namespaces: without CAP_SYS_ADMIN, clone is allowed only when
# none of them is set (the flags are the first argument, the second on s390).
_CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# personality(2) values harmless enough for everyone: PER_LINUX, PER_LINUX32,
# UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query).
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# socket(2) families refused to everyone: AF_ALG (38, the kernel's crypto API, a recurring
# source of kernel bugs reachable from any container) and AF_VSOCK (40, talks to the
# hypervisor host, not to anything inside the container's network namespace).
AF_ALG, AF_VSOCK = 38, 40


def _builtin_rules() -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"names": _ALLOWED_FOR_ALL, "action": "SCMP_ACT_ALLOW"},
        {"names": _PTRACE, "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
        # every family but the two above, in three ranges
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": AF_ALG, "op": "SCMP_CMP_LT"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": AF_ALG + 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_GT"}]},
    ]
    for value in _PERSONALITIES:
        rules.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]})
    for arches, names in _ALLOWED_BY_ARCH:
        rules.append({"names": names, "action": "SCMP_ACT_ALLOW",
                      "includes": {"arches": arches}})
    for cap, names in _ALLOWED_WITH_CAP.items():
        rules.append({"names": names, "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}})
    rules += [
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": _CLONE_NS_FLAGS, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 1, "value": _CLONE_NS_FLAGS, "valueTwo": 0,
                   "op": "SCMP_CMP_MASKED_EQ"}],
         "includes": {"arches": ["s390", "s390x"]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        # clone3 passes its flags in memory, out of seccomp's reach: answer ENOSYS so that libc
        # falls back to clone(2), which the rule above can inspect.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ]
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM,
            "archMap": [{"architecture": a, "subArchitectures": s}
                        for a, s in _SUB_ARCHES.items()],
            "syscalls": rules}


BUILTIN_RULES: dict[str, Any] = _builtin_rules()


# --- conversion ---------------------------------------------------------------------------

def native_arch(machine: str | None = None) -> tuple[str, str]:
    """(GOARCH-style name, SCMP_ARCH_*) of this machine."""
    m = machine or platform.machine()
    try:
        return _ARCHES[m]
    except KeyError:
        raise ValueError(f"seccomp: unsupported architecture {m}") from None


def kernel_version(release: str | None = None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _parse_kernel(value: object) -> tuple[int, int] | None:
    if not value:
        return None
    return kernel_version(str(value))


def convert_profile(profile: Mapping[str, Any], capabilities: Collection[str], *,
                    machine: str | None = None,
                    kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """A Docker/containers-common profile -> OCI `linux.seccomp` for this architecture and
    these (bounding-set) capabilities, as moby's `setupSeccomp` does."""
    goarch, scmp_arch = native_arch(machine)
    kver = kernel or kernel_version()
    caps = {c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
            for c in capabilities}

    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO")}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = int(profile["defaultErrnoRet"])

    arch_map = profile.get("archMap")
    if arch_map:
        for entry in arch_map:
            if entry.get("architecture") == scmp_arch:
                out["architectures"] = [scmp_arch, *(entry.get("subArchitectures") or [])]
    elif profile.get("architectures"):
        out["architectures"] = list(profile["architectures"])
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    if profile.get("listenerPath"):
        out["listenerPath"] = profile["listenerPath"]

    syscalls: list[dict[str, Any]] = []
    for rule in profile.get("syscalls") or ():
        if not _applies(rule, goarch, caps, kver):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        sc: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            sc["errnoRet"] = int(rule["errnoRet"])
        args = [_arg(a) for a in rule.get("args") or ()]
        if args:
            sc["args"] = args
        syscalls.append(sc)
    out["syscalls"] = syscalls
    return out


def _applies(rule: Mapping[str, Any], goarch: str, caps: set[str],
             kver: tuple[int, int]) -> bool:
    exc = rule.get("excludes") or {}
    if goarch in (exc.get("arches") or ()):
        return False
    if any(c in caps for c in exc.get("caps") or ()):
        return False
    mk = _parse_kernel(exc.get("minKernel"))
    if mk is not None and kver >= mk:
        return False
    inc = rule.get("includes") or {}
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or ()):
        return False
    mk = _parse_kernel(inc.get("minKernel"))
    if mk is not None and kver < mk:
        return False
    return True


def _arg(a: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": int(a["index"]), "value": int(a.get("value", 0)),
                           "op": a["op"]}
    if a.get("valueTwo"):
        out["valueTwo"] = int(a["valueTwo"])
    return out


def load_profile(source: str | Path) -> dict[str, Any]:
    """A profile given as JSON text (what Docker's API carries for `seccomp=<file>`) or as a
    path to a JSON file."""
    text = source if isinstance(source, str) and source.lstrip().startswith("{") \
        else Path(source).read_text()
    try:
        profile = json.loads(text)
    except ValueError as e:
        raise ValueError(f"decoding seccomp profile failed: {e}") from None
    if not isinstance(profile, dict):
        raise ValueError("decoding seccomp profile failed: not a JSON object")
    return profile


# What `docker info` shows under Security Options for the default, as dockerd does for its own.
PROFILE_NAME = "builtin"


class DefaultProfiles:
    """default_profile() per bounding set, remembered: converting the rule set (filtered rule by
    rule) costs the event loop time on every container start otherwise. The returned dicts
    are shared: callers must not mutate them. Owned by the container manager."""

    def __init__(self) -> None:
        self._by_caps: dict[frozenset[str], dict[str, Any]] = {}

    def get(self, capabilities: Collection[str]) -> dict[str, Any]:
        key = frozenset(capabilities)
        profile = self._by_caps.get(key)
        if profile is None:
            profile = self._by_caps[key] = default_profile(capabilities)
        return profile


def default_profile(capabilities: Collection[str]) -> dict[str, Any]:
    """The default filter for a container granted `capabilities` (its bounding set)."""
    return convert_profile(BUILTIN_RULES, capabilities)
