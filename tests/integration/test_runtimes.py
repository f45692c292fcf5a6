"""The runtime plugins with the engine's specs, in every crun configuration (runc, crun as the
engine configures it, crun hiding every command, crun without its helper).

The protocol itself (states, errors, signals, pause, update, exec) is checked for every
registered runtime and the fake by tests/conformance/test_runtime.py; the lifecycle tests here
overlap with it on purpose: they run it through crun's other configurations.

Real runtimes, real kernel: every container is built by containers/spec.py from a busybox-static
rootfs (tests/support/runtimes.py), run through the plugin, waited for by the subreaper's
ExitWatcher, and deleted; after each one the runtime's state directory and every cgroup
directory named after it must be gone.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.containers import seccomp
from asyncdock.containers.launcher import remove_cgroup_dirs
from asyncdock.containers.spec import (ALL_CAPABILITIES, DEFAULT_CAPABILITIES, BindMount,
                                       DeviceMapping, ExecutableError, Resources, TmpfsMount,
                                       Ulimit, find_executable, resolve_user)
from asyncdock.base.errors import InvalidParameter
from asyncdock.plugins import InitContext, Registration
from asyncdock.runtime.base import OCIRuntime, RuntimeError_
from asyncdock.runtime.cgroups import existing_cgroup_dirs
from asyncdock.runtime.reaper import ExitWatcher, is_child_subreaper, set_child_subreaper

try:
    import asyncdock_runtime_crun
    import asyncdock_runtime_runc
except ImportError:  # not (re)installed in the venv yet: import from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))
    import asyncdock_runtime_crun
    import asyncdock_runtime_runc

from tests.support.runtimes import (BUSYBOX, TIMEOUT, Harness, build_busybox_rootfs, probe,
                                    probe_leftovers, read_line, wait_state)

REGISTRATIONS: dict[str, Registration] = {"runc": asyncdock_runtime_runc.plugin,
                                          "crun": asyncdock_runtime_crun.plugin}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not BUSYBOX.exists(),
                                reason="needs root and busybox-static")


def caps_mask(names: list[str] | tuple[str, ...]) -> int:
    return sum(1 << ALL_CAPABILITIES.index(n) for n in names)


def own_status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1]
    raise KeyError(field)


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_subreaper() -> Iterator[None]:
    """ExitWatcher makes the test process a subreaper, as it does the engine; other tests in
    the session should not inherit every orphan below them."""
    was = is_child_subreaper()
    yield
    set_child_subreaper(was)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_busybox_rootfs(tmp_path_factory.mktemp("rootfs"))


# crun three times: as configured by default (only `create` in the cgroup2-hiding namespace on
# hybrid hosts, made by the C helper; started through its exec fifo), with every command hidden,
# and with every command hidden without the helper (preexec_fn, and unshare(1) for exec) and
# started by `crun start`.
CRUN_OPTIONS: dict[str, dict[str, str]] = {
    "crun-hide-all": {"hide_cgroup2_commands": "all"},
    "crun-no-helper": {"hide_cgroup2_commands": "all", "hide_helper": "none", "fifo_start": "false"},
}


@pytest.fixture(params=["runc", "crun", "crun-hide-all", "crun-no-helper"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OCIRuntime]:
    options = CRUN_OPTIONS.get(request.param, {})
    reg = REGISTRATIONS[request.param.partition("-")[0]]
    rt = reg.factory(InitContext(root=tmp_path / "state", options=options))
    assert isinstance(rt, OCIRuntime)
    if shutil.which(rt.path) is None:
        pytest.skip(f"{request.param} is not installed")
    yield rt
    # Whatever a failed test left behind.
    for cid in asyncio.run(rt.list()):
        asyncio.run(rt.delete(cid, force=True))
    rt.close()


@pytest.fixture
def h(runtime: OCIRuntime, rootfs: Path, tmp_path: Path) -> Harness:
    work = tmp_path / "bundles"
    work.mkdir()
    return Harness(runtime, rootfs, work)


# -- the conformance suite --------------------------------------------------------------------

def test_probe(runtime: OCIRuntime, rootfs: Path, tmp_path: Path) -> None:
    work = tmp_path / "probe"
    result, ids = asyncio.run(probe(runtime, work, rootfs))
    assert result.ok, result.error
    assert result.version and result.seconds > 0
    # Only this probe's: other daemons on the host probe under the same cgroup parent.
    assert len(ids) == 1 and probe_leftovers(ids) == []
    assert not list(work.iterdir())  # the probe bundle is gone


def test_exit_codes(h: Harness) -> None:
    async def body() -> None:
        assert (await h.run(["/bin/true"])).code == 0
        assert (await h.sh("exit 3")).code == 3
    asyncio.run(body())


def test_sigkill_is_137(h: Harness) -> None:
    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sleep", "1000"])
        h.watch(pid)
        await h.rt.start(cid)
        await h.rt.kill(cid, signal.SIGKILL)
        assert (await h.finish(cid, pid, fds)).code == 137
    asyncio.run(body())


def test_state_half_deleted_is_listed_and_deleted(h: Harness) -> None:
    """A daemon killed halfway through removing an exited container's state leaves a directory
    without the runtime's status file, which `crun list`/`runc list` no longer show: list()
    still names it (the next start's cleanup goes by list()) and delete removes it."""
    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sleep", "1000"])
        h.watch(pid)
        await h.rt.start(cid)
        await h.rt.kill(cid, signal.SIGKILL)
        assert await asyncio.wait_for(h.futures.pop(pid), 30) == 137
        for fd in fds:
            os.close(fd)
        # the engine's order after an exit: the cgroups go, then the runtime's state, which
        # the crash interrupted: the directory stays, not the file the runtime reads
        remove_cgroup_dirs(f"/asyncdock/{cid}")
        state = h.state_dir / cid
        status = next(state / n for n in ("status", "state.json") if (state / n).exists())
        status.unlink()
        assert cid in await h.rt.list()
        await h.delete(cid)
        assert await h.rt.list() == []
    asyncio.run(body())


def test_stdout_stderr_through_given_pipes(h: Harness) -> None:
    r = asyncio.run(h.sh("echo to-out; echo to-err >&2; exit 0"))
    assert (r.code, r.stdout, r.stderr) == (0, "to-out\n", "to-err\n")


def test_sigterm_to_trapping_shell(h: Harness) -> None:
    async def body() -> None:
        cid, pid, fds = await h.create(
            ["/bin/sh", "-c", 'trap "echo got-term; exit 42" TERM; echo ready; '
                              'sleep 1000 & wait'])
        h.watch(pid)
        await h.rt.start(cid)
        assert await read_line(fds[0]) == "ready\n"
        await h.rt.kill(cid, signal.SIGTERM)
        r = await h.finish(cid, pid, fds)
        assert (r.code, r.stdout) == (42, "got-term\n")
    asyncio.run(body())


def test_pause_resume_state(h: Harness) -> None:
    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sleep", "1000"])
        h.watch(pid)
        st = await h.rt.state(cid)
        assert st is not None and st["status"] == "created" and st["pid"] == pid
        await h.rt.start(cid)
        await wait_state(h.rt, cid, "running")
        await h.rt.pause(cid)
        await wait_state(h.rt, cid, "paused")
        await h.rt.resume(cid)
        await wait_state(h.rt, cid, "running")
        assert cid in await h.rt.list()
        await h.rt.kill(cid, signal.SIGKILL)
        assert (await h.finish(cid, pid, fds)).code == 137
        assert await h.rt.state(cid) is None
        assert cid not in await h.rt.list()
        await h.rt.delete(cid)  # idempotent
    asyncio.run(body())


def test_errors_carry_the_runtime_message(h: Harness) -> None:
    async def body() -> None:
        with pytest.raises(RuntimeError_) as e:
            await h.rt.start("adtest-no-such-container")
        assert e.value.message and "\n" not in e.value.message
        # A create failure: the message comes from the runtime's log, not the container's pipes.
        with pytest.raises(RuntimeError_) as e:
            cid, _, fds = await h.create(["/nonexistent"])
        assert "nonexistent" in e.value.message
    asyncio.run(body())


def test_exec(h: Harness) -> None:
    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sleep", "1000"])
        h.watch(pid)
        await h.rt.start(cid)
        spec = json.loads((h.work / cid / "config.json").read_text())
        process = dict(spec["process"], args=["/bin/sh", "-c", "echo exec-ok $(id -u); exit 5"])
        pjson = h.work / cid / "exec.json"
        pjson.write_text(json.dumps(process))
        argv = h.rt.exec_argv(cid, pjson, pid_file=h.work / cid / "exec.pid")
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE)
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
        assert (proc.returncode, out) == (5, b"exec-ok 0\n"), err
        await h.rt.kill(cid, signal.SIGKILL)
        await h.finish(cid, pid, fds)
    asyncio.run(body())


