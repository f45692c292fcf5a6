"""Durable state, crashes and concurrency: a daemon killed with -9 while containers run, a
clean stop, one name asked for by two concurrent creates, 50 containers at once; the runc
parity subset; docker-py flows of docker-py.md."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


from asyncdock.runtime.cgroups import cgroup_dirs
from tests.support.daemon import Daemon
from tests.support.leaks import container_cgroups
from tests.support.process import wait_until

BUSYBOX = "busybox"


def _runtime_list(d: Daemon) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    base = Path(d.exec_root) / "runtime"
    for rt in ("crun", "runc"):
        root = base / rt
        if not root.is_dir():
            continue
        r = subprocess.run([rt, "--root", str(root), "list", "-q"], capture_output=True, text=True)
        out[rt] = r.stdout.split()
    return out


def _container_pids(d: Daemon, cids: list[str]) -> list[int]:
    """Processes still in any of these containers' cgroups."""
    pids: list[int] = []
    for cid in cids:
        for p in cgroup_dirs(f"/asyncdock/{cid}"):
            procs = p / "cgroup.procs"
            if procs.exists():
                pids += [int(x) for x in procs.read_text().split()]
    return pids


def _no_cgroups(cids: list[str]) -> list[Path]:
    return container_cgroups(cids)


def test_kill9_then_restart(daemon: Daemon) -> None:
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    a = d.docker("run", "-d", "--name", "plain", BUSYBOX, "sleep", "600").stdout.strip()
    b = d.docker("run", "-d", "--name", "always", "--restart", "always", BUSYBOX, "sleep", "600").stdout.strip()
    c = d.docker("run", "-d", "--name", "unless", "--restart", "unless-stopped", BUSYBOX, "sleep", "600").stdout.strip()
    d.docker("stop", "-t", "0", "unless")
    old_pids = _container_pids(d, [a, b])
    assert old_pids
    d.kill9()
    d.start()
    # the killed generation is gone: processes, runtime state (the always one runs again, new)
    for pid in old_pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    st = {n: d.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n).stdout.strip()
          for n in ("plain", "always", "unless")}
    assert st["plain"] == "exited 255"
    assert st["always"].startswith("running")
    assert st["unless"] == "exited 137"
    ps = d.docker("ps", "-a", "--filter", "name=plain", "--format", "{{.Status}}").stdout
    assert ps.startswith("Exited (255)")
    lists = _runtime_list(d)
    assert sorted(sum(lists.values(), [])) == [b]
    assert _no_cgroups([a, c]) == []
    # a clean stop stops the running container; the next start brings `always` back
    d.stop()
    assert sum(_runtime_list(d).values(), []) == []
    assert _no_cgroups([a, b, c]) == []
    d.start()
    assert d.docker("inspect", "-f", "{{.State.Status}}", "always").stdout.strip() == "running"
    d.docker("rm", "-f", "plain", "always", "unless")
    # the cgroups of the one that was running go with the cleanup after its exit, which runs
    # in the background of the removal
    wait_until(lambda: _no_cgroups([a, b, c]) == [], timeout=30, what="the cgroups to go")


def test_half_deleted_runtime_state_is_cleaned_at_the_next_start(daemon: Daemon) -> None:
    """A kill -9 in the middle of removing an exited container's runtime state (its exit
    cleanup runs in the background, so `docker stop` then a crash is enough) leaves a state
    directory the runtime no longer lists; the next start removes it all the same, and kills
    what the runtime no longer can (here the container was still running)."""
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    cid = d.docker("run", "-d", BUSYBOX, "sleep", "600").stdout.strip()
    runtime = d.docker("inspect", "-f", "{{.HostConfig.Runtime}}", cid).stdout.strip()
    pids = _container_pids(d, [cid])
    assert pids
    d.kill9()
    state = Path(d.exec_root) / "runtime" / runtime / cid
    status = next(state / n for n in ("status", "state.json") if (state / n).exists())
    status.unlink()  # the crash hit after this file went and before the directory did
    assert cid not in _runtime_list(d)[runtime]
    d.start()
    assert not state.exists()
    assert "left by a previous run" in d.log_tail(40)
    # the runtime could not kill what it no longer knew: the engine did, from the cgroups
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert _no_cgroups([cid]) == []
    d.docker("rm", "-f", cid)


