"""`asyncdock daemon`: configuration, the data-root lock, signals, the engine and the API server."""
from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

from .config import DEFAULT_SOCKET, DaemonConfig, load_config

log = logging.getLogger("asyncdock.daemon")


class LockHeld(SystemExit):
    pass


def acquire_lock(data_root: Path) -> int:
    """One daemon per data-root: an flock that the kernel drops when the process dies, so a crash
    never leaves a stale lock behind."""
    data_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    path = data_root / "engine.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            other = os.pread(fd, 32, 0).decode().strip()
        except OSError:
            other = "?"
        os.close(fd)
        raise LockHeld(f"asyncdock: another daemon (pid {other or '?'}) is using data-root {data_root}; "
                       f"stop it or pass a different --data-root")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="asyncdock daemon", description="Run the asyncdock engine")
    p.add_argument("-H", "--host", action="append", help=f"unix://PATH to listen on (default unix://{DEFAULT_SOCKET})")
    p.add_argument("--data-root", help="where state lives (default /var/lib/asyncdock)")
    p.add_argument("--exec-root", help="where runtime state lives (default /run/asyncdock)")
    p.add_argument("--config", "--config-file", dest="config", help="daemon.json-style config file")
    p.add_argument("--default-runtime", help="OCI runtime for containers that name none")
    p.add_argument("--storage-driver", help="overlayfs (default when the kernel has it) or copy")
    p.add_argument("-D", "--debug", action="store_true", default=None, help="debug logging")
    return p.parse_args(argv)


def setup_logging(debug: bool) -> None:
    # Structured, quiet by default: one logfmt-style line per record on stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('time="%(asctime)s" level=%(levelname)s logger=%(name)s msg="%(message)s"'))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("asyncdock").setLevel(logging.DEBUG if debug else logging.INFO)


def dump_tasks() -> None:
    import io

    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    log.warning("task dump:\n%s", out.getvalue())


async def serve(config: DaemonConfig) -> None:
    from .api.server import ApiServer, App
    from .engine import Engine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Like dockerd's SIGUSR1 goroutine dump: every task's stack, to the log.
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    engine = Engine(config)
    await engine.start()
    server = ApiServer(App(engine))
    try:
        for host in config.hosts:
            if not host.startswith("unix://"):
                raise SystemExit(f"asyncdock: only unix:// hosts are supported, not {host}")
            await server.listen_unix(host[len("unix://"):])
        log.info("API listening on %s", ", ".join(config.hosts))
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.close()
        await engine.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    config = load_config(args.config, data_root=args.data_root, exec_root=args.exec_root,
                         default_runtime=args.default_runtime, storage_driver=args.storage_driver,
                         debug=args.debug)
    if args.host:
        config.hosts = args.host
    setup_logging(config.debug)
    if os.geteuid() != 0:
        print("asyncdock: the daemon needs root (mounts, namespaces, cgroups)", file=sys.stderr)
        return 1
    try:
        lock_fd = acquire_lock(Path(config.data_root))
    except LockHeld as e:
        print(e.code, file=sys.stderr)
        return 1
    try:
        runner = asyncio.run
        if os.environ.get("ASYNCDOCK_UVLOOP") == "1":  # opt-in until the benchmarks decide
            import uvloop

            runner = uvloop.run
        runner(serve(config))
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        raise
    finally:
        os.close(lock_fd)
    return 0