def test_memory_limit_oom_kill(h: Harness) -> None:
    mib = 1024 * 1024
    r = asyncio.run(h.sh("x=$(yes | head -c 200000000); echo survived",
                         resources=Resources(memory=32 * mib, memory_swap=32 * mib)))
    assert (r.code, r.oom, r.stdout) == (137, True, "")


def test_pids_limit(h: Harness) -> None:
    # ash gives up on the script at the first failed fork
    r = asyncio.run(h.sh("cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; "
                         "i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done; echo unlimited",
                         resources=Resources(pids_limit=10)))
    assert r.stdout.splitlines() == ["10"]
    assert "can't fork" in r.stderr


def test_readonly_rootfs(h: Harness) -> None:
    r = asyncio.run(h.sh("touch /written", readonly_rootfs=True))
    assert r.code != 0 and "Read-only file system" in r.stderr
    r = asyncio.run(h.sh("touch /dev/shm/ok && echo shm-rw; touch /tmp/x 2>/dev/null || echo tmp-ro",
                         readonly_rootfs=True))
    assert r.stdout.split() == ["shm-rw", "tmp-ro"]


def test_capabilities(h: Harness) -> None:
    async def body() -> None:
        script = "grep -E '^Cap(Eff|Bnd)' /proc/self/status"
        default = await h.sh(script)
        fields = dict(line.split(":\t") for line in default.stdout.splitlines())
        assert int(fields["CapEff"], 16) == caps_mask(DEFAULT_CAPABILITIES) == 0xA80425FB
        assert int(fields["CapBnd"], 16) == 0xA80425FB
        priv = await h.sh(script, privileged=True)
        fields = dict(line.split(":\t") for line in priv.stdout.splitlines())
        # "all": everything the engine itself may hand out
        assert int(fields["CapEff"], 16) == int(own_status("CapBnd"), 16)
        dropped = await h.sh(script, cap_drop=["chown", "CAP_KILL"], cap_add=["NET_ADMIN"])
        fields = dict(line.split(":\t") for line in dropped.stdout.splitlines())
        want = caps_mask([c for c in DEFAULT_CAPABILITIES if c not in ("CAP_CHOWN", "CAP_KILL")]
                         + ["CAP_NET_ADMIN"])
        assert int(fields["CapEff"], 16) == want
        nonroot = await h.sh(script, uid=1000, gid=1000)
        fields = dict(line.split(":\t") for line in nonroot.stdout.splitlines())
        assert (int(fields["CapEff"], 16), int(fields["CapBnd"], 16)) == (0, 0xA80425FB)
    asyncio.run(body())


