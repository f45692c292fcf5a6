"""`docker exec`: extra processes in a running container, through the runtime's `exec`.

The process starts detached (`<runtime> exec --detach`) with pipes or a console socket for its
stdio, exactly like a container's init: the runtime exits at once and the engine, as child
subreaper, inherits the process, watches and reaps it. Its `process.json` is the container's
own process (user, capabilities, rlimits, noNewPrivileges, apparmor) with the exec's argv, env,
cwd, user and terminal; seccomp and namespaces are the container's, kept by the runtime.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ..base import errors
from ..util.errtext import os_error_text
from ..base.ids import new_id
from .models import ContainerRecord
from .execstore import ExecConfig, ExecInstance, ExecStartConfig
from .stdio import StdinSide, open_stdio_pipes, start_stdio_pipes

if TYPE_CHECKING:
    from .supervisor import Supervisor

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0


def _not_running(rec: ContainerRecord) -> errors.EngineError:
    return errors.Conflict(f"Container {rec.id} is not running")


def create_exec(mgr: Supervisor, rec: ContainerRecord, cfg: ExecConfig) -> ExecInstance:
    if not rec.state.running or rec.state.restarting:
        raise _not_running(rec)
    if rec.state.paused:
        raise errors.Conflict(f"Container {rec.id} is paused, unpause the container before exec")
    if not cfg.cmd:
        raise errors.InvalidParameter("No exec command specified")
    if cfg.detach_keys:
        from .tty import parse_detach_keys

        parse_detach_keys(cfg.detach_keys)
    ex = ExecInstance(id=new_id(), container_id=rec.id, config=cfg)
    mgr.execs.add(ex)
    mgr.publish(rec, "exec_create: " + " ".join(cfg.cmd), execID=ex.id)
    return ex


def _replace_env(base: list[str], extra: list[str]) -> list[str]:
    out = list(base)
    index = {e.split("=", 1)[0]: i for i, e in enumerate(out)}
    for e in extra:
        k = e.split("=", 1)[0]
        if k in index:
            out[index[k]] = e
        else:
            index[k] = len(out)
            out.append(e)
    return out


def build_process(base: dict[str, Any], cfg: ExecConfig, root: Path) -> dict[str, Any]:
    """process.json for `runtime exec`, from the container's config.json `process`."""
    from .spec import resolve_user, tweak_capabilities

    proc = dict(base)
    proc.pop("consoleSize", None)
    proc["terminal"] = cfg.tty
    proc["args"] = list(cfg.cmd or [])
    env = _replace_env(list(base.get("env") or []), list(cfg.env or []))
    if cfg.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    proc["env"] = env
    if cfg.working_dir:
        proc["cwd"] = cfg.working_dir
    user = dict(base.get("user") or {"uid": 0, "gid": 0})
    if cfg.user:
        uid, gid, extra = resolve_user(root, cfg.user)
        user = {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra else {})}
    proc["user"] = user
    caps = dict(base.get("capabilities") or {})
    bounding = list(caps.get("bounding") or [])
    if cfg.privileged:
        bounding = tweak_capabilities([], [], True)
    if user.get("uid", 0) == 0:
        proc["capabilities"] = {"bounding": bounding, "effective": bounding, "permitted": bounding}
    else:
        proc["capabilities"] = {"bounding": bounding}
    if cfg.console_size and cfg.tty and len(cfg.console_size) == 2 and all(cfg.console_size):
        proc["consoleSize"] = {"height": cfg.console_size[0], "width": cfg.console_size[1]}
    return proc


def _exec_error(message: str) -> tuple[errors.EngineError, int]:
    """Docker's wording, and the exit code and error kind of moby's setExitCodeFromError (Docker
    28 and later keep its code for the exec: 127 for a missing command, as `run`; 126, the
    default of an exec that did not start, only where nothing more precise was found)."""
    text = f"OCI runtime exec failed: exec failed: {message}: unknown"
    low = text.lower()
    if "permission denied" in low:
        return errors.InvalidParameter(text), 126
    if "is a directory" in low:
        return errors.InvalidParameter(text + ": permission denied"), 126
    if "not a directory" in low:
        return errors.InvalidParameter(
            text + ": Are you trying to mount a directory onto a file (or vice-versa)? Check if the "
            "specified host path exists and is the expected type"), 127
    if any(m in low for m in ("executable file not found", "no such file or directory",
                              "system cannot find the file specified", "failed to run runc create/exec call")):
        return errors.InvalidParameter(text), 127
    return errors.SystemError_(text), 128


