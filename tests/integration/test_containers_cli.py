"""The container lifecycle through the real docker CLI, compared with what Docker prints
(../shared/reference/docker-api-transcripts: run.md, ps.md, lifecycle.md, rm-rename.md, rmi.md,
prune.md, create-start.md, logs.md, inspect.md). One shared daemon; every test labels and names
its containers uniquely and removes them."""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.daemon import Daemon
from tests.support.process import wait_until


BUSYBOX = "busybox"


@pytest.fixture
def tag() -> Iterator[str]:
    yield "t" + uuid.uuid4().hex[:10]


def _cleanup(d: Daemon, label: str) -> None:
    ids = d.docker("ps", "-a", "-q", "--filter", f"label={label}").stdout.split()
    if ids:
        d.docker("rm", "-f", *ids, check=False)


@pytest.fixture
def lab(d: Daemon, tag: str) -> Iterator[str]:
    label = f"asyncdock.test={tag}"
    yield label
    _cleanup(d, label)


def events(d: Daemon, since: float, *filters: str) -> list[dict]:
    until = f"{time.time() + 0.01:.3f}"
    args = ["events", "--since", f"{since:.3f}", "--until", until, "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    out = d.docker(*args, timeout=30).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def state(d: Daemon, name: str, fmt: str = "{{.State.Status}}") -> str:
    return d.docker("inspect", "--format", fmt, name).stdout.strip()


def test_run_echo_ls_and_detached_id(d: Daemon, lab: str, tag: str) -> None:
    r = d.docker("run", "--label", lab, BUSYBOX, "echo", "hi")
    assert r.stdout == "hi\n"
    r = d.docker("run", "--label", lab, BUSYBOX, "ls", "/")
    assert {"bin", "etc", "proc", "sys", "dev"} <= set(r.stdout.split())
    r = d.docker("run", "-d", "--label", lab, "--name", f"{tag}-web", BUSYBOX, "sleep", "600")
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert state(d, f"{tag}-web", "{{.Id}}") == cid
    # inspect --format as in the issue
    st, pid = state(d, f"{tag}-web", "{{.State.Status}} {{.State.Pid}}").split()
    assert st == "running" and int(pid) > 1
    # a missing executable: 127 and Docker's message
    r = d.docker("run", "--label", lab, BUSYBOX, "nosuchbinary", check=False)
    assert r.returncode == 127
    assert "executable file not found in $PATH" in r.stderr


def test_ps_variants_and_filters(d: Daemon, lab: str, tag: str) -> None:
    run_id = d.docker("run", "-d", "--label", lab, "--label", "role=srv", "--name", f"{tag}-run",
                      BUSYBOX, "sleep", "600").stdout.strip()
    ex_id = d.docker("create", "--label", lab, "--name", f"{tag}-ex", BUSYBOX, "sh", "-c", "exit 3").stdout.strip()
    d.docker("start", f"{tag}-ex")
    assert d.docker("wait", f"{tag}-ex").stdout.strip() == "3"
    cr_id = d.docker("create", "--label", lab, "--name", f"{tag}-cr", BUSYBOX, "true").stdout.strip()

    ps = d.docker("ps", "--filter", f"label={lab}").stdout.splitlines()
    assert ps[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert len(ps) == 2 and ps[1].startswith(run_id[:12]) and ps[1].endswith(f"{tag}-run")
    assert '"sleep 600"' in ps[1] and re.search(r"Up (Less than a second|\d+ seconds?)", ps[1])

    all_ = d.docker("ps", "-a", "--filter", f"label={lab}").stdout.splitlines()[1:]
    # newest first
    assert [line[:12] for line in all_] == [cr_id[:12], ex_id[:12], run_id[:12]]
    assert re.search(r"Exited \(3\) (Less than a second|\d+ seconds?) ago", all_[1])
    assert "Created" in all_[0]

    q = d.docker("ps", "-a", "-q", "--filter", f"label={lab}").stdout.split()
    assert q == [cr_id[:12], ex_id[:12], run_id[:12]]

    t = d.docker("ps", "--filter", f"label={lab}", "--format", "table {{.Names}}\t{{.Image}}").stdout.splitlines()
    assert t[0].split() == ["NAMES", "IMAGE"] and t[1].split() == [f"{tag}-run", BUSYBOX]

    def ids(*flt: str) -> list[str]:
        args = ["ps", "-a", "-q", "--filter", f"label={lab}"]
        for f in flt:
            args += ["--filter", f]
        return d.docker(*args).stdout.split()

    assert ids("status=exited") == [ex_id[:12]]
    assert ids("status=created") == [cr_id[:12]]
    assert ids("status=running") == [run_id[:12]]
    assert ids(f"name={tag}-ex") == [ex_id[:12]]
    assert ids("label=role=srv") == [run_id[:12]]
    assert ids("exited=3") == [ex_id[:12]]
    assert ids("exited=0") == []
    assert ids(f"id={ex_id[:8]}") == [ex_id[:12]]
    assert ids(f"ancestor={BUSYBOX}") == [cr_id[:12], ex_id[:12], run_id[:12]]
    assert ids(f"before={ex_id[:12]}") == [run_id[:12]]
    assert ids(f"since={ex_id[:12]}") == [cr_id[:12]]
    r = d.docker("ps", "--filter", "status=bogus", check=False)
    assert r.returncode == 1 and "Invalid filter 'status=bogus'" in r.stderr


def test_create_start_attach(d: Daemon, lab: str, tag: str) -> None:
    cid = d.docker("create", "--label", lab, "--name", f"{tag}-c", BUSYBOX, "echo", "created").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert state(d, cid) == "created"
    r = d.docker("start", "-a", cid[:12])
    assert r.stdout == "created\n"
    assert state(d, cid, "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    r = d.docker("start", f"{tag}-c")
    assert r.stdout.strip() == f"{tag}-c"
    d.docker("wait", f"{tag}-c")
    assert d.docker("logs", f"{tag}-c").stdout == "created\ncreated\n"
    # start of a running container: 304, printed as success
    d.docker("run", "-d", "--label", lab, "--name", f"{tag}-r", BUSYBOX, "sleep", "600")
    assert d.docker("start", f"{tag}-r").stdout.strip() == f"{tag}-r"
    # name conflict, Docker's text
    r = d.docker("create", "--label", lab, "--name", f"{tag}-r", BUSYBOX, check=False)
    assert r.returncode == 1
    full = state(d, f"{tag}-r", "{{.Id}}")
    assert (f'Conflict. The container name "/{tag}-r" is already in use by container "{full}". You have to '
            "remove (or rename) that container to be able to reuse that name.") in r.stderr


def test_stop_grace_timing(d: Daemon, lab: str, tag: str) -> None:
    trap = "trap 'echo got TERM; exit 7' TERM; while true; do sleep 0.1; done"
    ignore = "trap '' TERM; while true; do sleep 0.1; done"
    d.docker("run", "-d", "--label", lab, "--name", f"{tag}-trap", BUSYBOX, "sh", "-c", trap)
    d.docker("run", "-d", "--label", lab, "--name", f"{tag}-ign", BUSYBOX, "sh", "-c", ignore)
    # let the shells install their traps
    wait_until(lambda: state(d, f"{tag}-trap") == "running", timeout=10, what="running")
    time.sleep(0.3)  # the trap builtin must have run; there is no observable signal for it
    t0 = time.monotonic()
    assert d.docker("stop", "-t", "2", f"{tag}-trap").stdout.strip() == f"{tag}-trap"
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    d.docker("stop", "-t", "1", f"{tag}-ign")
    slow = time.monotonic() - t0
    assert fast < 1.5, fast
    assert 1.0 <= slow < 3.0, slow
    assert state(d, f"{tag}-trap", "{{.State.ExitCode}}") == "7"
    assert state(d, f"{tag}-ign", "{{.State.ExitCode}}") == "137"
    assert "got TERM" in d.docker("logs", f"{tag}-trap").stdout
    # stop of a stopped container: 304, success
    assert d.docker("stop", f"{tag}-trap").returncode == 0


def test_kill_signals_and_events(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-k"
    since = time.time()
    d.docker("run", "-d", "--label", lab, "--name", name, BUSYBOX, "sh", "-c",
             "trap 'echo hup' HUP; echo ready; while true; do sleep 0.1; done")
    wait_until(lambda: "ready" in d.docker("logs", name).stdout, timeout=10, what="ready")
    assert d.docker("kill", "-s", "HUP", name).stdout.strip() == name
    wait_until(lambda: "hup" in d.docker("logs", name).stdout.replace("ready", ""), timeout=10, what="HUP trap")
    assert state(d, name) == "running"
    assert d.docker("kill", name).stdout.strip() == name
    assert state(d, name, "{{.State.Status}} {{.State.ExitCode}}") == "exited 137"
    r = d.docker("kill", name, check=False)
    full = state(d, name, "{{.Id}}")
    assert f"Cannot kill container: {name}: Container {full} is not running" in r.stderr
    ev = events(d, since, f"container={name}")
    acts = [(e["Action"], e["Actor"]["Attributes"].get("signal"), e["Actor"]["Attributes"].get("exitCode"))
            for e in ev]
    assert acts == [("create", None, None), ("attach", None, None), ("start", None, None), ("kill", "1", None),
                    ("kill", "9", None), ("die", None, "137")] or \
        acts == [("create", None, None), ("start", None, None), ("kill", "1", None),
                 ("kill", "9", None), ("die", None, "137")], acts
    assert all(e["Actor"]["Attributes"]["name"] == name and e["Actor"]["Attributes"]["image"] == BUSYBOX
               and e["Actor"]["Attributes"]["asyncdock.test"] == lab.split("=")[1] for e in ev)


def test_rm_rename_and_bulk_rm(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-rm"
    cid = d.docker("run", "-d", "--label", lab, "--name", name, BUSYBOX, "sleep", "600").stdout.strip()
    r = d.docker("rm", name, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"Error response from daemon: You cannot remove a running container {cid}. "
                                "Stop the container before attempting removal or force remove")
    # rename, then the old name is gone (404) and the new one answers
    since = time.time()
    assert d.docker("rename", name, f"{tag}-new").stdout == ""
    r = d.docker("rename", name, f"{tag}-new2", check=False)
    assert "No such container: " + name in r.stderr
    assert "Error: failed to rename container named " + name in r.stderr
    assert state(d, f"{tag}-new", "{{.Name}}") == f"/{tag}-new"
    ev = events(d, since, f"container={cid}", "event=rename")
    assert ev[0]["Actor"]["Attributes"]["oldName"] == f"/{name}"
    assert ev[0]["Actor"]["Attributes"]["name"] == f"{tag}-new"
    assert d.docker("rm", "-f", f"{tag}-new").stdout.strip() == f"{tag}-new"
    assert d.docker("ps", "-a", "-q", "--filter", f"id={cid}").stdout.strip() == ""
    # docker rm $(docker ps -a -q): parallel deletes, running ones refused
    stopped = [d.docker("create", "--label", lab, BUSYBOX, "true").stdout.strip() for _ in range(6)]
    running = [d.docker("run", "-d", "--label", lab, BUSYBOX, "sleep", "600").stdout.strip() for _ in range(2)]
    allq = d.docker("ps", "-a", "-q", "--filter", f"label={lab}").stdout.split()
    r = d.docker("rm", *allq, check=False)
    assert r.returncode == 1
    assert sorted(r.stdout.split()) == sorted(s[:12] for s in stopped)
    assert sorted(r.stderr.strip().splitlines()) == sorted(
        f"Error response from daemon: You cannot remove a running container {c}. Stop the container before "
        "attempting removal or force remove" for c in running)


def test_pause_unpause_restart_wait(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-p"
    cid = d.docker("run", "-d", "--label", lab, "--name", name, BUSYBOX, "sleep", "600").stdout.strip()
    assert d.docker("pause", name).stdout.strip() == name
    assert state(d, name, "{{.State.Status}} {{.State.Paused}}") == "paused true"
    assert re.search(r"Up .* \(Paused\)", d.docker("ps", "--filter", f"name={name}").stdout)
    r = d.docker("pause", name, check=False)
    assert r.stderr.strip() == f"Error response from daemon: Container {cid} is already paused"
    r = d.docker("rm", name, check=False)
    assert "You cannot remove a paused container" in r.stderr
    assert d.docker("unpause", name).stdout.strip() == name
    r = d.docker("unpause", name, check=False)
    assert r.stderr.strip() == f"Error response from daemon: Container {cid} is not paused"
    pid1 = state(d, name, "{{.State.Pid}}")
    since = time.time()
    assert d.docker("restart", "-t", "1", name).stdout.strip() == name
    assert state(d, name) == "running" and state(d, name, "{{.State.Pid}}") != pid1
    acts = [e["Action"] for e in events(d, since, f"container={cid}")]
    assert acts == ["kill", "kill", "die", "stop", "start", "restart"], acts
    # wait: before and after the exit
    w = f"{tag}-w"
    d.docker("run", "-d", "--label", lab, "--name", w, BUSYBOX, "sh", "-c", "sleep 0.5; exit 5")
    assert d.docker("wait", w).stdout.strip() == "5"
    assert d.docker("wait", w).stdout.strip() == "5"


def test_logs_options(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-l"
    d.docker("run", "--label", lab, "--name", name, BUSYBOX, "sh", "-c", "echo out1; echo err1 >&2; echo out2; echo out3")
    r = d.docker("logs", name)
    assert r.stdout == "out1\nout2\nout3\n" and r.stderr == "err1\n"
    r = d.docker("logs", "--tail", "2", "-t", name)
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) == 2
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", line) for line in lines)
    assert r.stdout.splitlines()[-1].endswith(" out3")
    assert d.docker("logs", "--since", "2999-01-01T00:00:00Z", name).stdout == ""
    f = f"{tag}-f"
    d.docker("run", "-d", "--label", lab, "--name", f, BUSYBOX, "sh", "-c",
             "echo a; sleep 0.3; echo b; sleep 0.3; echo c")
    r = d.docker("logs", "-f", f, timeout=30)
    assert r.stdout == "a\nb\nc\n"


def test_inspect_fields(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-i"
    d.docker("run", "-d", "--label", lab, "--name", name, "-e", "FOO=bar", BUSYBOX, "sleep", "600")
    info = json.loads(d.docker("inspect", name).stdout)[0]
    for key in ("Id", "Created", "Path", "Args", "State", "Image", "ResolvConfPath", "HostnamePath", "HostsPath",
                "LogPath", "Name", "RestartCount", "Driver", "Platform", "MountLabel", "ProcessLabel",
                "AppArmorProfile", "ExecIDs", "HostConfig", "GraphDriver", "Mounts", "Config", "NetworkSettings"):
        assert key in info, key
    assert info["Name"] == f"/{name}" and info["Path"] == "sleep" and info["Args"] == ["600"]
    st = info["State"]
    assert st["Status"] == "running" and st["Running"] and not st["Paused"] and st["OOMKilled"] is False
    assert st["Pid"] > 0 and st["ExitCode"] == 0 and st["FinishedAt"] == "0001-01-01T00:00:00Z"
    assert "FOO=bar" in info["Config"]["Env"] and info["Config"]["Image"] == BUSYBOX
    assert info["Config"]["Labels"]["asyncdock.test"] == lab.split("=")[1]
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert info["NetworkSettings"]["Ports"] == {} and isinstance(info["NetworkSettings"]["Networks"], dict)
    assert info["Mounts"] == [] and info["ExecIDs"] is None
    assert info["Image"].startswith("sha256:")
    size = json.loads(d.docker("inspect", "--size", name).stdout)[0]
    assert size["SizeRw"] >= 0 and size["SizeRootFs"] >= size["SizeRw"]


def test_container_prune_filters(d: Daemon, lab: str, tag: str) -> None:
    keep = d.docker("create", "--label", lab, "--label", "keep=1", BUSYBOX, "true").stdout.strip()
    drop = d.docker("create", "--label", lab, "--label", "drop=1", BUSYBOX, "true").stdout.strip()
    run = d.docker("run", "-d", "--label", lab, "--label", "drop=1", BUSYBOX, "sleep", "600").stdout.strip()
    r = d.docker("container", "prune", "-f", "--filter", "label=drop=1")
    assert r.stdout.splitlines()[:2] == ["Deleted Containers:", drop]
    assert "Total reclaimed space:" in r.stdout
    # until in the past: nothing
    r = d.docker("container", "prune", "-f", "--filter", "until=2000-01-01T00:00:00Z", "--filter", f"label={lab}")
    assert r.stdout.strip() == "Total reclaimed space: 0B"
    left = d.docker("ps", "-a", "-q", "--no-trunc", "--filter", f"label={lab}").stdout.split()
    assert sorted(left) == sorted([keep, run])
    # API: nothing deleted is null
    status, body = _api(d, "POST", "/v1.41/containers/prune?filters=" + _q({"label": ["nosuch=1"]}))
    assert status == 200 and body == {"ContainersDeleted": None, "SpaceReclaimed": 0}


def _q(obj: object) -> str:
    import urllib.parse

    return urllib.parse.quote(json.dumps(obj))


def _api(d: Daemon, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    r = d.request(method, path, body)
    status, data = r[0], r[-1]
    try:
        return status, json.loads(data) if data else None
    except (TypeError, ValueError):
        return status, data


def test_update_and_system_df(d: Daemon, lab: str, tag: str) -> None:
    name = f"{tag}-u"
    cid = d.docker("run", "-d", "--label", lab, "--name", name, "--memory", "32m", BUSYBOX, "sleep", "600").stdout.strip()
    # Docker's default swap: twice the memory
    assert state(d, name, "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}") == f"{32 << 20} {64 << 20}"
    assert d.docker("update", "--memory", "48m", "--restart", "on-failure:3", name).stdout.strip() == name
    assert state(d, name, "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} "
                          "{{.HostConfig.RestartPolicy.MaximumRetryCount}}") == f"{48 << 20} on-failure 3"
    from asyncdock.runtime.cgroups import cgroup_dirs

    mem = [p for p in cgroup_dirs(f"/asyncdock/{cid}") if p.parent.parent.name == "memory"]
    assert mem and int((mem[0] / "memory.limit_in_bytes").read_text()) == 48 << 20
    r = d.docker("update", "--memory", "512m", name, check=False)
    assert "Memory limit should be smaller than already set memoryswap limit" in r.stderr
    df = json.loads(d.request("GET", "/v1.41/system/df")[-1])
    assert set(df) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
    # other tests on the shared daemon may have left anonymous volumes: df lists exactly those
    volumes = d.docker("volume", "ls", "-q").stdout.split()
    assert sorted(v["Name"] for v in df["Volumes"]) == sorted(volumes) and df["BuildCache"] == []
    me = [c for c in df["Containers"] if c["Id"] == cid]
    assert me and "SizeRw" in me[0] and "SizeRootFs" in me[0]
    assert any(i["Containers"] >= 1 for i in df["Images"])
    out = d.docker("system", "df").stdout.splitlines()
    assert out[0].split()[:2] == ["TYPE", "TOTAL"] and out[1].startswith("Images")
    assert out[2].startswith("Containers") and out[3].startswith("Local Volumes")


def test_rmi_in_use_and_system_prune(daemon: Daemon) -> None:
    d = daemon
    r = d.docker("run", "busybox", "echo", "hi")
    assert r.stdout == "hi\n" and "Unable to find image 'busybox:latest' locally" in r.stderr
    cid = d.docker("ps", "-a", "-q", "--no-trunc").stdout.split()[0]
    image_id = d.docker("image", "inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    short = image_id.split(":")[1][:12]
    r = d.docker("rmi", "busybox", check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == (f'Error response from daemon: conflict: unable to remove repository reference '
                                f'"busybox" (must force) - container {cid[:12]} is using its referenced image {short}')
    run = d.docker("run", "-d", "busybox", "sleep", "600").stdout.strip()
    r = d.docker("rmi", "-f", short, check=False)
    assert (f"conflict: unable to delete {short} (cannot be forced) - image is being used by running "
            f"container {run[:12]}") in r.stderr
    d.docker("rm", "-f", run)
    # system prune: the stopped container, then with -a the image
    r = d.docker("system", "prune", "-f")
    assert r.stdout.splitlines()[:2] == ["Deleted Containers:", cid]
    assert r.stdout.rstrip().endswith("Total reclaimed space: 0B") or "Total reclaimed space:" in r.stdout
    r = d.docker("system", "prune", "-a", "-f")
    lines = r.stdout.splitlines()
    assert lines[0] == "Deleted Images:"
    assert "untagged: busybox:latest" in lines
    assert f"deleted: {image_id}" in lines
    assert d.docker("images", "-q").stdout.strip() == ""
    r = d.docker("system", "prune", "-f")
    assert r.stdout.strip() == "Total reclaimed space: 0B"


def test_masked_paths_applied_are_the_ones_inspect_shows(d: Daemon, lab: str, tag: str) -> None:
    """HostConfig.MaskedPaths/ReadonlyPaths are what the container gets: the defaults (one list,
    Docker's), an explicit list from the API, or none with systempaths=unconfined (the CLI sends
    empty lists then)."""
    masked = next(p for p in ("/proc/kcore", "/proc/timer_list") if os.path.exists(p))
    probe = f"wc -c < {masked}; wc -c < /proc/cpuinfo; touch /proc/sys/x 2>/dev/null; echo $?"
    name = f"{tag}-default"
    d.docker("run", "--name", name, "--label", lab, BUSYBOX, "sh", "-c", probe)
    out = d.docker("logs", name).stdout.split()
    assert out[0] == "0" and int(out[1]) > 0, out
    shown = json.loads(d.docker("inspect", "-f", "{{json .HostConfig.MaskedPaths}}", name).stdout)
    assert "/sys/devices/virtual/powercap" in shown and masked in shown  # Docker's default list

    status, body = d.request("POST", f"/containers/create?name={tag}-api", {
        "Image": BUSYBOX, "Cmd": ["sh", "-c", probe], "Labels": {lab.split("=")[0]: lab.split("=")[1]},
        "HostConfig": {"MaskedPaths": ["/proc/cpuinfo"], "ReadonlyPaths": []}})
    assert status == 201, body
    d.docker("start", "-a", f"{tag}-api")
    out = d.docker("logs", f"{tag}-api").stdout.split()
    assert int(out[0]) > 0 and out[1] == "0", out
    shown = json.loads(d.docker("inspect", "-f", "{{json .HostConfig.MaskedPaths}}", f"{tag}-api").stdout)
    assert shown == ["/proc/cpuinfo"]

    out = d.docker("run", "--rm", "--label", lab, "--security-opt", "systempaths=unconfined", BUSYBOX,
                   "sh", "-c", probe).stdout.split()
    assert int(out[0]) > 0 and int(out[1]) > 0, out
