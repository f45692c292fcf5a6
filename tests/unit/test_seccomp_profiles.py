"""The default seccomp profile: Docker's decisions, never the host's containers-common profile,
and the container manager's memo of its conversions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncdock.containers.seccomp import (BUILTIN_RULES, ENOSYS, EPERM, DefaultProfiles,
                                          convert_profile, default_profile, load_profile)
from asyncdock.containers.spec import ALL_CAPABILITIES, DEFAULT_CAPABILITIES

ALLOW = "allow"
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
CLONE_THREAD_FLAGS = 0x003D0F00  # what pthread_create passes (VM|FS|FILES|SIGHAND|THREAD|...)
AF_INET, AF_NETLINK, AF_ALG, AF_VSOCK, AF_XDP = 2, 16, 38, 40, 44


def decide(profile: dict[str, Any], name: str, *args: int) -> str | int:
    """What a filter built from this OCI section answers for one call: "allow" or an errno.
    An ALLOW rule whose argument conditions all hold wins, then an ERRNO rule, then the
    default -- how libseccomp resolves these profiles (no rule here mixes the two for a call
    with overlapping conditions)."""
    def holds(cond: dict[str, Any]) -> bool:
        v = args[cond["index"]] if cond["index"] < len(args) else 0
        op, want = cond["op"], cond["value"]
        if op == "SCMP_CMP_EQ":
            return v == want
        if op == "SCMP_CMP_NE":
            return v != want
        if op == "SCMP_CMP_LT":
            return v < want
        if op == "SCMP_CMP_GT":
            return v > want
        if op == "SCMP_CMP_MASKED_EQ":
            return v & want == cond.get("valueTwo", 0)
        raise AssertionError(op)

    matching = [r for r in profile["syscalls"]
                if name in r["names"] and all(holds(c) for c in r.get("args", ()))]
    if any(r["action"] == "SCMP_ACT_ALLOW" for r in matching):
        return ALLOW
    for r in matching:
        if r["action"] == "SCMP_ACT_ERRNO":
            return r.get("errnoRet", EPERM)
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    return profile.get("defaultErrnoRet", EPERM)


DEFAULT = list(DEFAULT_CAPABILITIES)


def plus(*caps: str) -> list[str]:
    return DEFAULT + list(caps)


# Docker's default profile's decisions (moby profiles/seccomp default.json) for sensitive calls,
# on x86_64 with a current kernel: (call, args, capabilities, answer).
DOCKER_DECISIONS: list[tuple[str, tuple[int, ...], list[str], str | int]] = [
    # namespaces: the CVE-2022-0492 path needs unshare(CLONE_NEWUSER) then mount
    ("unshare", (CLONE_NEWUSER,), DEFAULT, EPERM),
    ("unshare", (CLONE_NEWUSER | CLONE_NEWNS,), DEFAULT, EPERM),
    ("unshare", (CLONE_NEWUSER,), plus("CAP_SYS_ADMIN"), ALLOW),
    ("setns", (3, 0), DEFAULT, EPERM),
    ("setns", (3, 0), plus("CAP_SYS_ADMIN"), ALLOW),
    ("mount", (), DEFAULT, EPERM),
    ("mount", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("umount2", (), DEFAULT, EPERM),
    ("umount2", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("fsopen", (), DEFAULT, EPERM),
    ("open_tree", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("clone", (CLONE_THREAD_FLAGS,), DEFAULT, ALLOW),
    ("clone", (0x11,), DEFAULT, ALLOW),  # fork: SIGCHLD
    ("clone", (CLONE_NEWUSER | 0x11,), DEFAULT, EPERM),
    ("clone", (CLONE_NEWNET | 0x11,), DEFAULT, EPERM),
    ("clone", (CLONE_NEWUSER | 0x11,), plus("CAP_SYS_ADMIN"), ALLOW),
    ("clone3", (), DEFAULT, ENOSYS),
    ("clone3", (), plus("CAP_SYS_ADMIN"), ALLOW),
    # keyrings: not namespaced, refused to everyone
    ("keyctl", (), DEFAULT, EPERM),
    ("keyctl", (), plus("CAP_SYS_ADMIN"), EPERM),
    ("add_key", (), DEFAULT, EPERM),
    ("request_key", (), DEFAULT, EPERM),
    ("keyctl", (), list(ALL_CAPABILITIES), EPERM),
    # bpf and perf
    ("bpf", (), DEFAULT, EPERM),
    ("bpf", (), plus("CAP_BPF"), ALLOW),
    ("bpf", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("perf_event_open", (), DEFAULT, EPERM),
    ("perf_event_open", (), plus("CAP_PERFMON"), ALLOW),
    ("perf_event_open", (), plus("CAP_SYS_ADMIN"), ALLOW),
    # personality: only the harmless values
    ("personality", (0,), DEFAULT, ALLOW),
    ("personality", (0xFFFFFFFF,), DEFAULT, ALLOW),
    ("personality", (0x0040000,), DEFAULT, EPERM),  # ADDR_NO_RANDOMIZE
    ("personality", (0x0040000,), list(ALL_CAPABILITIES), EPERM),
    # sockets: all families but AF_ALG and AF_VSOCK
    ("socket", (AF_INET,), DEFAULT, ALLOW),
    ("socket", (AF_NETLINK,), DEFAULT, ALLOW),
    ("socket", (39,), DEFAULT, ALLOW),
    ("socket", (AF_XDP,), DEFAULT, ALLOW),
    ("socket", (AF_ALG,), DEFAULT, EPERM),
    ("socket", (AF_VSOCK,), DEFAULT, EPERM),
    ("socket", (AF_VSOCK,), list(ALL_CAPABILITIES), EPERM),
    # ptrace: allowed since kernel 4.8 for all; the cross-process helpers with SYS_PTRACE
    ("ptrace", (), DEFAULT, ALLOW),
    ("process_vm_readv", (), DEFAULT, ALLOW),
    ("kcmp", (), DEFAULT, EPERM),
    ("kcmp", (), plus("CAP_SYS_PTRACE"), ALLOW),
    ("pidfd_getfd", (), DEFAULT, EPERM),
    ("pidfd_getfd", (), plus("CAP_SYS_PTRACE"), ALLOW),
    ("process_madvise", (), plus("CAP_SYS_PTRACE"), ALLOW),
    # host administration
    ("reboot", (), DEFAULT, EPERM),
    ("reboot", (), plus("CAP_SYS_BOOT"), ALLOW),
    ("chroot", (), DEFAULT, ALLOW),  # CAP_SYS_CHROOT is in the default set
    ("chroot", (), [c for c in DEFAULT if c != "CAP_SYS_CHROOT"], EPERM),
    ("init_module", (), DEFAULT, EPERM),
    ("finit_module", (), plus("CAP_SYS_MODULE"), ALLOW),
    ("kexec_load", (), list(ALL_CAPABILITIES), EPERM),
    ("kexec_file_load", (), list(ALL_CAPABILITIES), EPERM),
    ("swapon", (), list(ALL_CAPABILITIES), EPERM),
    ("acct", (), DEFAULT, EPERM),
    ("acct", (), plus("CAP_SYS_PACCT"), ALLOW),
    ("clock_settime", (), DEFAULT, EPERM),
    ("settimeofday", (), plus("CAP_SYS_TIME"), ALLOW),
    ("syslog", (), DEFAULT, EPERM),
    ("syslog", (), plus("CAP_SYSLOG"), ALLOW),
    ("syslog", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("iopl", (), plus("CAP_SYS_RAWIO"), ALLOW),
    ("vhangup", (), plus("CAP_SYS_TTY_CONFIG"), ALLOW),
    ("open_by_handle_at", (), DEFAULT, EPERM),
    ("open_by_handle_at", (), plus("CAP_DAC_READ_SEARCH"), ALLOW),
    ("name_to_handle_at", (), DEFAULT, ALLOW),
    ("get_mempolicy", (), DEFAULT, EPERM),
    ("set_mempolicy", (), plus("CAP_SYS_NICE"), ALLOW),
    ("mbind", (), plus("CAP_SYS_NICE"), ALLOW),
    ("sethostname", (), DEFAULT, EPERM),
    ("sethostname", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("quotactl", (), plus("CAP_SYS_ADMIN"), ALLOW),
    ("lookup_dcookie", (), DEFAULT, EPERM),
    ("fanotify_init", (), DEFAULT, EPERM),
    ("fanotify_mark", (), DEFAULT, ALLOW),
    ("lsm_list_modules", (), DEFAULT, EPERM),
    ("lsm_list_modules", (), plus("CAP_SYS_ADMIN"), ALLOW),
    # not in Docker's profile at all
    ("userfaultfd", (), list(ALL_CAPABILITIES), EPERM),
    ("io_uring_setup", (), list(ALL_CAPABILITIES), EPERM),
    ("uselib", (), list(ALL_CAPABILITIES), EPERM),
    ("nfsservctl", (), list(ALL_CAPABILITIES), EPERM),
    ("ustat", (), DEFAULT, EPERM),
    ("sysfs", (), DEFAULT, EPERM),
    ("_sysctl", (), DEFAULT, EPERM),
    ("pivot_root", (), DEFAULT, EPERM),
    ("pivot_root", (), plus("CAP_SYS_ADMIN"), EPERM),
    ("get_kernel_syms", (), DEFAULT, EPERM),
    # and what every program needs
    ("read", (), DEFAULT, ALLOW),
    ("execve", (), [], ALLOW),
    ("arch_prctl", (), DEFAULT, ALLOW),
    ("modify_ldt", (), DEFAULT, ALLOW),
    ("seccomp", (), DEFAULT, ALLOW),
    ("vmsplice", (), DEFAULT, ALLOW),
    ("statmount", (), DEFAULT, ALLOW),
    ("io_uring_enter", (), DEFAULT, EPERM),
]


@pytest.mark.parametrize(("name", "args", "caps", "expected"), DOCKER_DECISIONS,
                         ids=[f"{n}{list(a) if a else ''}-{len(c)}caps-{e}"
                              for n, a, c, e in DOCKER_DECISIONS])
def test_default_profile_takes_dockers_decisions(name: str, args: tuple[int, ...],
                                                 caps: list[str], expected: str | int) -> None:
    profile = convert_profile(BUILTIN_RULES, caps, machine="x86_64", kernel=(6, 1))
    assert decide(profile, name, *args) == expected
    assert DefaultProfiles().get(caps) == default_profile(caps)


def test_default_profile_filters_every_abi_of_the_machine() -> None:
    profile = convert_profile(BUILTIN_RULES, DEFAULT, machine="x86_64", kernel=(6, 1))
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == EPERM
    arm = convert_profile(BUILTIN_RULES, DEFAULT, machine="aarch64", kernel=(6, 1))
    assert decide(arm, "arch_prctl") == EPERM and decide(arm, "set_tls") == ALLOW
    s390 = convert_profile(BUILTIN_RULES, DEFAULT, machine="s390x", kernel=(6, 1))
    # s390 passes clone's flags second
    assert decide(s390, "clone", 0, CLONE_NEWUSER) == EPERM
    assert decide(s390, "clone", CLONE_NEWUSER, 0) == ALLOW


def test_ptrace_needs_the_capability_on_kernels_before_4_8() -> None:
    old = convert_profile(BUILTIN_RULES, DEFAULT, machine="x86_64", kernel=(4, 4))
    assert decide(old, "ptrace") == EPERM
    assert decide(convert_profile(BUILTIN_RULES, plus("CAP_SYS_PTRACE"), machine="x86_64",
                                  kernel=(4, 4)), "ptrace") == ALLOW


HOST_PROFILE = Path("/usr/share/containers/seccomp.json")


def test_the_hosts_containers_common_profile_is_not_the_default(tmp_path: Path) -> None:
    """containers-common's profile lets any container unshare a user namespace and use
    keyrings; the default must not pick it up even when it is installed."""
    # A stand-in with containers-common's permissive decisions where the host has none.
    host = HOST_PROFILE if HOST_PROFILE.exists() else tmp_path / "seccomp.json"
    if not HOST_PROFILE.exists():
        host.write_text(json.dumps({**BUILTIN_RULES, "syscalls": [
            *BUILTIN_RULES["syscalls"],
            {"names": ["unshare", "keyctl", "add_key", "request_key", "mount"],
             "action": "SCMP_ACT_ALLOW"}]}))
    permissive = convert_profile(load_profile(host), DEFAULT)
    assert decide(permissive, "unshare", CLONE_NEWUSER) == ALLOW  # what the host file allows
    for profile in (default_profile(DEFAULT), DefaultProfiles().get(DEFAULT)):
        assert decide(profile, "unshare", CLONE_NEWUSER) == EPERM
        assert decide(profile, "keyctl") == EPERM
        assert decide(profile, "mount") == EPERM


def test_same_bounding_set_converts_once_and_matches_a_fresh_conversion() -> None:
    profiles = DefaultProfiles()
    plain = profiles.get(DEFAULT)
    assert profiles.get(list(reversed(DEFAULT))) is plain
    assert plain == default_profile(DEFAULT)
    admin = profiles.get(plus("CAP_SYS_ADMIN"))
    assert decide(admin, "mount") == ALLOW and decide(plain, "mount") == EPERM