class ExecStartError(Exception):
    def __init__(self, error: errors.EngineError, exit_code: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.exit_code = exit_code


async def start_exec(mgr: Supervisor, ex: ExecInstance, *, discard_output: bool = False) -> None:
    """Start the process; output goes to `ex.hub`. Raises ExecStartError (exit code recorded)
    or an EngineError before anything ran."""
    from ..runtime.base import RuntimeError_
    from ..runtime.cli import last_logged_error
    from .spec import ExecutableError, find_executable, path_from_env
    from .tty import ConsoleSocket, setup_console

    rec = mgr.get(ex.container_id)
    lv = mgr.live(rec)
    if not rec.state.running or not lv.pid:
        raise _not_running(rec)
    rt = mgr.runtimes[rec.runtime]
    bundle = mgr.bundles / rec.id
    cfg = ex.config
    argv0 = (cfg.cmd or [""])[0]
    root = Path(f"/proc/{lv.pid}/root")
    mgr.publish(rec, "exec_start: " + " ".join(cfg.cmd or []), execID=ex.id)

    def fail(err: errors.EngineError, code: int) -> ExecStartError:
        ex.exit_code = code
        ex.running = False
        ex.finished_ns = time.time_ns()
        ex.hub.close()
        ex.done_event.set()
        ex.running_event.set()
        mgr.publish(rec, "exec_die", execID=ex.id, exitCode=str(code))
        return ExecStartError(err, code)

    try:
        base = json.loads((bundle / "config.json").read_bytes())["process"]
        process = await asyncio.to_thread(build_process, base, cfg, root)
        await asyncio.to_thread(find_executable, root, argv0, path_from_env(process["env"]), process.get("cwd", "/"))
    except ExecutableError as e:
        raise fail(*_exec_error(f"unable to start container process: {e.message}")) from None
    except errors.EngineError as e:
        raise fail(e, 126) from None
    except OSError as e:
        raise fail(errors.SystemError_(f"exec failed: {os_error_text(e)}"), 126) from None

    work = bundle / f"exec-{ex.id[:16]}"
    work.mkdir(exist_ok=True)
    process_json = work / "process.json"
    pid_file = work / "pid"
    log_file = work / "log.json"
    process_json.write_bytes(json.dumps(process).encode())
    opened: list[int] = []
    cs: ConsoleSocket | None = None
    receiving: asyncio.Future[int] | None = None
    try:
        if cfg.tty:
            cs = ConsoleSocket()
            receiving = asyncio.ensure_future(cs.receive())
            stdio: tuple[int, int, int] | tuple[Any, Any, Any] = (subprocess.DEVNULL,) * 3
        elif discard_output:
            stdio = (subprocess.DEVNULL,) * 3
        else:
            pipes = open_stdio_pipes(cfg.attach_stdin, opened)
            stdio = pipes.child
        argv = list(rt.exec_argv(rec.id, process_json, pid_file=pid_file, detach=True,
                                 console_socket=cs.path if cs else None))
        # errors to a JSON log file (the process's stderr may be the container's pipe)
        at = argv.index("exec")
        argv[at:at] = ["--log", str(log_file), "--log-format", "json"]
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
        except OSError as e:
            raise fail(errors.SystemError_(f"exec failed: {os_error_text(e)}"), 126) from None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                rc = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if rc != 0:
            msg = last_logged_error(log_file) or f"{rt.name} exec failed with exit code {rc}"
            msg = msg.removeprefix("exec failed: ")
            raise fail(*_exec_error(msg))
        pid = int(pid_file.read_text().strip())
        exit_future = mgr.exits.watch(pid)
        ex.pid = pid
        ex.running = True
        if cfg.tty:
            assert receiving is not None
            master = await asyncio.wait_for(receiving, 30)
            console, output_done, writer = await setup_console(master, ex.hub, None)
            ex.console = console
            if cfg.attach_stdin:
                ex.stdin_w = writer
            else:
                writer.close()
        elif discard_output:
            output_done = []
        else:
            output_done, stdin = await start_stdio_pipes(pipes, opened, ex.hub, None)
            if stdin is not None:
                ex.stdin_w = stdin
    except RuntimeError_ as e:
        raise fail(*_exec_error(e.message)) from None
    finally:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)
        if receiving is not None and not receiving.done():
            receiving.cancel()
        if cs is not None:
            cs.close()
        with contextlib.suppress(OSError):
            for p in (process_json, pid_file, log_file):
                p.unlink(missing_ok=True)
            work.rmdir()
    ex.running_event.set()
    mgr.spawn(_monitor(mgr, rec, ex, exit_future, output_done))


