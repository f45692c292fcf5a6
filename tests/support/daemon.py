"""An asyncdock daemon as a subprocess, for integration tests, and the clean-up after it.

`Daemon` starts `asyncdock daemon --host unix://SOCK --data-root DIR --exec-root DIR --config
FILE`, waits for `/_ping`, runs the real docker CLI and docker-py against it, and afterwards
checks that it left nothing behind (mounts under its roots, OCI runtime containers, processes
living in its bundles) before removing everything itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncdock.util.fstree import remove_tree_quietly

from .composecli import link_plugin
from .process import WaitTimeout, forget, spawn, tail, terminate, wait_until

if TYPE_CHECKING:
    # Aliased: inside Daemon, `docker` is the method that runs the CLI.
    import docker as docker_py

DOCKER_CLI = os.environ.get("ASYNCDOCK_DOCKER_CLI", "/usr/local/bin/docker")
START_TIMEOUT = float(os.environ.get("ASYNCDOCK_TEST_START_TIMEOUT", "30"))
# Longer than Docker's default stop timeout (10s) plus margin: a graceful shutdown stops the
# containers first.
STOP_TIMEOUT = float(os.environ.get("ASYNCDOCK_TEST_STOP_TIMEOUT", "45"))
# Sockets have a 108-byte path limit and overlay mount options a page-size limit: keep roots short.
TEST_TMP = os.environ.get("ASYNCDOCK_TEST_TMP", "/tmp")
# Keep each daemon's directory (data root, exec root, log) after the test, for debugging.
KEEP = os.environ.get("ASYNCDOCK_TEST_KEEP", "") not in ("", "0")


def daemon_command() -> list[str]:
    """The asyncdock entry point of the interpreter running the tests (the project's .venv)."""
    override = os.environ.get("ASYNCDOCK_TEST_DAEMON")
    if override:
        return override.split()
    exe = Path(sys.executable).parent / "asyncdock"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "asyncdock.cli.main"]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerCommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
                f"--- stdout ---\n{_text(self.stdout)}\n--- stderr ---\n{_text(self.stderr)}")


def _text(v: str | bytes | None) -> str:
    if v is None:
        return ""
    return v.decode(errors="replace") if isinstance(v, bytes) else v


