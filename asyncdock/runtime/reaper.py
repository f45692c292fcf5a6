"""Exit statuses of container processes, collected by the engine as their child subreaper.

Containers are created detached: `<rt> create` forks the container's init and exits, so the
init is re-parented to the nearest ancestor that set PR_SET_CHILD_SUBREAPER -- the engine.
`ExitWatcher.wait(pid)` then waits on a pidfd (no thread, no SIGCHLD handler) and reaps exactly
that pid. We never call waitpid(-1): asyncio's child watchers reap their own subprocesses by pid,
and a wildcard wait here would steal their statuses (and theirs ours).
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

# Docker reports 255 when an exit status is unknowable (the process was reaped elsewhere).
UNKNOWN_EXIT = 255

# A pid that exited while still parented by the runtime (see ExitWatcher._on_ready) is retried
# when that parent exits, and -- in case it cannot be watched -- on a timer doubling up to the cap.
_RETRY_FIRST = 0.001
_RETRY_CAP = 0.5


def set_child_subreaper(enabled: bool = True) -> None:
    """Make this process the subreaper of its descendants (idempotent), or stop being one."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_child_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return value.value != 0


def exit_code(status: int) -> int:
    """Docker's exit code for a wait status: the code, or 128+signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _still_exists(pidfd: int) -> bool:
    """True while the process exists, zombie included (signal 0 succeeds on a zombie)."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proc_stat(pid: int | str) -> tuple[bytes, int] | None:
    """(state letter, ppid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    rest = data[data.rfind(b")") + 2:].split()
    return (rest[0], int(rest[1])) if len(rest) >= 2 else None


def _parent_of(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[1] if st else None


class _Watch:
    __slots__ = ("pid", "fd", "future", "delay", "timer", "parent_fd")

    def __init__(self, pid: int, fd: int, future: asyncio.Future[int]) -> None:
        self.pid = pid
        self.fd = fd
        self.future = future
        self.delay = _RETRY_FIRST
        self.timer: asyncio.TimerHandle | None = None
        self.parent_fd: int | None = None


class ExitWatcher:
    """Waits for (and reaps) container processes by pid. One per engine, on the engine's loop."""

    def __init__(self, *, subreaper: bool = True) -> None:
        if subreaper:
            set_child_subreaper()
        self._watches: dict[int, _Watch] = {}
        # Zombies seen by the previous reap_orphans() sweep (see there).
        self._orphans_seen: set[int] = set()

    # -- waiting ---------------------------------------------------------------------------

    def watch(self, pid: int) -> asyncio.Future[int]:
        """Start watching `pid` now (synchronously, so that reap_orphans() leaves it alone) and
        return a future of its exit code; every watcher of a pending pid shares that future.
        Call it as soon as the runtime reports the pid and keep the future: once reaped, the pid
        may be reused by an unrelated process, so statuses are not looked up by pid later."""
        loop = asyncio.get_running_loop()
        existing = self._watches.get(pid)
        if existing is not None:
            return existing.future
        fut: asyncio.Future[int] = loop.create_future()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Gone before we looked, and not left as our zombie: someone else reaped it.
            log.warning("process %d vanished before it could be watched", pid)
            fut.set_result(UNKNOWN_EXIT)
            return fut
        w = _Watch(pid, fd, fut)
        self._watches[pid] = w
        loop.add_reader(fd, self._on_ready, w)
        return fut

    async def wait(self, pid: int) -> int:
        """Exit code of `pid` in Docker's terms (status, or 128+signal). Cancelling the wait
        does not stop the watch: the zombie is still reaped and the shared future resolved."""
        return await asyncio.shield(self.watch(pid))

    def send_signal(self, pid: int, sig: int) -> bool:
        """Signal a watched process through its pidfd: no runtime process to spawn, and no
        risk of hitting a reused pid. False when `pid` is not watched (the caller asks the
        runtime); a process that already exited is not an error."""
        w = self._watches.get(pid)
        if w is None:
            return False
        try:
            signal.pidfd_send_signal(w.fd, sig)
        except ProcessLookupError:
            pass
        return True

    def watching(self) -> frozenset[int]:
        return frozenset(self._watches)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for w in list(self._watches.values()):
            self._finish(loop, w, None)

    def _on_ready(self, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        try:
            wpid, status = os.waitpid(w.pid, os.WNOHANG)
        except ChildProcessError:
            # Readable but not ours: the process exited while its runtime (`runc create`,
            # `runc exec`) still parented it. When the runtime exits, the zombie is
            # re-parented to us and becomes waitable; unless the runtime reaped it itself,
            # in which case the process is gone for good and its status lost.
            if not _still_exists(w.fd):
                log.warning("exit status of process %d was collected by another process", w.pid)
                self._finish(loop, w, UNKNOWN_EXIT)
                return
            self._watch_parent(loop, w)
            self._retry_later(loop, w)
            return
        if wpid == 0:
            # Not waitable yet although the pidfd says it exited (a thread-group leader whose
            # other threads are still exiting): retry shortly.
            self._retry_later(loop, w)
            return
        self._finish(loop, w, exit_code(status))

    def _retry_later(self, loop: asyncio.AbstractEventLoop, w: _Watch) -> None:
        # A pidfd stays readable, so keep the reader off until the retry or we would spin.
        loop.remove_reader(w.fd)
        if w.timer is None:
            w.timer = loop.call_later(w.delay, self._retry, w)
            w.delay = min(w.delay * 2, _RETRY_CAP)

    def _watch_parent(self, loop: asyncio.AbstractEventLoop, w: _Watch) -> None:
        """Retry the moment the current parent exits: the kernel re-parents its children
        before the parent's own exit becomes visible on its pidfd."""
        ppid = _parent_of(w.pid)
        if ppid is None or ppid == os.getpid() or w.parent_fd is not None:
            return
        try:
            w.parent_fd = os.pidfd_open(ppid)
        except OSError:
            return  # already gone: the timer retries
        loop.add_reader(w.parent_fd, self._retry, w)

    def _drop_parent(self, loop: asyncio.AbstractEventLoop, w: _Watch) -> None:
        if w.parent_fd is not None:
            loop.remove_reader(w.parent_fd)
            os.close(w.parent_fd)
            w.parent_fd = None

    def _retry(self, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        self._drop_parent(loop, w)
        if self._watches.get(w.pid) is w:
            loop.add_reader(w.fd, self._on_ready, w)

    def _finish(self, loop: asyncio.AbstractEventLoop, w: _Watch, code: int | None) -> None:
        self._watches.pop(w.pid, None)
        if w.timer is not None:
            w.timer.cancel()
        self._drop_parent(loop, w)
        loop.remove_reader(w.fd)
        os.close(w.fd)
        if w.future.done():
            return
        if code is None:
            w.future.cancel()
        else:
            w.future.set_result(code)

    # -- orphans ---------------------------------------------------------------------------

    def reap_orphans(self) -> list[int]:
        """Reap zombie children nobody waits for; returns their pids. Call it periodically
        (every ~30 s is plenty).

        Why zombies accumulate at all: as subreaper we inherit every orphan below us, not just
        container inits -- e.g. the processes of a `--pid host` container whose init exited
        (nothing kills them, so they are re-parented to us when they outlive it), or daemons
        started by a detached exec. Nobody calls wait for those.

        Why not simply waitpid(-1): that would also collect asyncio's own subprocesses. So only
        a zombie that (a) is no watched pid and (b) was already a zombie at the previous sweep
        is reaped: asyncio's watchers reap their children at once, so a zombie that outlives a
        whole sweep interval is one nobody will ever collect.
        """
        zombies = set(_zombie_children())
        reaped: list[int] = []
        for pid in zombies & self._orphans_seen:
            if pid in self._watches:
                continue
            try:
                wpid, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if wpid:
                reaped.append(pid)
        if reaped:
            log.debug("reaped orphaned zombies: %s", reaped)
        self._orphans_seen = zombies - set(reaped) - set(self._watches)
        return reaped


def _zombie_children() -> list[int]:
    """Pids of our zombie children. /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN,
    which many kernels lack, so scan /proc for PPid == us."""
    me = os.getpid()
    found: list[int] = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _proc_stat(name)
            if st is not None and st == (b"Z", me):
                found.append(int(name))
    return found
