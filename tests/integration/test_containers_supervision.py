"""Resources in the container's cgroup, OOM kills, restart policies and health checks run by the
engine, through the real docker CLI against the shared daemon."""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.runtime.cgroups import cgroup_dirs, cgroup_mode
from tests.support.daemon import Daemon
from tests.support.process import wait_until

BUSYBOX = "busybox"


@pytest.fixture
def tag(d: Daemon) -> Iterator[str]:
    t = "s" + uuid.uuid4().hex[:10]
    yield t
    ids = d.docker("ps", "-a", "-q", "--filter", f"label=asyncdock.test={t}").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids, check=False)


def insp(d: Daemon, name: str, fmt: str) -> str:
    return d.docker("inspect", "--format", fmt, name).stdout.strip()


def events(d: Daemon, since: float, until: float, *filters: str) -> list[dict]:
    args = ["events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(x) for x in d.docker(*args, timeout=60).stdout.splitlines() if x.strip()]


def _v1_dir(cid: str, controller: str) -> Path:
    for p in cgroup_dirs(f"/asyncdock/{cid}"):
        if controller in p.parent.parent.name.split(","):
            return p
    raise AssertionError(f"no {controller} cgroup for {cid}")


@pytest.mark.skipif(cgroup_mode() == "v2", reason="checks cgroup v1 files")
def test_resources_land_in_cgroup(d: Daemon, tag: str) -> None:
    cid = d.docker("run", "-d", "--label", f"asyncdock.test={tag}", "--memory", "32m", "--cpus", "0.5",
                   "--cpu-shares", "512", "--cpuset-cpus", "0", "--pids-limit", "50", BUSYBOX,
                   "sleep", "600").stdout.strip()
    assert int((_v1_dir(cid, "memory") / "memory.limit_in_bytes").read_text()) == 32 << 20
    memsw = _v1_dir(cid, "memory") / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        assert int(memsw.read_text()) == 64 << 20  # Docker's default swap: 2x memory
    assert int((_v1_dir(cid, "cpu") / "cpu.cfs_quota_us").read_text()) == 50000
    assert int((_v1_dir(cid, "cpu") / "cpu.cfs_period_us").read_text()) == 100000
    assert int((_v1_dir(cid, "cpu") / "cpu.shares").read_text()) == 512
    assert (_v1_dir(cid, "cpuset") / "cpuset.cpus").read_text().strip() == "0"
    assert (_v1_dir(cid, "pids") / "pids.max").read_text().strip() == "50"
    hc = json.loads(d.docker("inspect", cid).stdout)[0]["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["CpuShares"], hc["CpusetCpus"], hc["PidsLimit"]) == \
        (32 << 20, 64 << 20, 500_000_000, 512, "0", 50)
    # update a running container's limits
    d.docker("update", "--memory", "40m", "--memory-swap", "80m", "--cpu-shares", "256", "--pids-limit", "60", cid)
    assert int((_v1_dir(cid, "memory") / "memory.limit_in_bytes").read_text()) == 40 << 20
    assert int((_v1_dir(cid, "cpu") / "cpu.shares").read_text()) == 256
    assert (_v1_dir(cid, "pids") / "pids.max").read_text().strip() == "60"
    dirs = [p for p in cgroup_dirs(f"/asyncdock/{cid}") if p.is_dir()]
    assert dirs
    d.docker("rm", "-f", cid)
    # removed with the cleanup after the exit, in the background of the removal
    wait_until(lambda: [p for p in dirs if p.exists()] == [], timeout=30, what="the cgroups to go")


def test_ulimit_inside(d: Daemon, tag: str) -> None:
    r = d.docker("run", "--rm", "--ulimit", "nofile=1024:2048", BUSYBOX, "sh", "-c", "ulimit -n; ulimit -Hn")
    assert r.stdout.split() == ["1024", "2048"]
    r = d.docker("run", "--rm", "--cpus", "9", BUSYBOX, "true", check=False)
    assert r.returncode == 125 and "Range of CPUs is from 0.01 to" in r.stderr


def test_oom_kill_reported(d: Daemon, tag: str) -> None:
    name = f"{tag}-oom"
    since = time.time()
    r = d.docker("run", "--name", name, "--label", f"asyncdock.test={tag}", "-m", "8m", "--memory-swap", "8m",
                 BUSYBOX, "sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done", check=False, timeout=60)
    assert r.returncode == 137
    assert insp(d, name, "{{.State.OOMKilled}} {{.State.ExitCode}}") == "true 137"
    acts = [e["Action"] for e in events(d, since, time.time() + 0.01, f"container={name}")]
    assert "oom" in acts and acts.index("oom") < acts.index("die")


def test_restart_on_failure_backoff_and_count(d: Daemon, tag: str) -> None:
    name = f"{tag}-of"
    since = time.time()
    d.docker("run", "-d", "--name", name, "--label", f"asyncdock.test={tag}", "--restart", "on-failure:2",
             BUSYBOX, "sh", "-c", "exit 3")
    wait_until(lambda: insp(d, name, "{{.RestartCount}} {{.State.Status}}") == "2 exited", timeout=20,
               what="two restarts then exited")
    assert insp(d, name, "{{.State.ExitCode}} {{.State.Restarting}}") == "3 false"
    acts = [e["Action"] for e in events(d, since, time.time() + 0.01, f"container={name}")
            if e["Action"] in ("start", "die", "restart")]
    assert acts == ["start", "die", "start", "restart", "die", "start", "restart", "die"], acts
    # a user start resets the count (Docker's ResetRestartManager)
    d.docker("start", name)
    wait_until(lambda: insp(d, name, "{{.RestartCount}} {{.State.Status}}") == "2 exited", timeout=20,
               what="two more restarts")


def test_restart_always_stopped_manually_stays_stopped(d: Daemon, tag: str) -> None:
    name = f"{tag}-al"
    d.docker("run", "-d", "--name", name, "--label", f"asyncdock.test={tag}", "--restart", "always",
             BUSYBOX, "sh", "-c", "sleep 0.2; exit 1")
    wait_until(lambda: int(insp(d, name, "{{.RestartCount}}")) >= 2, timeout=20, what="restarts")
    assert d.docker("stop", "-t", "1", name).stdout.strip() == name
    stopped = time.time()
    assert insp(d, name, "{{.State.Status}} {{.State.Restarting}}") == "exited false"
    # the back-off so far is < 1 s: no start may follow the stop within 1.5 s (the events
    # stream ends at --until)
    later = events(d, stopped, stopped + 1.5, f"container={name}", "event=start")
    assert later == []
    assert insp(d, name, "{{.State.Status}}") == "exited"


def test_healthcheck_flags_and_ps_status(d: Daemon, tag: str) -> None:
    name = f"{tag}-h"
    since = time.time()
    d.docker("run", "-d", "--name", name, "--label", f"asyncdock.test={tag}", "--health-cmd", "cat /tmp/ok",
             "--health-interval", "200ms", "--health-retries", "2", "--health-timeout", "2s",
             "--health-start-period", "0s", BUSYBOX, "sh", "-c",
             "trap 'echo fine > /tmp/ok' HUP; while true; do sleep 0.1; done")
    assert "(health: starting)" in d.docker("ps", "--filter", f"name={name}").stdout
    wait_until(lambda: insp(d, name, "{{.State.Health.Status}}") == "unhealthy", timeout=20, what="unhealthy")
    h = json.loads(insp(d, name, "{{json .State.Health}}"))
    assert h["FailingStreak"] >= 2 and 1 <= len(h["Log"]) <= 5
    assert h["Log"][-1]["ExitCode"] == 1 and "No such file" in h["Log"][-1]["Output"]
    assert "(unhealthy)" in d.docker("ps", "--filter", f"name={name}").stdout
    assert d.docker("ps", "-q", "--filter", f"name={name}", "--filter", "health=unhealthy").stdout.strip()
    # make it pass: the container writes the file on SIGHUP
    d.docker("kill", "-s", "HUP", name)
    wait_until(lambda: insp(d, name, "{{.State.Health.Status}}") == "healthy", timeout=20, what="healthy")
    h = json.loads(insp(d, name, "{{json .State.Health}}"))
    assert h["FailingStreak"] == 0 and h["Log"][-1]["Output"] == "fine\n"
    assert "(healthy)" in d.docker("ps", "--filter", f"name={name}").stdout
    acts = [e["Action"] for e in events(d, since, time.time() + 0.01, f"container={name}")
            if e["Action"].startswith("health_status")]
    assert acts[:2] == ["health_status: unhealthy", "health_status: healthy"], acts


def test_healthcheck_timeout(d: Daemon, tag: str) -> None:
    name = f"{tag}-ht"
    d.docker("run", "-d", "--name", name, "--label", f"asyncdock.test={tag}", "--health-cmd", "sleep 5",
             "--health-interval", "100ms", "--health-timeout", "300ms", "--health-retries", "1",
             BUSYBOX, "sleep", "600")
    wait_until(lambda: insp(d, name, "{{.State.Health.Status}}") == "unhealthy", timeout=20, what="unhealthy")
    h = json.loads(insp(d, name, "{{json .State.Health}}"))
    assert h["Log"][-1]["ExitCode"] == -1
    assert h["Log"][-1]["Output"] == "Health check exceeded timeout (300ms)"


def test_image_healthcheck_and_stop_signal(d: Daemon, tag: str) -> None:
    d.docker("pull", "-q", "configured")
    name = f"{tag}-cfg"
    d.docker("run", "-d", "--name", name, "--label", f"asyncdock.test={tag}", "configured")
    wait_until(lambda: insp(d, name, "{{.State.Health.Status}}") == "healthy", timeout=30, what="healthy")
    cfg = json.loads(d.docker("inspect", name).stdout)[0]["Config"]
    assert cfg["Healthcheck"]["Test"][0] == "CMD-SHELL" and cfg["StopSignal"] == "SIGINT"
    d.docker("stop", name)
    assert "got SIGINT" in d.docker("logs", name).stdout
    assert re.match(r"Exited \(0\)", d.docker("ps", "-a", "--filter", f"name={name}",
                                               "--format", "{{.Status}}").stdout)
    # HEALTHCHECK NONE disables the image's check
    n2 = f"{tag}-none"
    d.docker("run", "-d", "--name", n2, "--label", f"asyncdock.test={tag}", "--no-healthcheck", "configured")
    assert insp(d, n2, "{{.State.Health}}") == "<nil>"


def test_rm_of_restarting_container_refused_without_force(d: Daemon, tag: str) -> None:
    name = f"{tag}-rs"
    since = time.time()
    cid = d.docker("run", "-d", "--name", name, "--restart", "always", BUSYBOX, "sh", "-c", "exit 1").stdout.strip()
    # The back-off doubles from 100 ms: after the sixth exit the next start waits 3.2 s, and no
    # start is in flight, so the container is certainly in its restarting window.
    wait_until(lambda: len(events(d, since, time.time(), f"container={name}", "event=die")) >= 6,
               timeout=30, what="six exits")
    r = d.docker("rm", name, check=False)
    assert r.returncode != 0
    assert (f"You cannot remove a restarting container {cid}. Stop the container before attempting "
            f"removal or force remove") in r.stderr
    d.docker("rm", "-f", name)
    assert name not in d.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
