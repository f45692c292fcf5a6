"""Two daemons on one machine, and a runtime pin removed behind the engine's back.

A second daemon must never take over what a first one uses: its data-root, its exec-root (where
the pinned runtime binary, the runtime's state and the bundles live) or its socket. Daemons with
roots of their own run side by side, and stopping one leaves the other working.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import TEST_TMP, Daemon, daemon_command
from tests.support.daemon import mounts_under
from tests.support.process import wait_until


def _second_daemon(host: str, data_root: Path, exec_root: Path) -> subprocess.CompletedProcess[str]:
    """Start a daemon that must refuse at once; should it start, it is stopped (and the test
    fails on its exit status)."""
    cmd = daemon_command() + ["daemon", "--host", host, "--data-root", str(data_root),
                              "--exec-root", str(exec_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        err = "(still running after 60s: stopped)\n" + err
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def scratch() -> Any:
    root = Path(tempfile.mkdtemp(prefix="adt2-", dir=TEST_TMP))
    yield root
    assert not mounts_under([root])
    shutil.rmtree(root, ignore_errors=True)


def test_second_daemon_on_the_same_exec_root_is_refused(daemon: Daemon, scratch: Path) -> None:
    daemon.docker("pull", "-q", "busybox")
    cid = daemon.docker("run", "-d", "busybox", "sleep", "300").stdout.strip()
    assert daemon.proc is not None
    res = _second_daemon(f"unix://{scratch / 'second.sock'}", scratch / "data", daemon.exec_root)
    assert res.returncode == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line == (f"asyncdock: another daemon (pid {daemon.proc.pid}, listening on {daemon.host}) is using "
                    f"exec-root {daemon.exec_root}; stop it or pass a different --exec-root")
    # the first one lost nothing: its running container, its runtime, its socket
    assert daemon.docker("inspect", "-f", "{{.State.Running}}", cid).stdout.strip() == "true"
    assert daemon.docker("run", "--rm", "busybox", "true").returncode == 0
    daemon.docker("rm", "-f", cid)


def test_second_daemon_on_the_same_data_root_names_the_first(daemon: Daemon, scratch: Path) -> None:
    assert daemon.proc is not None
    res = _second_daemon(f"unix://{scratch / 'second.sock'}", daemon.data_root, scratch / "exec")
    assert res.returncode == 1, res.stderr
    assert (f"another daemon (pid {daemon.proc.pid}, listening on {daemon.host}) is using data-root "
            f"{daemon.data_root}") in res.stderr
    assert daemon.ping()


def test_second_daemon_on_the_same_socket_is_refused(daemon: Daemon, scratch: Path) -> None:
    res = _second_daemon(daemon.host, scratch / "data", scratch / "exec")
    assert res.returncode == 1, res.stderr
    assert f"another daemon is listening on {daemon.host}" in res.stderr
    assert daemon.socket.exists() and daemon.ping()


def test_daemons_with_their_own_roots_run_side_by_side(daemon_factory: Any) -> None:
    a, b = daemon_factory(), daemon_factory()
    ids = {}
    for d in (a, b):
        d.docker("pull", "-q", "busybox")
        ids[d] = d.docker("run", "-d", "busybox", "sleep", "300").stdout.strip()
    for d in (a, b):
        assert d.docker("run", "--rm", "busybox", "true").returncode == 0
    b.docker("rm", "-f", ids[b])
    assert b.stop() == 0
    # b's stop took nothing of a's: its container, a new one, its pinned runtime
    assert a.docker("inspect", "-f", "{{.State.Running}}", ids[a]).stdout.strip() == "true"
    assert a.docker("run", "--rm", "busybox", "true").returncode == 0
    a.docker("rm", "-f", ids[a])


def _default_runtime(d: Daemon) -> str:
    return str(json.loads(d.docker("info", "--format", "{{json .}}").stdout)["DefaultRuntime"])


@pytest.mark.parametrize("how", ["unmounted", "removed"])
def test_a_pinned_runtime_gone_behind_the_engines_back_is_pinned_again(daemon: Daemon, how: str) -> None:
    daemon.docker("pull", "-q", "busybox")
    runtime = _default_runtime(daemon)
    pin = daemon.exec_root / "runtime" / f".{runtime}.exe"
    if str(pin) not in mounts_under([daemon.exec_root]):
        pytest.skip(f"the default runtime {runtime} runs unpinned on this host")
    assert daemon.docker("run", "--rm", "busybox", "true").returncode == 0
    # What a second daemon's stop did to the first's exec-root before exec-roots were locked.
    subprocess.run(["umount", "-l", str(pin)], check=True, timeout=30)
    if how == "removed":
        pin.unlink()
    res = daemon.docker("run", "--rm", "busybox", "echo", "still-works", check=False)
    assert res.returncode == 0 and res.stdout == "still-works\n", res.stderr
    assert str(pin) in mounts_under([daemon.exec_root])  # made again
    log = daemon.log_path.read_text()
    assert f"runtime {runtime}: its pinned binary {pin} was removed behind the engine's back; " \
           f"pinned it again" in log


def test_a_failed_start_is_logged_with_its_cause(d: Daemon) -> None:
    res = d.docker("run", "--name", "h12-nosuch", "busybox", "/no/such/binary", check=False)
    try:
        assert res.returncode == 127, res.stderr
        wait_until(lambda: "container " in d.log_path.read_text() and "(h12-nosuch): start failed: " in
                   d.log_path.read_text(), timeout=10, what="the failed start in the daemon log")
        line = next(ln for ln in d.log_path.read_text().splitlines() if "(h12-nosuch): start failed: " in ln)
        assert "/no/such/binary" in line and "level=WARNING" in line
    finally:
        d.docker("rm", "-f", "h12-nosuch", check=False)