def test_masked_and_readonly_paths(h: Harness) -> None:
    # /proc/kcore is the classic one, but kernels without CONFIG_PROC_KCORE have none.
    masked = next(p for p in ("/proc/kcore", "/proc/timer_list") if Path(p).exists())
    assert Path(masked).stat().st_size > 0 or Path(masked).read_bytes()

    async def body() -> None:
        r = await h.sh(f"wc -c < {masked}; ls /sys/firmware | wc -l; "
                       "echo 1 > /proc/sys/kernel/domainname 2>&1 || echo ro")
        assert r.stdout.split() == ["0", "0", "ro"], r.stderr
        r = await h.sh(f"test -w /sys/kernel && echo sys-rw; wc -c < {masked}", privileged=True)
        assert r.stdout.splitlines()[0] == "sys-rw"
        assert int(r.stdout.splitlines()[1]) > 0
    asyncio.run(body())


def test_seccomp(h: Harness, tmp_path: Path) -> None:
    async def body() -> None:
        r = await h.sh("grep ^Seccomp: /proc/self/status")
        assert r.stdout.split() == ["Seccomp:", "2"]
        assert (await h.sh("grep ^Seccomp: /proc/self/status", seccomp="unconfined")).stdout \
            == "Seccomp:\t0\n"
        assert (await h.sh("grep ^Seccomp: /proc/self/status", privileged=True)).stdout \
            == "Seccomp:\t0\n"
        # Our own rule set (the default), given as a file, works in both runtimes and denies
        # what needs CAP_SYS_ADMIN (a user namespace here).
        builtin = tmp_path / "builtin.json"
        builtin.write_text(json.dumps(seccomp.BUILTIN_RULES))
        r = await h.sh("grep ^Seccomp: /proc/self/status; ls / >/dev/null && echo works; "
                       "unshare -U true 2>/dev/null || echo denied", seccomp=str(builtin))
        assert r.stdout.split() == ["Seccomp:", "2", "works", "denied"], r.stderr
    asyncio.run(body())


