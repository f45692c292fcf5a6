"""An OCIRuntime that drives an OCI runtime's command line (runc, crun and look-alikes).

Generic on purpose: it knows the CLI every runc-compatible runtime shares. Runtime-specific
behaviour (crun's mount-namespace trick on hybrid cgroup hosts) lives in the plugins, through
the hooks `_preexec()`, `_retryable()` and `_wrap_argv()`.

Every command runs with `--root <state dir>` so our containers never mix with another engine's.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from asyncdock.runtime.base import ProbeResult, RuntimeError_
from asyncdock.runtime.reaper import exit_code
from asyncdock.util.fsflags import mark_topdir
from asyncdock.util.fstree import remove_tree_quietly

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
# runc creates the cgroups, namespaces and mounts during `create`; on a loaded host (or with
# many mounts) that takes a while. Still bounded: a runtime that hangs must not hang us.
CREATE_TIMEOUT = 120.0

# The daemon may run with a PATH lacking the sbin directories (runc lives in /usr/sbin on Debian).
_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_LOGRUS_MSG = re.compile(r'\bmsg="((?:[^"\\]|\\.)*)"|\bmsg=(\S+)')


def find_binary(name: str) -> str:
    """Absolute path of `name` on PATH or in the usual directories; the bare name if absent
    (a probe then reports "not installed")."""
    return shutil.which(name) or shutil.which(name, path=_SEARCH_PATH) or name


def last_error_line(text: str) -> str:
    """The runtime's last error: the `msg` of the last error entry of a JSON log
    (--log-format json) or of a logrus text line (`time=... level=error msg="..."`), else the
    last non-empty line as is."""
    fallback = ""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        level, msg = _parse_log_line(line)
        if level in {"error", "fatal", "panic"}:
            return msg
        if not fallback:
            fallback = msg
    return fallback


def last_logged_error(log_file: Path) -> str:
    """last_error_line of the runtime's --log file; "" when it is unreadable or absent."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        text = ""
    return last_error_line(text)


def _parse_log_line(line: str) -> tuple[str, str]:
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return "", line
        if isinstance(entry, dict) and entry.get("msg"):
            return str(entry.get("level", "")), str(entry["msg"])
        return "", line
    if "level=" in line:
        level = re.search(r"\blevel=(\w+)", line)
        m = _LOGRUS_MSG.search(line)
        if level and m:
            msg = m.group(1) if m.group(1) is not None else m.group(2)
            if m.group(1) is not None:
                msg = re.sub(r'\\(.)', r'\1', msg)
            return level.group(1), msg
    # A plain line (runc's fatal() prints the bare error to stderr): an error by definition.
    return "error", line


