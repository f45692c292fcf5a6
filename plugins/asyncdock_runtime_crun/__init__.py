"""crun, driven through its CLI (asyncdock.runtime.cli).

crun (1.8) refuses to create any container on a hybrid cgroup host ("cgroups in hybrid mode not
supported, drop all controllers from cgroupv2") as soon as it sees a cgroup2 mount at
/sys/fs/cgroup/unified holding a controller. It works fine with the v1 controllers alone, so
on such hosts crun runs in a mount namespace of its own with that mount detached.
Options:
  pin_binary             run crun from a read-only bind mount of itself (default true; made by
                         the start-up probe, see asyncdock.runtime.pinned): saves crun's
                         self-copy on every command.
  hide_cgroup2           "auto" (default: only on hybrid hosts), "always" or "never".
  hide_cgroup2_commands  "create" (default) or "all".
  fifo_start             start a created container by writing its exec fifo, as `crun start`
                         does, without running crun (default true; see CrunRuntime.start).
  hide_helper            "auto" (default: the built helper if there is one), a path, or "none"
                         (preexec_fn, and unshare(1) for exec).

Only `create` needs it: crun records the container's cgroups in its state then, and start,
kill, pause, resume, update, exec and delete work from that record (measured with crun 1.8.1 on
a hybrid host). Hiding costs an extra exec per command, so the other commands run plainly and
are retried hidden only if one of them fails with the hybrid-mode error. "all" hides every command
for crun versions that would need it.

The namespace is made by a small C helper (hide_cgroup2.c, built at set-up), or, where it
is not built, by a preexec_fn (a full fork of the engine, ~5 ms more per create) and, for the
`exec` the engine spawns itself, util-linux's unshare(1) and a shell.

The namespace is made per command, from the engine's current one, so every mount the engine
made before `create` (the rootfs, volumes) is there. "/" is made a recursive *slave* rather
than private: the detach cannot propagate back to the host, while mounts the host makes later
on shared mounts still reach the rslave/rshared volumes of containers created from it.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from asyncdock.plugins import InitContext, Registration
from asyncdock.runtime.base import ProbeResult, RuntimeError_
from asyncdock.runtime.cgroups import UNIFIED, cgroup_mode
from asyncdock.runtime.cli import CLIRuntime, find_binary
from asyncdock.util.fstree import remove_tree

from .seccomp_cache import SeccompCache

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2


def _make_hide_cgroup2(target: Path) -> Callable[[], None]:
    """A preexec_fn: everything is resolved here, in the parent, so the forked child only makes
    three system calls (no imports, no allocation-heavy work after fork)."""
    libc = ctypes.CDLL(None, use_errno=True)
    unshare, mount, umount2 = libc.unshare, libc.mount, libc.umount2
    get_errno = ctypes.get_errno
    slash = b"/"
    path = os.fsencode(target)

    def hide() -> None:
        if unshare(CLONE_NEWNS) != 0:
            raise OSError(get_errno(), "unshare(CLONE_NEWNS)")
        if mount(None, slash, None, MS_REC | MS_SLAVE, None) != 0:
            raise OSError(get_errno(), "mount(/, MS_REC|MS_SLAVE)")
        if umount2(path, MNT_DETACH) != 0 and get_errno() not in (errno.EINVAL, errno.ENOENT):
            # EINVAL/ENOENT: nothing mounted there (hide_cgroup2="always" on a non-hybrid host)
            raise OSError(get_errno(), f"umount2({target})")

    return hide


HELPER = "asyncdock-hide-cgroup2"


def _write_exec_fifo(fifo: Path) -> None:
    # O_NONBLOCK: ENXIO at once when no init holds the read end (it died), instead of hanging
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.unlink(fifo)
        os.write(fd, b"\0")
    finally:
        os.close(fd)


def _fifo_protocol_known(version: str) -> bool:
    """crun versions whose start is the exec-fifo write (1.x; checked against 1.8.1)."""
    return version.split(".")[0] == "1"


def find_helper() -> str | None:
    """The C helper that hides the cgroup2 mount (hide_cgroup2.c, built by scripts/setup.sh
    next to the venv's python), or None: then a preexec_fn does it."""
    beside = Path(sys.executable).parent / HELPER
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(HELPER)


def _helper(option: object) -> str | None:
    if option in (None, "", "auto"):
        return find_helper()
    if option == "none":
        return None
    return str(option)


def _hidden_commands(option: object) -> str:
    if option in (None, "", "create"):
        return "create"
    if option == "all":
        return "all"
    raise ValueError(f"crun: invalid hide_cgroup2_commands option {option!r} (create, all)")


def wants_hiding(option: object) -> bool:
    if option in (True, "always", "true", "yes", "1"):
        return True
    if option in (False, "never", "false", "no", "0"):
        return False
    if option not in (None, "", "auto"):
        raise ValueError(f"crun: invalid hide_cgroup2 option {option!r} (auto, always, never)")
    return cgroup_mode() == "hybrid"


class CrunRuntime(CLIRuntime):
    def __init__(self, *, name: str, path: str, root: Path, runtime_args: list[str],
                 hide_cgroup2: bool, hide_commands: str = "create",
                 helper: str | None = None, fifo_start: bool = True) -> None:
        super().__init__(name=name, path=path, root=root, runtime_args=runtime_args)
        self.hide_cgroup2 = hide_cgroup2
        self.hide_all = hide_commands == "all"
        self._hide = _make_hide_cgroup2(UNIFIED) if hide_cgroup2 else None
        self.helper = helper if hide_cgroup2 else None
        self._unshare = find_binary("unshare")
        self._sh = find_binary("sh")
        self.seccomp_cache = SeccompCache(self.root)
        # start by writing the exec fifo ourselves (see start()); the probe turns it off for a
        # crun whose version is not known to use that protocol
        self.fifo_start = fifo_start
        self._cli_start: set[str] = set()  # containers with poststart hooks: `crun start` runs them
        # containers whose delete after their exit is only the removal of crun's state (see delete())
        self._plain_delete: set[str] = set()

    def prepare_spec(self, container_id: str, spec: dict[str, object]) -> None:
        self.seccomp_cache.apply(container_id, spec)  # type: ignore[arg-type]
        hooks = spec.get("hooks")
        hooks = hooks if isinstance(hooks, dict) else {}
        if hooks.get("poststart"):
            self._cli_start.add(container_id)
        else:
            self._cli_start.discard(container_id)
        linux = spec.get("linux")
        if hooks.get("poststop") or (isinstance(linux, dict) and linux.get("intelRdt")):
            self._plain_delete.discard(container_id)
        else:
            self._plain_delete.add(container_id)

    async def start(self, container_id: str) -> None:
        """`crun start` is, for a container without poststart hooks, one write: the created
        init blocks reading `<state>/<id>/exec.fifo`, and start opens it for writing, unlinks it
        and writes one byte (libcrun_status_write_exec_fifo; unchanged from crun 0.x to 1.x).
        Doing that here saves a crun process (~4 ms, the dynamic loading of crun and its ten
        libraries) on every start. Anything unexpected -- no fifo, no reader because the init
        is gone -- falls back to `crun start`, which reports it as crun does."""
        if self.fifo_start and container_id not in self._cli_start:
            try:
                _write_exec_fifo(self.root / container_id / "exec.fifo")
                return
            except OSError:
                pass
        await super().start(container_id)

    async def delete(self, container_id: str, *, force: bool = False, exited: bool = False) -> None:
        """`crun delete` of a stopped container (libcrun's container_delete_internal) removes
        its cgroups, runs its poststop hooks, undoes Intel RDT and removes its state
        directory. After an exit the engine reaped and whose cgroups it removed, of a container
        whose spec (seen by prepare_spec in this process) has no poststop hooks and no Intel
        RDT, that leaves the directory: removed here, one crun process fewer per container.
        Otherwise, or on any error, `crun delete`."""
        plain = exited and container_id in self._plain_delete
        self._plain_delete.discard(container_id)
        if plain:
            try:
                await asyncio.to_thread(remove_tree, self.root / container_id, missing_ok=False)
                return
            except FileNotFoundError:
                return
            except OSError:
                pass
        await super().delete(container_id, force=force, exited=exited)

    async def probe(self, work_dir: Path, rootfs: Path) -> ProbeResult:
        # decided before the probe container is started (through start() itself)
        if self.fifo_start and shutil.which(self.path) is not None:
            try:
                self.fifo_start = _fifo_protocol_known(await self.version())
            except RuntimeError_:
                self.fifo_start = False
        return await super().probe(work_dir, rootfs)

    async def features_mount_options(self) -> frozenset[str] | None:
        listed = await super().features_mount_options()
        if listed is not None:
            return listed
        # crun has `rro` since 1.4 (and `features` only later: 1.8.1 has none); checked with 1.8.1
        try:
            major, minor = (int(x) for x in (await self.version()).split(".")[:2])
        except (ValueError, RuntimeError_):
            return None
        return frozenset({"rro"}) if (major, minor) >= (1, 4) else None

    def _created(self, container_id: str, *, ok: bool) -> None:
        if ok:
            self.seccomp_cache.created(container_id)
        else:
            self.seccomp_cache.failed(container_id)

    def _hides(self, command: str, retry: bool) -> bool:
        return self.hide_cgroup2 and (command == "create" or retry or self.hide_all)

    def _preexec(self, command: str, retry: bool) -> Callable[[], None] | None:
        if self._hides(command, retry) and self.helper is None:
            return self._hide
        return None

    def _retryable(self, command: str, message: str) -> bool:
        return self.hide_cgroup2 and "hybrid mode" in message

    def _wrap_argv(self, command: str, argv: list[str], retry: bool = False) -> list[str]:
        if not self._hides(command, retry):
            return argv
        if self.helper is not None:
            return [self.helper, str(UNIFIED), *argv]
        if command != "exec":
            return argv  # the preexec_fn hides it
        # No helper, and the engine spawns `crun exec` itself: the namespace is made by
        # util-linux's unshare(1) and a shell; `exec` keeps crun's pid the one the engine got.
        return [self._unshare, "--mount", "--propagation", "slave", "--", self._sh, "-c",
                f'umount -l {UNIFIED} && exec "$@"', "sh", *argv]


def factory(ctx: InitContext) -> CrunRuntime:
    opts = ctx.options
    rt = CrunRuntime(name=str(opts.get("name") or "crun"),
                       path=str(opts.get("path") or find_binary("crun")),
                       root=Path(ctx.root), runtime_args=list(opts.get("runtime_args") or ()),
                       hide_cgroup2=wants_hiding(opts.get("hide_cgroup2", "auto")),
                       hide_commands=_hidden_commands(opts.get("hide_cgroup2_commands")),
                       helper=_helper(opts.get("hide_helper")),
                       fifo_start=opts.get("fifo_start", True) not in (False, "false", "no", "0"))
    rt.wants_pin = opts.get("pin_binary", True) not in (False, "false", "no", "0")
    return rt


plugin = Registration(kind="runtime", id="crun", factory=factory,
                      description="crun through its CLI (hides a hybrid host's cgroup2 mount)")