def test_seccomp_filters_reused_per_profile(h: Harness, tmp_path: Path) -> None:
    """A compiled filter is reused for the next container with the same profile (crun: through
    its precompiled-BPF annotation) and never handed to a container with another profile."""
    deny_mkdir = tmp_path / "deny-mkdir.json"
    deny_mkdir.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    script = "mkdir /dev/shm/d 2>/dev/null && echo made || echo denied"
    annotation = "run.oci.seccomp_bpf_data"

    async def body() -> None:
        for round_ in range(2):
            assert (await h.sh(script)).stdout == "made\n"
            default_annotations = dict(h.last_spec.get("annotations") or {})
            assert (await h.sh(script, seccomp=str(deny_mkdir))).stdout == "denied\n"
            custom_annotations = dict(h.last_spec.get("annotations") or {})
            if h.rt.name == "crun":
                # compiled by crun the first time, loaded from the cache the second
                assert (annotation in default_annotations) == (round_ == 1)
                assert (annotation in custom_annotations) == (round_ == 1)
        if h.rt.name == "crun":
            assert default_annotations[annotation] != custom_annotations[annotation]
            assert len(h.rt.seccomp_cache) == 2  # type: ignore[attr-defined]
        # unconfined carries no filter, cached or not
        await h.sh("true", seccomp="unconfined")
        assert annotation not in (h.last_spec.get("annotations") or {})
    asyncio.run(body())


def test_network_none_has_only_lo(h: Harness) -> None:
    r = asyncio.run(h.sh("ls /sys/class/net", network="none"))
    assert r.stdout.split() == ["lo"]


def test_user(h: Harness, rootfs: Path) -> None:
    uid, gid, gids = resolve_user(rootfs, "app")
    assert (uid, gid, gids) == (1000, 1000, [1000, 50])
    r = asyncio.run(h.sh("id -u; id -g; id -G", uid=uid, gid=gid, additional_gids=gids))
    assert r.stdout.split() == ["1000", "1000", "1000", "50"]


