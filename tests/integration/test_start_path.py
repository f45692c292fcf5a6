"""What the fast start and exit paths rely on, through the real docker CLI: the crun plugin's
reused seccomp filter, the runtime cleanup that runs after the exit is reported (and that the
next start waits for), and the volatile overlay of --rm containers."""
from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon

BUSYBOX = "busybox"


@pytest.fixture
def d(shared_daemon: Daemon) -> Iterator[Daemon]:
    shared_daemon.docker("pull", "-q", BUSYBOX)
    yield shared_daemon


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