async def _monitor(mgr: Supervisor, rec: ContainerRecord, ex: ExecInstance,
                   exit_future: asyncio.Future[int], output_done: list[asyncio.Future[None]]) -> None:
    lv = mgr.live(rec)
    # Exec processes do not outlive their container (with `--pid host` nothing else kills them).
    container_exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    lv.exit_waiters.append(container_exit)
    try:
        await asyncio.wait({exit_future, container_exit}, return_when=asyncio.FIRST_COMPLETED)
        if not exit_future.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(ex.pid, signal.SIGKILL)
        code = await asyncio.shield(exit_future)
        if output_done:
            await asyncio.wait(output_done, timeout=2)
    finally:
        if container_exit in lv.exit_waiters:
            lv.exit_waiters.remove(container_exit)
    ex.exit_code = code
    ex.running = False
    ex.finished_ns = time.time_ns()
    if ex.stdin_w is not None:
        ex.stdin_w.close()
        ex.stdin_w = None
    ex.hub.close()
    ex.done_event.set()
    mgr.publish(rec, "exec_die", execID=ex.id, exitCode=str(code))


def claim_start(mgr: Supervisor, ex: ExecInstance, body: ExecStartConfig) -> None:
    """What `exec start` checks before anything runs, then marks: an exec starts once, in a
    running container that is not paused."""
    if ex.started:
        if ex.running:
            raise errors.Conflict(f"Error: Exec command {ex.id} is already running")
        raise errors.Conflict(f"Error: Exec command {ex.id} has already run")
    rec = mgr.get(ex.container_id)
    if not rec.state.running:
        raise _not_running(rec)
    if rec.state.paused:
        raise errors.Conflict(f"Container {rec.id} is paused, unpause the container before exec")
    ex.started = True
    if body.console_size and not ex.config.console_size:
        ex.config.console_size = body.console_size


async def start_detached(mgr: Supervisor, ex: ExecInstance) -> None:
    """`exec start` with Detach: no client reads the output, so without a TTY it is not even piped."""
    try:
        await start_exec(mgr, ex, discard_output=not ex.config.tty)
    except ExecStartError as e:
        raise e.error from None


def exec_stdin(ex: ExecInstance) -> StdinSide | None:
    """The exec's stdin for an attached session (AttachStdin); a client's EOF closes it."""
    if not ex.config.attach_stdin:
        return None

    def close_stdin() -> None:
        w = ex.stdin_w
        if w is not None:
            ex.stdin_w = None
            w.close()

    async def ready() -> None:
        return None

    return StdinSide(ready, lambda: ex.stdin_w, close_stdin)


async def resize_exec(ex: ExecInstance, query: dict[str, str]) -> None:
    from .tty import resize

    # The CLI resizes right after start: answer once the process exists (as moby).
    if not ex.running_event.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ex.running_event.wait(), 10)
    if not ex.running:
        if ex.exit_code is not None:
            return
        raise errors.Conflict(f"Exec {ex.id} is not running")
    resize(ex.console, query)