def test_init_is_pid1(h: Harness) -> None:
    r = asyncio.run(h.sh('tr "\\0" " " < /proc/1/cmdline; echo; echo $$; exit 7', init=True))
    cmdline, mypid = r.stdout.splitlines()
    assert cmdline.startswith("/dev/init -- /bin/sh -c")
    assert mypid != "1" and r.code == 7


def test_mounts_devices_namespaces(h: Harness, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("hello\n")

    async def body() -> None:
        r = await h.sh(
            "cat /data/file; touch /data/x 2>/dev/null || echo data-ro; "
            "grep ' /scratch ' /proc/mounts | cut -d' ' -f4; "
            "head -c 4 /dev/myzero | wc -c; df -k /dev/shm | tail -1 | awk '{print $2}'; "
            "grep -c ':/$' /proc/self/cgroup",
            binds=[BindMount(source=str(data), destination="/data", readonly=True)],
            tmpfs=[TmpfsMount(destination="/scratch", options=("size=1m", "exec"))],
            devices=[DeviceMapping(path_on_host="/dev/zero", path_in_container="/dev/myzero")],
            shm_size=8 * 1024 * 1024, cgroupns="private")
        lines = r.stdout.splitlines()
        assert lines[:5] == ["hello", "data-ro", "rw,nosuid,nodev,relatime,size=1024k", "4",
                             "8192"], r.stderr
        assert int(lines[5]) == len(Path("/proc/self/cgroup").read_text().splitlines())
        # The host's own namespace, by identity: its interface list changes whenever any
        # container's veth comes or goes, which made a listing comparison flaky.
        r = await h.sh("readlink /proc/self/ns/net; hostname", network="host", uts="host")
        assert r.stdout.split() == [os.readlink("/proc/self/ns/net"), os.uname().nodename], r.stderr
        r = await h.sh("ls /proc | grep -c '^[0-9]'", pid="host")
        assert int(r.stdout) > 10
    asyncio.run(body())


def test_hostname_env_cwd_sysctl_ulimit(h: Harness) -> None:
    r = asyncio.run(h.sh("hostname; cat /proc/sys/kernel/domainname; echo $FOO; pwd; "
                         "cat /proc/sys/net/ipv4/ip_forward; "
                         "ulimit -n", env=["PATH=/bin", "FOO=bar"], cwd="/tmp",
                         domainname="example.org", sysctls={"net.ipv4.ip_forward": "1"},
                         ulimits=[Ulimit(name="nofile", soft=321, hard=321)]))
    lines = r.stdout.splitlines()
    assert lines[1:] == ["example.org", "bar", "/tmp", "1", "321"], r.stderr
    assert lines[0].startswith("adtest-")


def test_update_resources(h: Harness) -> None:
    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sleep", "1000"], resources=Resources(pids_limit=10))
        h.watch(pid)
        await h.rt.start(cid)
        pids_max = next(d / "pids.max" for d in existing_cgroup_dirs(f"/asyncdock/{cid}")
                        if (d / "pids.max").exists())
        assert pids_max.read_text().strip() == "10"
        await h.rt.update(cid, {"pids": {"limit": 20}})
        assert pids_max.read_text().strip() == "20"
        await h.rt.kill(cid, signal.SIGKILL, all_processes=True)
        assert (await h.finish(cid, pid, fds)).code == 137
    asyncio.run(body())


# -- runtime selection -------------------------------------------------------------------------

def test_select_runtimes(rootfs: Path, tmp_path: Path) -> None:
    from asyncdock.config import DaemonConfig, RuntimeConfig
    from asyncdock.runtime.select import RuntimeUnavailable, select_runtimes

    async def body() -> None:
        config = DaemonConfig(exec_root=str(tmp_path / "exec"), runtimes={
            "my-crun": RuntimeConfig(path=shutil.which("crun") or "/usr/bin/crun"),
            "ghost": RuntimeConfig(path="/nonexistent/runc"),
        })
        default, runtimes, probes = await select_runtimes(config, REGISTRATIONS,
                                                          tmp_path / "work", rootfs)
        for rt in runtimes.values():
            rt.close()
        assert set(runtimes) == {"runc", "crun", "my-crun", "ghost"}
        assert default == "crun" and probes["crun"].ok and probes["runc"].ok
        assert isinstance(runtimes["my-crun"], asyncdock_runtime_crun.CrunRuntime)
        assert runtimes["my-crun"].name == "my-crun" and probes["my-crun"].ok
        assert (probes["ghost"].ok, probes["ghost"].error) == (False, "not installed")

        config.default_runtime = "runc"
        default, runtimes, _ = await select_runtimes(config, REGISTRATIONS, tmp_path / "work", rootfs)
        for rt in runtimes.values():
            rt.close()
        assert default == "runc"
        config.default_runtime = "ghost"
        with pytest.raises(RuntimeUnavailable, match="not installed"):
            await select_runtimes(config, REGISTRATIONS, tmp_path / "work", rootfs)
        config.default_runtime = "nope"
        with pytest.raises(RuntimeUnavailable, match="not configured"):
            await select_runtimes(config, REGISTRATIONS, tmp_path / "work", rootfs)
    asyncio.run(body())


def test_crun_without_hiding_fails_clearly_on_hybrid(rootfs: Path, tmp_path: Path) -> None:
    from asyncdock.runtime.cgroups import cgroup_mode
    if cgroup_mode() != "hybrid" or shutil.which("crun") is None:
        pytest.skip("needs a hybrid cgroup host and crun")
    rt = asyncdock_runtime_crun.plugin.factory(
        InitContext(root=tmp_path / "state", options={"hide_cgroup2": "never"}))
    try:
        result = asyncio.run(rt.probe(tmp_path / "work", rootfs))
    finally:
        rt.close()
    assert not result.ok and "hybrid" in result.error


# -- the subreaper ----------------------------------------------------------------------------

# An intermediate process that forks children exiting with the given codes once their stdin
# (shared with it) reaches EOF -- or at once for "now:" codes -- prints their pids, then waits
# for EOF itself and exits WITHOUT reaping them: the part a runtime plays for a container.
_FORKER = """
import os, sys
pids = []
for arg in sys.argv[1:]:
    now, code = arg.startswith("now:"), int(arg.rpartition(":")[2])
    pid = os.fork()
    if pid == 0:
        if not now:
            os.read(0, 1)
        os._exit(code)
    pids.append(pid)
print(*pids, flush=True)
os.read(0, 1)
"""


async def _exited(pid: int) -> None:
    """Until `pid` has exited (a pidfd turns readable), without reaping it."""
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        async with asyncio.timeout(TIMEOUT):
            await ready.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _forker(*codes: str) -> tuple[asyncio.subprocess.Process, list[int]]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _FORKER, *codes,
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        pids = [int(x) for x in (await proc.stdout.readline()).split()]
    return proc, pids


def test_exit_watcher_reparented_and_asyncio_children() -> None:
    """A process that exits while its parent (not us) still lives is collected once it is
    re-parented to us; asyncio's own subprocesses keep their statuses."""
    async def body() -> None:
        exits = ExitWatcher()
        proc, (grandchild,) = await _forker("now:9")
        waiter = asyncio.create_task(exits.wait(grandchild))
        second = asyncio.create_task(exits.wait(grandchild))
        other = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 7")
        async with asyncio.timeout(TIMEOUT):
            assert await other.wait() == 7
            await _exited(grandchild)  # a zombie, but its parent's: not waitable by us yet
            assert not waiter.done()
            assert proc.stdin is not None
            proc.stdin.close()  # the parent exits; the zombie becomes ours
            assert await proc.wait() == 0
            assert await waiter == 9
            assert await second == 9  # waiters of one pid share its status
    asyncio.run(body())


def test_reap_orphans_spares_watched() -> None:
    """Two children outlive their parent (so they become ours); only the one nobody watches is
    reaped, and only at its second sighting."""
    async def body() -> None:
        exits = ExitWatcher()
        proc, (orphan, watched) = await _forker("1", "2")
        fut = exits.watch(watched)
        exited = asyncio.create_task(_exited(orphan))
        assert proc.stdin is not None
        proc.stdin.close()  # all three exit now
        async with asyncio.timeout(TIMEOUT):
            assert await proc.wait() == 0
            await exited
            assert await fut == 2
        assert orphan not in exits.reap_orphans()  # first sighting: spared
        assert exits.reap_orphans() == [orphan]
    asyncio.run(body())


# -- spec helpers that read the rootfs --------------------------------------------------------

def test_resolve_user(rootfs: Path, tmp_path: Path) -> None:
    assert resolve_user(rootfs, "") == (0, 0, [0])
    assert resolve_user(rootfs, "1000") == (1000, 1000, [1000, 50])
    assert resolve_user(rootfs, "app:staff") == (1000, 50, [50])
    assert resolve_user(rootfs, "4242:4343") == (4242, 4343, [4343])
    with pytest.raises(InvalidParameter,
                       match="unable to find user nobody: no matching entries in passwd file"):
        resolve_user(rootfs, "nobody")
    with pytest.raises(InvalidParameter,
                       match="unable to find group nogroup: no matching entries in group file"):
        resolve_user(rootfs, "app:nogroup")
    empty = tmp_path / "empty"
    (empty / "etc").mkdir(parents=True)
    (empty / "etc/passwd").symlink_to("/etc/../../../../etc/passwd-not-there")
    assert resolve_user(empty, "5") == (5, 0, [0])
    with pytest.raises(InvalidParameter, match="unable to find user root"):
        resolve_user(empty, "root")  # the symlink is resolved inside the rootfs, not the host's


def test_find_executable(rootfs: Path) -> None:
    find_executable(rootfs, "sh", "/usr/bin:/bin", "/")
    find_executable(rootfs, "/bin/sh", None, "/")
    find_executable(rootfs, "../bin/sh", None, "/tmp")
    with pytest.raises(ExecutableError) as e:
        find_executable(rootfs, "nope", "/bin", "/")
    assert (e.value.message, e.value.exit_code) == \
        ('exec: "nope": executable file not found in $PATH', 127)
    with pytest.raises(ExecutableError) as e:
        find_executable(rootfs, "/bin/nope", "/bin", "/")
    assert e.value.message == 'exec: "/bin/nope": stat /bin/nope: no such file or directory'
    with pytest.raises(ExecutableError) as e:
        find_executable(rootfs, "/bin/notexec", "/bin", "/")
    assert (e.value.message, e.value.exit_code) == ('exec: "/bin/notexec": permission denied', 126)
    with pytest.raises(ExecutableError):
        find_executable(rootfs, "/etc", "/bin", "/")


def test_crun_runs_from_a_read_only_pin(rootfs: Path, tmp_path: Path) -> None:
    """crun runs from a read-only bind mount of its binary (so it skips its self-copy on every
    command); the pin cannot be written through, and close() takes it away."""
    if shutil.which("crun") is None:
        pytest.skip("crun is not installed")
    rt = asyncdock_runtime_crun.plugin.factory(InitContext(root=tmp_path / "state", options={}))
    assert rt.exe == rt.path  # the engine's start-up probe pins it
    try:
        assert asyncio.run(rt.probe(tmp_path / "work", rootfs)).ok
        pin = Path(rt.exe)
        assert pin != Path(rt.path) and pin.parent == tmp_path
        assert _mount_point(pin) == "ro"
        with pytest.raises(OSError) as e:
            open(pin, "ab").close()
        assert e.value.errno in (30, 26)  # EROFS; ETXTBSY first while some crun runs
        assert asyncio.run(rt.version()) == asyncio.run(rt.version())  # runs fine from there
        assert subprocess.run([rt.exe, "--version"], capture_output=True).returncode == 0
    finally:
        rt.close()
    assert not pin.exists() and _mount_point(pin) is None and rt.exe == rt.path
    unpinned = asyncdock_runtime_crun.plugin.factory(
        InitContext(root=tmp_path / "state2", options={"pin_binary": False}))
    try:
        assert asyncio.run(unpinned.probe(tmp_path / "work", rootfs)).ok
        assert unpinned.exe == unpinned.path
    finally:
        unpinned.close()


def _mount_point(path: Path) -> str | None:
    """"ro"/"rw" of the mount at `path`, None if none is (os.path.ismount cannot see a bind
    mount of a file from the same file system)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path):
            return fields[5].split(",")[0]
    return None


def test_crun_hides_cgroup2_through_the_built_helper(tmp_path: Path) -> None:
    """scripts/setup.sh builds the helper; the default crun runtime then spawns `create` through
    it (no preexec_fn, so no fork of the whole engine) and the other commands plainly."""
    from asyncdock.runtime.cgroups import cgroup_mode
    if cgroup_mode() != "hybrid" or shutil.which("crun") is None:
        pytest.skip("needs a hybrid cgroup host and crun")
    rt = asyncdock_runtime_crun.plugin.factory(InitContext(root=tmp_path / "state", options={}))
    helper = asyncdock_runtime_crun.find_helper()
    assert helper is not None and rt.helper == helper
    argv = rt._wrap_argv("create", ["crun", "create", "x"])
    assert argv == [helper, "/sys/fs/cgroup/unified", "crun", "create", "x"]
    assert rt._preexec("create", False) is None
    assert rt._wrap_argv("start", ["crun", "start", "x"]) == ["crun", "start", "x"]
    r = subprocess.run([helper, "/sys/fs/cgroup/unified", "/bin/sh", "-c",
                        "grep -c ' /sys/fs/cgroup/unified ' /proc/self/mountinfo; exit 3"],
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (3, "0\n")  # hidden inside, and the status passes through
    assert Path("/sys/fs/cgroup/unified").is_mount()  # still there outside


def test_crun_fifo_start_and_its_fallback(rootfs: Path, tmp_path: Path) -> None:
    """crun's start done in-process (the exec fifo write) runs the container as `crun start`
    does; when the init is gone, the fallback to `crun start` reports crun's own error."""
    if shutil.which("crun") is None:
        pytest.skip("crun is not installed")
    rt = asyncdock_runtime_crun.plugin.factory(InitContext(root=tmp_path / "state", options={}))
    assert rt.fifo_start
    work = tmp_path / "bundles"
    work.mkdir()
    h = Harness(rt, rootfs, work)

    async def body() -> None:
        cid, pid, fds = await h.create(["/bin/sh", "-c", "echo started"])
        fifo = tmp_path / "state" / cid / "exec.fifo"
        assert fifo.exists()
        h.watch(pid)
        await rt.start(cid)
        assert not fifo.exists()
        r = await h.finish(cid, pid, fds)
        assert (r.code, r.stdout) == (0, "started\n")

        cid, pid, fds = await h.create(["/bin/true"])
        h.watch(pid)
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(TIMEOUT):
            assert await h.futures.pop(pid) == 128 + signal.SIGKILL
        with pytest.raises(RuntimeError_):
            await rt.start(cid)
        for fd in fds:
            os.close(fd)
        await h.delete(cid)
    asyncio.run(body())
    assert not asyncdock_runtime_crun._fifo_protocol_known("2.0")
    assert asyncdock_runtime_crun._fifo_protocol_known("1.8.1")