def test_concurrent_same_name_exactly_one_wins(shared_daemon: Daemon) -> None:
    d = shared_daemon
    d.docker("pull", "-q", BUSYBOX)
    name = "dup" + os.urandom(4).hex()
    body = {"Image": BUSYBOX, "Cmd": ["true"]}
    barrier = threading.Barrier(8)

    def create(_: int) -> tuple[int, bytes]:
        barrier.wait()
        return d.request("POST", f"/v1.41/containers/create?name={name}", body)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(create, range(8)))
    codes = sorted(r[0] for r in results)
    assert codes == [201] + [409] * 7
    winner = json.loads(next(r[1] for r in results if r[0] == 201))["Id"]
    for st, data in results:
        if st == 409:
            assert json.loads(data)["message"] == (
                f'Conflict. The container name "/{name}" is already in use by container "{winner}". '
                "You have to remove (or rename) that container to be able to reuse that name.")
    d.docker("rm", winner)


def test_fifty_concurrent_containers(shared_daemon: Daemon) -> None:
    d = shared_daemon
    d.docker("pull", "-q", BUSYBOX)
    label = "asyncdock.fifty=" + os.urandom(4).hex()
    client = d.client(timeout=120, max_pool_size=60)

    def run(_: int) -> str:
        c = client.containers.run(BUSYBOX, ["sleep", "600"], detach=True, labels=dict([label.split("=")]))
        return c.id

    with ThreadPoolExecutor(25) as ex:
        ids = list(ex.map(run, range(50)))
    assert len(set(ids)) == 50
    running = d.docker("ps", "-q", "--no-trunc", "--filter", f"label={label}").stdout.split()
    assert sorted(running) == sorted(ids)
    assert all(_no_cgroups([i]) for i in ids[:3])  # they exist while running

    with ThreadPoolExecutor(25) as ex:
        list(ex.map(lambda i: client.api.remove_container(i, force=True), ids))
    assert d.docker("ps", "-a", "-q", "--filter", f"label={label}").stdout.strip() == ""
    # cgroups and runtime state go with the cleanup after each exit, in the background
    wait_until(lambda: _no_cgroups(ids) == [] and not set(ids) & set(sum(_runtime_list(d).values(), [])),
               timeout=60, what="the cgroups and runtime state of 50 removed containers to go")
    client.close()


def test_runc_parity(shared_daemon: Daemon) -> None:
    d = shared_daemon
    d.docker("pull", "-q", BUSYBOX)
    info = d.docker("info").stdout
    assert "Default Runtime: crun" in info
    line = next(x for x in info.splitlines() if x.strip().startswith("Runtimes:"))
    assert {"crun", "runc"} <= set(line.split(":", 1)[1].split())
    r = d.docker("run", "--rm", "--runtime", "runc", BUSYBOX, "echo", "hi")
    assert r.stdout == "hi\n"
    assert d.docker("run", "--rm", "--runtime", "runc", BUSYBOX, "sh", "-c", "exit 42", check=False).returncode == 42
    r = d.docker("run", "--rm", "--runtime", "runc", BUSYBOX, "nosuch", check=False)
    assert r.returncode == 127 and "executable file not found" in r.stderr
    name = "runc" + os.urandom(4).hex()
    cid = d.docker("run", "-d", "--runtime", "runc", "--name", name, BUSYBOX, "sleep", "600").stdout.strip()
    assert d.docker("inspect", "-f", "{{.HostConfig.Runtime}}", name).stdout.strip() == "runc"
    d.docker("pause", name)
    assert d.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip() == "paused"
    d.docker("unpause", name)
    t0 = time.monotonic()
    d.docker("stop", "-t", "1", name)
    assert 1.0 <= time.monotonic() - t0 < 3.0
    assert d.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "137"
    r = d.docker("run", "--name", name + "oom", "--runtime", "runc", "-m", "8m", "--memory-swap", "8m", BUSYBOX,
                 "sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done", check=False, timeout=60)
    assert r.returncode == 137
    assert d.docker("inspect", "-f", "{{.State.OOMKilled}}", name + "oom").stdout.strip() == "true"
    d.docker("rm", "-f", name, name + "oom")
    wait_until(lambda: _no_cgroups([cid]) == [], timeout=30, what="the cgroups to go")