class CLIRuntime:
    """OCIRuntime over a runc-compatible CLI. `name` is how the engine calls it (daemon.json's
    runtime name); `path` the binary."""

    def __init__(self, *, name: str, path: str, root: Path,
                 runtime_args: Sequence[str] = ()) -> None:
        self.name = name
        self.path = path
        # what is executed: `path`, or a read-only pin of it (see pin_binary)
        self.exe = path
        self.root = Path(root)
        self.runtime_args = list(runtime_args)
        self._pin: Path | None = None
        # (st_dev, st_ino) of the binary the pin shows: what _check_pin expects to find there
        self._pinned_id: tuple[int, int] | None = None
        self._root_made = False
        # probe() pins the binary when set (a plugin decides; see pin_binary)
        self.wants_pin = False
        # the mount options `<runtime> features` lists (None: it has no features command);
        # read by probe(), used for `rro` (runtime/rro.py)
        self.mount_options: frozenset[str] | None = None

    def pin_binary(self) -> None:
        """Run the binary from a read-only bind mount beside the state directory, so that the
        runtime skips its per-invocation self-copy (asyncdock.runtime.pinned)."""
        from asyncdock.runtime.pinned import pin

        resolved = shutil.which(self.path)
        if resolved is None or self._pin is not None:
            return
        dest = self.root.parent / f".{self.root.name}.exe"
        pinned = pin(os.path.realpath(resolved), dest)
        if pinned is not None:
            self._pin = dest
            self.exe = pinned
            self._pinned_id = _file_id(dest)

    def _check_pin(self) -> None:
        """The pin can go behind our back (someone unmounted or deleted it: before exec-roots
        were locked, a second daemon on ours did at its stop), and then every command would
        fail with a bare exit code 127. One stat per command notices: the pin is made again,
        or the binary runs unpinned."""
        if self._pin is None or _file_id(self._pin) == self._pinned_id:
            return
        from asyncdock.runtime.pinned import pin, unpin

        dest = self._pin
        unpin(dest)
        self._pin, self._pinned_id, self.exe = None, None, self.path
        resolved = shutil.which(self.path)
        pinned = pin(os.path.realpath(resolved), dest) if resolved is not None else None
        if pinned is None:
            log.warning("runtime %s: its pinned binary %s was removed behind the engine's back; "
                        "running %s unpinned", self.name, dest, self.path)
            return
        self._pin, self._pinned_id, self.exe = dest, _file_id(dest), pinned
        log.warning("runtime %s: its pinned binary %s was removed behind the engine's back; "
                    "pinned it again", self.name, dest)

    def close(self) -> None:
        """Undo what the runtime set up on the host (the pinned binary)."""
        from asyncdock.runtime.pinned import unpin

        if self._pin is not None:
            unpin(self._pin)
            self._pin = None
            self._pinned_id = None
            self.exe = self.path

    # -- hooks for runtime-specific behaviour -----------------------------------------------

    def _preexec(self, command: str, retry: bool) -> Callable[[], None] | None:
        """Run in the forked child before `<rt> command` is exec'd (None: nothing -- and the
        cheaper spawn: a preexec_fn forces a full fork() of the engine instead of vfork)."""
        return None

    def _retryable(self, command: str, message: str) -> bool:
        """Whether a failed command is worth a second try with `_preexec(command, retry=True)`."""
        return False

    def _wrap_argv(self, command: str, argv: list[str], retry: bool = False) -> list[str]:
        """The argv actually spawned for `<rt> command` (a runtime may run itself through a
        helper). Also used for `exec`, which the engine spawns itself and where no preexec
        hook can run."""
        return argv

    # -- plumbing -------------------------------------------------------------------------

    def _make_root(self) -> None:
        if self._root_made:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The runtime makes and deletes a directory of files per container here; on ext4 the
        # top-dir flag starts each in a lightly used block group (see util.fsflags).
        mark_topdir(self.root)
        self._root_made = True

    def _argv(self, *args: str, log_file: Path | None = None) -> list[str]:
        self._check_pin()
        argv = [self.exe, "--root", str(self.root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        return argv + self.runtime_args + list(args)

    def _exists(self, container_id: str) -> bool:
        # Both runc and crun keep a directory per container under --root.
        return (self.root / container_id).is_dir()

    async def _run(self, *args: str, input: bytes | None = None,
                   timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Run `<rt> args...`, return its stdout; raise RuntimeError_ with its last error line.
        Used for every command whose stdio the container does not inherit."""
        try:
            return await self._run_once(args, input, timeout, retry=False)
        except RuntimeError_ as e:
            if not self._retryable(args[0], e.message):
                raise
        return await self._run_once(args, input, timeout, retry=True)

    async def _run_once(self, args: tuple[str, ...], input: bytes | None, timeout: float, *,
                        retry: bool) -> bytes:
        argv = self._wrap_argv(args[0], self._argv(*args), retry)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=self._preexec(args[0], retry))
        except (OSError, subprocess.SubprocessError) as e:
            raise _spawn_error(self, e) from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input)
        except BaseException as e:
            await _kill_and_reap(proc)
            if isinstance(e, TimeoutError):
                raise RuntimeError_(f"{self.name} {args[0]} timed out after {timeout:g}s") from None
            raise
        if proc.returncode != 0:
            msg = last_error_line(err.decode(errors="replace")) or \
                f"{self.name} {args[0]} failed with exit code {proc.returncode}"
            raise RuntimeError_(msg, returncode=proc.returncode or 1)
        return out

    async def _bare(self, arg: str, *, stderr: int) -> tuple[int | None, bytes]:
        """`<rt> arg` with none of our global flags (the probe's questions: --version, features):
        its exit status and stdout, within 10 s; OSError when it cannot be spawned."""
        proc = await asyncio.create_subprocess_exec(
            self.path, arg, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            async with asyncio.timeout(10):
                out, _ = await proc.communicate()
        except BaseException:
            await _kill_and_reap(proc)
            raise
        return proc.returncode, out

    # -- OCIRuntime -----------------------------------------------------------------------

    async def version(self) -> str:
        return (await self.version_info())[0]

    async def version_info(self) -> tuple[str, str]:
        """(version, commit) from `--version`: "runc version 1.1.5+ds1" / "commit: 1.1.5+ds1-1"."""
        try:
            _, out = await self._bare("--version", stderr=subprocess.STDOUT)
        except OSError as e:
            raise RuntimeError_(f"{self.path}: {e.strerror}", returncode=127) from None
        lines = out.decode(errors="replace").strip().splitlines()
        line = lines[0] if lines else ""
        # "runc version 1.1.5+ds1", "crun version 1.8.1": keep the number.
        m = re.search(r"version\s+(\S+)", line)
        commit = next((x.partition(":")[2].strip() for x in lines[1:] if x.startswith("commit:")), "")
        return (m.group(1) if m else line), commit

    async def features_mount_options(self) -> frozenset[str] | None:
        """`mountOptions` of `<runtime> features` (OCI runtime features, runc >= 1.1), or None
        where the runtime has no such command or answers something else."""
        try:
            returncode, out = await self._bare("features", stderr=subprocess.DEVNULL)
        except OSError:
            return None
        if returncode != 0:
            return None
        try:
            options = json.loads(out).get("mountOptions")
        except (ValueError, AttributeError):
            return None
        return frozenset(str(o) for o in options) if isinstance(options, list) else None

    def prepare_spec(self, container_id: str, spec: dict[str, object]) -> None:
        """Adjust the spec before it is written to the bundle (runtime-specific annotations).
        Nothing for a plain runc-compatible CLI."""

    async def create(self, container_id: str, bundle: Path, *, pid_file: Path,
                     stdio: tuple[int, int, int] | None = None,
                     console_socket: Path | None = None) -> None:
        # Not `run --detach` (one process fewer, ~3 ms): crun forks an intermediate process for
        # it, which exits after its parent and so becomes a zombie of ours (the subreaper) that
        # only the periodic orphan sweep would collect.
        command = "create"
        self._make_root()
        # The container inherits the runtime's stdio, so the runtime's stderr cannot be a pipe
        # to us (we would read the container's output, and a pipe the container keeps open
        # never reaches EOF). Its errors go to a JSON log file in the bundle instead.
        log_file = Path(bundle) / f"{self.name}-create.log"
        log_file.unlink(missing_ok=True)
        args = [command, "--bundle", str(bundle), "--pid-file", str(pid_file)]
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        args.append(container_id)
        if stdio is None or console_socket is not None:
            stdin = stdout = stderr = subprocess.DEVNULL
        else:
            stdin, stdout, stderr = stdio
        argv = self._wrap_argv(command, self._argv(*args, log_file=log_file))
        exe = self.exe  # as _argv (which checks the pin) left it
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=stdin, stdout=stdout,
                stderr=stderr, preexec_fn=self._preexec(command, False))
        except (OSError, subprocess.SubprocessError) as e:
            self._created(container_id, ok=False)
            raise _spawn_error(self, e) from None
        try:
            async with asyncio.timeout(CREATE_TIMEOUT):
                rc = await proc.wait()
        except BaseException as e:
            self._created(container_id, ok=False)
            await _kill_and_reap(proc)
            if isinstance(e, TimeoutError):
                raise RuntimeError_(f"{self.name} {command} timed out after {CREATE_TIMEOUT:g}s") \
                    from None
            raise
        self._created(container_id, ok=rc == 0)
        if rc != 0:
            msg = last_logged_error(log_file)
            if not msg and rc == 127:
                # the exec of the runtime failed: a helper's stderr went to the container's stdio
                msg = f"{self.name} {command} failed with exit code 127: {exe} could not be executed"
            raise RuntimeError_(msg or f"{self.name} {command} failed with exit code {rc}", returncode=rc)
        log_file.unlink(missing_ok=True)

    def _created(self, container_id: str, *, ok: bool) -> None:
        """Hook: a create finished; the runtime's state directory is there if `ok`."""

    async def start(self, container_id: str) -> None:
        await self._run("start", container_id)

    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, str(int(signal))]
        await self._run(*args)

    async def delete(self, container_id: str, *, force: bool = False, exited: bool = False) -> None:
        """Idempotent: deleting a container the runtime does not know is not an error."""
        if not self._exists(container_id):
            return
        try:
            await self._run("delete", *(["--force"] if force else []), container_id)
        except RuntimeError_:
            if self._exists(container_id):
                raise

    async def state(self, container_id: str) -> dict[str, object] | None:
        if not self._exists(container_id):
            return None
        try:
            out = await self._run("state", container_id)
        except RuntimeError_:
            if not self._exists(container_id):
                return None
            raise
        value = json.loads(out)
        if not isinstance(value, dict):
            raise RuntimeError_(f"{self.name} state: unexpected output {out[:200]!r}")
        return value

    async def pause(self, container_id: str) -> None:
        await self._run("pause", container_id)

    async def resume(self, container_id: str) -> None:
        await self._run("resume", container_id)

    async def update(self, container_id: str, resources: dict[str, object]) -> None:
        # A file rather than "-" on stdin: not every runtime reads resources from stdin.
        self._make_root()
        fd, name = tempfile.mkstemp(prefix=".update-", suffix=".json", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(resources).encode())
            await self._run("update", "--resources", name, container_id)
        finally:
            os.unlink(name)

    async def list(self) -> list[str]:
        """The runtime's containers, and every other directory under its root: state the
        runtime no longer reads (its status file gone in a crash halfway through a delete or
        a create) is not listed by crun or runc, yet is ours, and `delete --force` removes it."""
        if not self.root.is_dir():
            return []
        out = await self._run("list", "--quiet")
        listed = [line.strip() for line in out.decode().splitlines() if line.strip()]
        broken = sorted(p.name for p in self.root.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and p.name not in listed)
        return listed + broken

    def exec_argv(self, container_id: str, process_json: Path, *, pid_file: Path,
                  detach: bool = False, console_socket: Path | None = None) -> Sequence[str]:
        args = ["exec", "--process", str(process_json), "--pid-file", str(pid_file)]
        if detach:
            args.append("--detach")
        if console_socket is not None:
            args += ["--console-socket", str(console_socket)]
        args.append(container_id)
        return self._wrap_argv("exec", self._argv(*args))

    # -- probe ----------------------------------------------------------------------------

    async def probe(self, work_dir: Path, rootfs: Path) -> ProbeResult:
        """create + start + wait + delete a `true` container. Never raises."""
        result = ProbeResult(name=self.name, path=self.path)
        if shutil.which(self.path) is None:
            result.error = "not installed"
            return result
        if self.wants_pin:
            self.pin_binary()
        container_id = f"asyncdock-probe-{self.name}-{os.urandom(4).hex()}"
        bundle = Path(work_dir) / container_id
        try:
            result.version, result.commit = await self.version_info()
            self.mount_options = await self.features_mount_options()
            bundle.mkdir(parents=True, mode=0o700)
            (bundle / "config.json").write_text(json.dumps(
                probe_spec(Path(rootfs), f"/asyncdock/{container_id}")))
            pid_file = bundle / "init.pid"
            t0 = time.monotonic()
            try:
                await self.create(container_id, bundle, pid_file=pid_file)
                pid = int(pid_file.read_text())
                await self.start(container_id)
                code = await _wait_any_pid(pid, timeout=30)
                result.seconds = round(time.monotonic() - t0, 4)
                if code not in (None, 0):
                    raise RuntimeError_(f"probe container exited with code {code}")
            finally:
                await self.delete(container_id, force=True)
            result.ok = True
        except RuntimeError_ as e:
            result.error = e.message
        except TimeoutError:
            result.error = "the probe container did not exit in time"
        except Exception as e:  # the contract: a probe reports, it never raises
            result.error = f"{type(e).__name__}: {e}"
        finally:
            remove_tree_quietly(bundle)
        return result


def probe_spec(rootfs: Path, cgroups_path: str) -> dict[str, object]:
    """A minimal bundle: `busybox true` in fresh namespaces and a cgroup (the part that fails
    first on a host the runtime cannot handle). Mounts only onto directories the rootfs has,
    so the probe never writes into it."""
    mounts: list[dict[str, object]] = []
    if (rootfs / "proc").is_dir():
        mounts.append({"destination": "/proc", "type": "proc", "source": "proc",
                       "options": ["nosuid", "noexec", "nodev"]})
    if (rootfs / "dev").is_dir():
        mounts.append({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                       "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]})
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0},
                    "args": ["/bin/busybox", "true"], "env": ["PATH=/bin"], "cwd": "/",
                    "noNewPrivileges": True,
                    "capabilities": {k: ["CAP_KILL"] for k in ("bounding", "effective",
                                                               "permitted")}},
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "probe",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path,
            "resources": {"pids": {"limit": 16}},
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        },
    }


async def _wait_any_pid(pid: int, *, timeout: float) -> int | None:
    """Wait for a process that may or may not be our child: its exit code when we are its
    (sub)reaper, else None once it has exited (init reaped it)."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            async with asyncio.timeout(timeout):
                await ready.wait()
        finally:
            loop.remove_reader(fd)
        try:
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return exit_code(status) if wpid else None
    finally:
        os.close(fd)


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` shows -- through a bind mount, the source binary's; the
    empty placeholder once the mount is gone; None once the file is."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _spawn_error(rt: CLIRuntime, e: Exception) -> RuntimeError_:
    if isinstance(e, FileNotFoundError):
        return RuntimeError_(f"{rt.name}: {rt.path}: not installed", returncode=127)
    # SubprocessError: our preexec hook failed in the child (e.g. unshare without privilege).
    return RuntimeError_(f"{rt.name}: cannot run {rt.path}: {e}", returncode=126)


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    # Shielded: a cancelled caller must not leave a zombie runtime process behind.
    await asyncio.shield(proc.wait())
