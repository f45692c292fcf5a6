"""`asyncdock daemon`: configuration, the data-root and exec-root locks, signals, the engine and the API
server."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
import sys
from pathlib import Path

from .config import DEFAULT_SOCKET, DaemonConfig, load_config
from .rootlock import LockHeld, RootLock, acquire

log = logging.getLogger("asyncdock.daemon")


def socket_in_use(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket at `path` (another daemon's):
    then it must not be unlinked and taken over."""
    import socket

    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(2)
    try:
        s.connect(str(path))
    except OSError:
        return False  # a socket file nobody listens on: left by a daemon that died
    finally:
        s.close()
    return True


def acquire_locks(config: DaemonConfig) -> list[RootLock]:
    """The data-root and the exec-root, each for this daemon alone (see asyncdock.rootlock)."""
    locks = [acquire(Path(config.data_root), "engine.lock", what="data-root", flag="--data-root",
                     hosts=config.hosts)]
    try:
        locks.append(acquire(Path(config.exec_root), "exec-root.lock", what="exec-root",
                             flag="--exec-root", hosts=config.hosts))
    except BaseException:
        locks[0].release()
        raise
    return locks


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
        locks = acquire_locks(config)
    except LockHeld as e:
        print(e.code, file=sys.stderr)
        return 1
    for host in config.hosts:
        if host.startswith("unix://") and socket_in_use(Path(host[len("unix://"):])):
            print(f"asyncdock: another daemon is listening on {host}; stop it or pass a different --host",
                  file=sys.stderr)
            for lock in locks:
                lock.release()
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
        for lock in locks:
            lock.release()
    return 0