def test_docker_py_flows(shared_daemon: Daemon) -> None:
    d = shared_daemon
    d.docker("pull", "-q", BUSYBOX)
    client = d.client()
    assert client.containers.run(BUSYBOX, "echo hi", remove=True) == b"hi\n"
    name = "dpy" + os.urandom(4).hex()
    seen: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        stream = client.events(decode=True, filters={"type": ["container"], "container": [name]})
        ready.set()
        for ev in stream:
            seen.append(ev)
            if ev.get("Action") == "destroy":
                stream.close()
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(10)
    c = client.containers.run(BUSYBOX, ["sh", "-c", "echo out; exit 3"], name=name, detach=True)
    assert c.wait()["StatusCode"] == 3
    assert c.logs() == b"out\n"
    ids = [x.id for x in client.containers.list(all=True)]
    assert c.id in ids
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 3
    c.remove()
    t.join(20)
    actions = [e["Action"] for e in seen]
    assert actions[0] == "create" and "start" in actions and actions[-1] == "destroy"
    die = next(e for e in seen if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "3" and die["Actor"]["Attributes"]["name"] == name
    # docker-py asks the server's version (1.54): the legacy status/id/from went at 1.52
    assert die["Actor"]["ID"] == c.id and die["Actor"]["Attributes"]["image"] == BUSYBOX
    assert not {"status", "id", "from"} & set(die)
    client.close()


def _snapshot_keys(d: Daemon) -> list[str]:
    """The snapshots the stopped daemon's metadata lists."""
    (meta,) = Path(d.data_root, "snapshots").glob("*/metadata.json")
    return sorted(json.loads(meta.read_text()).get("snapshots", {}))


def _snapshot_dirs(d: Daemon) -> list[str]:
    (snaps,) = Path(d.data_root, "snapshots").glob("*/snapshots")
    return sorted(p.name for p in snaps.iterdir())


def test_removed_containers_give_their_disk_back(daemon: Daemon) -> None:
    """`rm` answers before a container's files and snapshot are deleted (they go in the
    background, after the rootfs of its last run is unmounted). A clean stop leaves none of them
    behind; what a crash left half-removed (the record directory renamed, the snapshot still
    there) is finished at the next start; an image removed right after its last container takes
    its layers with it."""
    d = daemon
    d.docker("pull", "-q", BUSYBOX)
    kept = d.docker("create", BUSYBOX, "true").stdout.strip()
    gone = d.docker("run", "-d", BUSYBOX, "true").stdout.strip()
    d.docker("wait", gone)
    d.docker("rm", gone)
    assert d.docker("ps", "-aq", "--no-trunc").stdout.split() == [kept]
    d.stop()
    keys = _snapshot_keys(d)
    assert kept in keys and gone not in keys
    assert len(_snapshot_dirs(d)) == len(keys)
    containers = Path(d.data_root, "containers")
    assert sorted(p.name for p in containers.iterdir()) == [kept]

    # as if the daemon died in the middle of `rm kept`
    (containers / kept).rename(containers / f"rm-{kept}-0badc0de")
    d.start()
    assert d.docker("ps", "-aq").stdout.strip() == ""
    assert list(containers.iterdir()) == []
    # back to back on one connection: the image goes while the container's rootfs may still
    # be mounted and its snapshot still there
    client = d.client()
    last = client.api.create_container(BUSYBOX, ["true"])["Id"]
    client.api.start(last)
    client.api.wait(last)
    client.api.remove_container(last)
    client.api.remove_image(BUSYBOX)
    client.close()
    d.stop()
    assert _snapshot_keys(d) == []
    assert _snapshot_dirs(d) == []