class Daemon:
    """One daemon (restartable) with its own data root, exec root, socket and docker config.

    `env` is a complete environment for subprocesses (os.environ plus DOCKER_HOST and
    DOCKER_CONFIG, without any DOCKER_CONTEXT/TLS variables that would redirect the CLI).
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        root: Path | None = None,
        debug: bool | None = None,
        extra_args: Sequence[str] = (),
        check_leaks: bool = True,
        docker_cli: str = DOCKER_CLI,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="adt-", dir=TEST_TMP)) if root is None else root
        self.data_root = self.root / "data"
        self.exec_root = self.root / "exec"
        self.socket = self.root / "docker.sock"
        self.config_path = self.root / "daemon.json"
        self.log_path = self.root / "daemon.log"
        self.docker_config = self.root / "docker-config"
        self.config: dict[str, Any] = dict(config or {})
        self.debug = os.environ.get("ASYNCDOCK_TEST_DEBUG", "") not in ("", "0") if debug is None else debug
        self.extra_args = list(extra_args)
        self.check_leaks = check_leaks
        self.docker_cli = docker_cli
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncodes: list[int] = []  # of every run so far, in order
        self.killed = False  # the last run ended by kill9(): leftovers are expected then
        self._clients: list[docker_py.DockerClient] = []
        for d in (self.data_root, self.exec_root, self.docker_config):
            d.mkdir(parents=True, exist_ok=True)
        (self.docker_config / "config.json").write_text("{}\n")
        link_plugin(self.docker_config)  # `docker compose` against this daemon

    # -- environment -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.docker_config)
        return env

    def command(self) -> list[str]:
        cmd = [*daemon_command(), "daemon", "--host", self.host, "--data-root", str(self.data_root),
               "--exec-root", str(self.exec_root), "--config", str(self.config_path)]
        if self.debug:
            cmd.append("--debug")
        return cmd + self.extra_args

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> Daemon:
        if self.running:
            raise RuntimeError("daemon already running")
        self.config_path.write_text(json.dumps(self.config, indent=2) + "\n")
        with self.log_path.open("ab") as log:
            log.write(f"==== start: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = spawn(self.command(), log=log, cwd=self.root)
        self.killed = False
        proc = self.proc
        try:
            wait_until(lambda: proc.poll() is not None or self.ping(), timeout=timeout,
                       what=f"asyncdock /_ping on {self.socket}", on_timeout=lambda: self.log_tail())
        except WaitTimeout:
            self._reap(signal.SIGKILL)
            raise
        if proc.poll() is not None:
            self._reap(signal.SIGKILL)
            raise RuntimeError(f"asyncdock daemon exited with {proc.returncode} during start-up:\n{self.log_tail()}")
        return self

    def ping(self) -> bool:
        try:
            status, body = self.request("GET", "/_ping", timeout=2)
        except OSError:
            return False
        return status == 200 and body.strip() == b"OK"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self, sig: int, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.proc is None:
            return None
        for client in self._clients:
            with contextlib.suppress(Exception):  # a broken client must not mask the shutdown
                client.close()
        self._clients.clear()
        code = terminate(self.proc, timeout=timeout, sig=sig)
        self.returncodes.append(code)
        self.proc = None
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL after `timeout`). Returns the exit status."""
        return self._reap(signal.SIGTERM, timeout)

    def kill9(self) -> int | None:
        """SIGKILL, as a crash would: the next start() must recover from what is left."""
        self.killed = True
        return self._reap(signal.SIGKILL, timeout=10)

    def restart(self, timeout: float = START_TIMEOUT) -> Daemon:
        self.stop()
        return self.start(timeout)

    def exited_unexpectedly(self) -> int | None:
        """The exit status if the daemon died on its own (not through stop/kill9)."""
        if self.proc is not None and self.proc.poll() is not None:
            return self.proc.returncode
        return None

    # -- clients -----------------------------------------------------------------------------
    def docker(
        self,
        *args: str,
        input: str | bytes | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        text: bool | None = None,
    ) -> subprocess.CompletedProcess[Any]:
        """Run the real docker CLI against this daemon. Output is text unless `input` is bytes
        or text=False; a failure (with check) raises DockerCommandError showing both outputs."""
        if text is None:
            text = not isinstance(input, bytes)
        cmd = [self.docker_cli, *map(str, args)]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=text, timeout=timeout,
                              env={**self.env, **(env or {})}, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise DockerCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def client(self, **kwargs: Any) -> docker_py.DockerClient:
        """A docker-py client on this daemon's socket (closed when the daemon stops)."""
        import docker as docker_py  # noqa: F811 - the runtime import of the TYPE_CHECKING alias

        kwargs.setdefault("timeout", 120)
        client = docker_py.DockerClient(base_url=self.host, **kwargs)
        self._clients.append(client)
        return client

    def request(self, method: str, path: str, body: bytes | dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """A raw API request (for what neither the CLI nor docker-py exposes)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = dict(headers or {})
        if isinstance(body, dict):
            hdrs.setdefault("Content-Type", "application/json")
        conn = UnixHTTPConnection(str(self.socket), timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def log_tail(self, lines: int = 80) -> str:
        return f"--- {self.log_path} (last {lines} lines) ---\n{tail(self.log_path, lines)}"

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop the daemon, clean up what it left, remove its directories.

        Returns the problems found: a daemon that died on its own or would not stop, and, after
        a graceful stop, anything left behind (a daemon must unmount and delete its containers
        on SIGTERM). Leftovers after kill9() are cleaned up without complaint.
        """
        problems: list[str] = []
        unexpected = self.exited_unexpectedly()
        if unexpected is not None:
            problems.append(f"daemon exited on its own with status {unexpected}")
            self.returncodes.append(unexpected)
            if self.proc is not None:
                forget(self.proc)
            self.proc = None
            self.killed = True  # its leftovers are a consequence, not a second problem
        elif self.running:
            code = self.stop()
            if code == -signal.SIGKILL:
                problems.append(f"daemon did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM")
                self.killed = True
            elif code is not None and code not in (0, -signal.SIGTERM):
                problems.append(f"daemon exited with status {code} on SIGTERM")
        leftovers = cleanup_roots([self.data_root, self.exec_root])
        if leftovers and self.check_leaks and not self.killed:
            problems += [f"left behind: {item}" for item in leftovers]
        remaining = mounts_under([self.root])
        if remaining:
            # Never rmtree through a mount: it could be a bind mount of the host's files.
            problems.append(f"mounts still present, {self.root} kept: {remaining}")
        elif KEEP:
            print(f"ASYNCDOCK_TEST_KEEP: kept {self.root}")
        else:
            # Iterative: data roots can hold trees deeper than shutil.rmtree can recurse.
            if not remove_tree_quietly(self.root):
                problems.append(f"cannot remove {self.root}")
        return problems


# -- leftovers ---------------------------------------------------------------------------------

def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(roots: Iterable[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first."""
    prefixes = [str(r.resolve()) if r.exists() else str(r) for r in roots]
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape_mountinfo(line.split()[4])
            if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def _runtime_containers(state_root: Path) -> list[tuple[str | None, Path, str]]:
    """(runtime binary or None, its --root, container id) for every container an OCI runtime
    still has state for under `<exec-root>/runtime/<runtime-name>/`."""
    found: list[tuple[str | None, Path, str]] = []
    if not state_root.is_dir():
        return found
    for rt_root in sorted(p for p in state_root.iterdir() if p.is_dir()):
        binary = shutil.which(rt_root.name)
        # runc and crun keep one directory per container; `list` also catches odd layouts.
        ids = {p.name for p in rt_root.iterdir() if p.is_dir()}
        if binary:
            proc = subprocess.run([binary, "--root", str(rt_root), "list", "-q"], capture_output=True, text=True,
                                  timeout=30)
            if proc.returncode == 0:
                ids |= {line.strip() for line in proc.stdout.splitlines() if line.strip()}
        found += [(binary, rt_root, cid) for cid in sorted(ids)]
    return found


def _runtime_state_text(binary: str | None, rt_root: Path, cid: str) -> str:
    """What the runtime says about a leftover (its bundle tells a probe from a container, its
    status and creation time when it was left): for the failure message."""
    if not binary:
        return ""
    try:
        proc = subprocess.run([binary, "--root", str(rt_root), "state", cid], capture_output=True, text=True,
                              timeout=30)
        st = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        return ""
    if not isinstance(st, dict):
        return ""
    return (f"; status {st.get('status')}, pid {st.get('pid')}, created {st.get('created')}, "
            f"bundle {st.get('bundle')}")


def _processes_under(roots: Sequence[Path]) -> list[tuple[int, str]]:
    """Processes whose root, cwd or command line is inside one of `roots` (container processes
    live in rootfs mounts under the exec root; shims name their bundle on the command line)."""
    prefixes = [str(r.resolve()) for r in roots if r.exists()]
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            where = [os.readlink(entry / "root"), os.readlink(entry / "cwd")]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        hit = any(w == p or w.startswith(p + "/") for w in where for p in prefixes)
        hit = hit or any(p + "/" in cmdline for p in prefixes)
        if hit:
            found.append((int(entry.name), cmdline[:200]))
    return found


def cleanup_roots(roots: Sequence[Path]) -> list[str]:
    """Remove what a stopped daemon left under its roots; describe each thing removed.

    Order matters: runtime containers first (`delete --force` kills their processes and
    frees their cgroups), then stray processes, then mounts (busy until their users are gone).
    """
    left: list[str] = []
    for root in roots:
        for binary, rt_root, cid in _runtime_containers(root / "runtime"):
            left.append(f"runtime container {cid} (state in {rt_root}{_runtime_state_text(binary, rt_root, cid)})")
            if binary:
                subprocess.run([binary, "--root", str(rt_root), "delete", "--force", cid], capture_output=True,
                               timeout=60)
    procs = _processes_under(roots)
    for pid, cmdline in procs:
        left.append(f"process {pid}: {cmdline}")
        with contextlib.suppress(OSError):  # it may have exited meanwhile
            os.kill(pid, signal.SIGKILL)
    if procs:
        wait_until(lambda: not _processes_under(roots), timeout=10, what="leftover processes to die")
    for point in mounts_under(roots):
        left.append(f"mount {point}")
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    for root in roots:
        left += remove_network_leftovers(root)
    return left


def remove_network_leftovers(data_root: Path) -> list[str]:
    """Links and nftables chains tagged for the daemon of `data_root` (what a daemon killed and
    never restarted leaves in the kernel); removes them and describes each. Another daemon's
    things carry another tag and are left alone."""
    from tests.support import netcheck

    tag = netcheck.daemon_tag(data_root)
    left: list[str] = []
    for name in netcheck.our_links(tag):
        left.append(f"link {name}")
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=30)
    for chain in netcheck.our_chains(tag):
        left.append(f"nftables chain {chain}")
        subprocess.run(["nft", "delete", "chain", "ip", "asyncdock", chain], capture_output=True,
                       timeout=30)
    if left and not netcheck.all_chains():
        # the table is ours too; gone once no daemon has chains in it
        subprocess.run(["nft", "delete", "table", "ip", "asyncdock"], capture_output=True, timeout=30)
    return left
