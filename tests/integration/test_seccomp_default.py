"""The default seccomp profile in a real container, driven by the docker CLI: what Docker's
default profile refuses (a user namespace, a mount inside one, the keyring calls) is refused
with EPERM, and each works with `--security-opt seccomp=unconfined`."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

BUSYBOX = "busybox"

# A static program (busybox has no keyctl applet) that makes the three keyring calls and
# prints what each answered: "ok" or the errno's name.
KEYS_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    printf("%s=%s\n", name, rc < 0 ? strerrorname_np(errno) : "ok");
}

int main(void) {
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, creating it */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 1));
    report("add_key", syscall(SYS_add_key, "user", "asyncdock-test", "x", 1, -3));
    report("request_key", syscall(SYS_request_key, "user", "asyncdock-test", NULL, 0));
    return 0;
}
"""


@pytest.fixture(scope="module")
def keys_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the keyring probe (make setup installs it)")
    d = tmp_path_factory.mktemp("keys")
    (d / "keys.c").write_text(KEYS_C)
    subprocess.run([gcc, "-static", "-O2", "-o", str(d / "keys"), str(d / "keys.c")],
                   check=True, capture_output=True, timeout=120)
    return d / "keys"


def run(d: Daemon, *args: str, unconfined: bool = False) -> str:
    opt = ["--security-opt", "seccomp=unconfined"] if unconfined else []
    p = d.docker("run", "--rm", *opt, *args, check=False)
    return p.stdout + p.stderr


def test_docker_info_names_the_builtin_profile(d: Daemon) -> None:
    info = json.loads(d.docker("info", "--format", "{{json .SecurityOptions}}").stdout)
    assert "name=seccomp,profile=builtin" in info


def test_user_namespace_denied_by_default_allowed_unconfined(d: Daemon) -> None:
    script = "unshare -U true && echo created"
    out = run(d, BUSYBOX, "sh", "-c", script)
    assert "Operation not permitted" in out and "created" not in out, out
    # This host lets unprivileged users create user namespaces (user.max_user_namespaces > 0),
    # so without the filter the call goes through, as it does under Docker.
    assert Path("/proc/sys/user/max_user_namespaces").read_text().strip() != "0"
    assert run(d, BUSYBOX, "sh", "-c", script, unconfined=True).strip() == "created"


def test_mount_in_a_user_namespace_denied_by_default_allowed_unconfined(d: Daemon) -> None:
    """The first step of CVE-2022-0492: root in a new user and mount namespace mounts what it
    likes (there, a cgroup v1 hierarchy; here a tmpfs on /tmp: the test image has no /mnt)."""
    script = "unshare -Urm sh -c 'mount -t tmpfs t /tmp && grep -c \" /tmp tmpfs \" /proc/mounts'"
    out = run(d, BUSYBOX, "sh", "-c", script)
    assert "Operation not permitted" in out, out
    assert run(d, BUSYBOX, "sh", "-c", script, unconfined=True).strip() == "1"


def test_keyring_calls_denied_by_default_allowed_unconfined(d: Daemon, keys_binary: Path) -> None:
    # Started through sh: the engine's pre-start check of the command looks in the image's
    # rootfs only, not in bind mounts (a separate bug).
    mount = ["-v", f"{keys_binary.parent}:/probe:ro"]
    out = run(d, *mount, BUSYBOX, "sh", "-c", "/probe/keys")
    assert out.split() == ["keyctl=EPERM", "add_key=EPERM", "request_key=EPERM"], out
    # Unconfined, the kernel answers: a session keyring, a key added to it and found again.
    out = run(d, *mount, BUSYBOX, "sh", "-c", "/probe/keys", unconfined=True)
    assert out.split() == ["keyctl=ok", "add_key=ok", "request_key=ok"], out


def test_namespaces_allowed_with_cap_sys_admin(d: Daemon) -> None:
    """As in Docker: CAP_SYS_ADMIN unlocks unshare and mount in the default profile."""
    out = run(d, "--cap-add", "SYS_ADMIN", BUSYBOX, "sh", "-c",
              "unshare -m sh -c 'mount -t tmpfs t /tmp && echo mounted'")
    assert out.strip() == "mounted", out


def test_a_profile_the_user_names_is_used(d: Daemon, keys_binary: Path, tmp_path: Path) -> None:
    """`seccomp=<file>` (the CLI sends the file's JSON) replaces the default: here the builtin
    rules plus keyctl alone, the way a user would name containers-common's profile."""
    from asyncdock.containers.seccomp import BUILTIN_RULES

    profile = tmp_path / "keyctl.json"
    profile.write_text(json.dumps({**BUILTIN_RULES, "syscalls": [
        *BUILTIN_RULES["syscalls"], {"names": ["keyctl"], "action": "SCMP_ACT_ALLOW"}]}))
    out = d.docker("run", "--rm", "--security-opt", f"seccomp={profile}",
                   "-v", f"{keys_binary.parent}:/probe:ro", BUSYBOX, "sh", "-c",
                   "/probe/keys").stdout
    assert out.split() == ["keyctl=ok", "add_key=EPERM", "request_key=EPERM"], out
