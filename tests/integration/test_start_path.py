"""What the fast start and exit paths rely on, through the real docker CLI: the crun plugin's
reused seccomp filter, the runtime cleanup that runs after the exit is reported (and that the
next start waits for), and the volatile overlay of --rm containers."""
from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.process import wait_until

BUSYBOX = "busybox"


@pytest.fixture
def name(d: Daemon) -> Iterator[str]:
    n = "sp" + uuid.uuid4().hex[:10]
    yield n
    d.docker("rm", "-f", n, check=False)


def _bundle_spec(d: Daemon, cid: str) -> dict:
    return json.loads((d.exec_root / "bundles" / cid / "config.json").read_text())


def test_seccomp_filter_is_compiled_once_and_loaded_after(d: Daemon, name: str) -> None:
    """The second of two containers with the default profile gets the filter crun compiled for
    the first, as the annotation crun loads; both run confined (Seccomp: 2)."""
    if d.docker("info", "--format", "{{.DefaultRuntime}}").stdout.strip() != "crun":
        pytest.skip("the default runtime is not crun")
    first = d.docker("run", "-d", "--name", name, BUSYBOX, "sleep", "60").stdout.strip()
    second = d.docker("run", "-d", "--name", name + "b", BUSYBOX, "sleep", "60").stdout.strip()
    try:
        spec = _bundle_spec(d, second)
        bpf = base64.b64decode(spec["annotations"]["run.oci.seccomp_bpf_data"])
        assert spec["linux"]["seccomp"]["defaultAction"]  # the profile is still written out
        compiled = (d.exec_root / "runtime" / "crun" / first / "seccomp.bpf").read_bytes()
        assert bpf == compiled and len(bpf) % 8 == 0
        for cid in (first, second):
            status = d.docker("exec", cid, "grep", "^Seccomp:", "/proc/1/status").stdout
            assert status.split() == ["Seccomp:", "2"]
        unconfined = d.docker("run", "--rm", "--security-opt", "seccomp=unconfined", BUSYBOX,
                              "grep", "^Seccomp:", "/proc/1/status").stdout
        assert unconfined.split() == ["Seccomp:", "0"]
    finally:
        d.docker("rm", "-f", name + "b", check=False)


def test_restart_right_after_exit_waits_for_the_runtime_cleanup(d: Daemon, name: str) -> None:
    """The runtime forgets an exited container in the background; a start that follows the
    exit at once (raw API: no CLI start-up in between) must wait for that, else the runtime
    refuses a second container of the same id."""
    status, body = d.request("POST", f"/containers/create?name={name}",
                             {"Image": BUSYBOX, "Cmd": ["true"]})
    assert status == 201, body
    cid = json.loads(body)["Id"]
    for _ in range(5):
        status, body = d.request("POST", f"/containers/{cid}/start")
        assert status == 204, body
        status, body = d.request("POST", f"/containers/{cid}/wait")
        assert status == 200 and json.loads(body)["StatusCode"] == 0, body
    assert d.docker("inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}",
                    name).stdout.split() == ["0", "exited"]


def test_throwaway_rootfs_is_volatile_and_kept_one_is_not(d: Daemon, name: str) -> None:
    probe = "grep ' / / ' /proc/self/mountinfo | grep -c volatile || true"
    assert d.docker("run", "--rm", BUSYBOX, "sh", "-c", probe).stdout.strip() == "1"
    assert d.docker("run", "--name", name, BUSYBOX, "sh", "-c", probe).stdout.strip() == "0"
    # writes to a volatile root work like any other
    r = d.docker("run", "--rm", BUSYBOX, "sh", "-c", "echo data > /f && cat /f")
    assert r.stdout == "data\n"


def test_kill_and_delete_after_exit_spawn_no_runtime_process(daemon_factory: Any, tmp_path: Path) -> None:
    """A container with its own pid namespace is signalled through its init's pidfd, and after
    its exit crun's state is removed by the crun plugin: neither runs crun. A container in the
    host's pid namespace still gets `crun kill --all` (its other processes survive the init),
    and a container whose spec has a poststop hook still gets `crun delete` (crun runs the
    hook). Seen through a `crun` wrapper that logs each command before running the real one."""
    crun = shutil.which("crun")
    if crun is None:
        pytest.skip("needs crun")
    log = tmp_path / "commands"
    wrapper = tmp_path / "bin" / "crun"
    wrapper.parent.mkdir()
    # the first argument that is a crun command (after --root DIR, --log FILE, ...)
    wrapper.write_text("#!/bin/sh\n"
                       f"for a; do case $a in create|start|kill|delete|exec|state|pause|resume|update)"
                       f" echo \"$a $*\" >> {log}; break;; esac; done\n"
                       f"exec {crun} \"$@\"\n")
    wrapper.chmod(0o755)
    d = daemon_factory({"runtimes": {"logged": {"path": str(wrapper)}}, "default-runtime": "logged"})
    d.docker("pull", "-q", BUSYBOX)
    assert d.docker("info", "--format", "{{.DefaultRuntime}}").stdout.strip() == "logged"
    log.unlink(missing_ok=True)

    def commands() -> list[str]:
        return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []

    # pid 1 of a namespace only gets the signals it handles
    cid = d.docker("run", "-d", BUSYBOX, "sh", "-c",
                   "trap 'exit 7' USR1; echo ready; sleep 600 & wait").stdout.strip()
    wait_until(lambda: "ready" in d.docker("logs", cid).stdout, timeout=30, what="the trap")
    d.docker("kill", "-s", "USR1", cid)
    assert d.docker("wait", cid).stdout.strip() == "7"
    d.docker("rm", cid)
    assert commands() == ["create"]

    log.unlink()
    cid = d.docker("run", "-d", "--pid", "host", BUSYBOX, "sleep", "600").stdout.strip()
    d.docker("kill", cid)
    assert d.docker("wait", cid).stdout.strip() == "137"
    d.docker("rm", cid)
    assert "kill" in commands() and "delete" in commands()
