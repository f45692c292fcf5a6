"""Pseudo-terminals: the master the OCI runtime hands over through its console socket, held by
the engine (resize, stdin) while the output is pumped like a pipe; and Docker's detach keys."""
from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import tempfile
import termios
from pathlib import Path

from ..base import errors
from ..util.fstree import remove_tree_quietly

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q
CONSOLE_TIMEOUT = 60.0


class ConsoleSocket:
    """`--console-socket`: a listening Unix socket the runtime connects to once, sending the pty
    master with SCM_RIGHTS. Kept in a short private directory of its own: socket paths are
    limited to 108 bytes, and the bundle path of a 64-hex id under a test root is not."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="adtty-"))
        self.path = self.dir / "c.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(str(self.path))
            self.sock.listen(1)
            self.sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    async def receive(self) -> int:
        """The master fd (close-on-exec), once the runtime sent it."""
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self.sock)
        with conn:
            conn.setblocking(False)
            while True:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
                except (BlockingIOError, InterruptedError):
                    fut: asyncio.Future[None] = loop.create_future()
                    loop.add_reader(conn.fileno(), lambda: fut.done() or fut.set_result(None))
                    try:
                        await fut
                    finally:
                        loop.remove_reader(conn.fileno())
                    continue
                if fds:
                    for extra in fds[1:]:
                        os.close(extra)
                    os.set_inheritable(fds[0], False)
                    return fds[0]
                if not msg:
                    raise OSError("the runtime closed the console socket without sending a terminal")

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            remove_tree_quietly(self.dir)


class Console:
    """The engine's handle on a pty master: `fd` is a private duplicate used for resizes (the
    output pump and the stdin writer own duplicates of their own)."""

    def __init__(self, master: int) -> None:
        self.fd = master
        self.closed = False

    def resize(self, height: int, width: int) -> None:
        if self.closed:
            return
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass


async def setup_console(master: int, hub: object, log_emit: object) -> tuple[Console, list[asyncio.Future[None]], asyncio.WriteTransport]:
    """Pump the master's output into `hub` (as stdout, raw) and open a writer for stdin.
    Takes ownership of `master`."""
    from .stdio import STDOUT, pump_output

    loop = asyncio.get_running_loop()
    console = Console(master)
    try:
        read_fd = os.dup(master)
        write_fd = os.dup(master)
    except OSError:
        console.close()
        raise
    os.set_blocking(master, False)
    done = await pump_output({STDOUT: read_fd}, hub, log_emit)  # type: ignore[arg-type]
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(write_fd, "wb", buffering=0))
    # The master goes with the output: once the slave side is gone there is nothing to resize.
    done[0].add_done_callback(lambda _f: console.close())
    return console, done, transport  # type: ignore[return-value]


def resize(console: Console | None, req_query: dict[str, str]) -> None:
    try:
        h = int(req_query.get("h", "0") or 0)
        w = int(req_query.get("w", "0") or 0)
    except ValueError:
        raise errors.InvalidParameter("strconv.Atoi: parsing: invalid syntax") from None
    if h < 0 or w < 0 or h > 65535 or w > 65535:
        raise errors.InvalidParameter("invalid terminal size")
    if console is None:
        return
    try:
        console.resize(h, w)
    except OSError as e:
        raise errors.SystemError_(f"resize: {e.strerror}") from None


def parse_detach_keys(spec: str | None) -> bytes:
    """Docker's `--detach-keys` syntax: comma-separated `ctrl-<c>` or single characters."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        k = key.strip()
        if k.lower().startswith("ctrl-") and len(k) == 6:
            c = k[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise errors.InvalidParameter(f"Invalid detach keys ({spec}) provided")
        elif len(k) == 1:
            out.append(ord(k))
        else:
            raise errors.InvalidParameter(f"Invalid detach keys ({spec}) provided")
    return bytes(out) or DEFAULT_DETACH_KEYS


class EscapeScanner:
    """Holds back bytes that could start the detach sequence; reports when it is complete
    (moby's term.EscapeProxy)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.pos = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for b in data:
            if b == self.keys[self.pos]:
                self.pos += 1
                if self.pos == len(self.keys):
                    self.pos = 0
                    return bytes(out), True
                continue
            if self.pos:
                out += self.keys[: self.pos]
                self.pos = 0
                if b == self.keys[0]:
                    self.pos = 1
                    if len(self.keys) == 1:
                        return bytes(out), True
                    continue
            out.append(b)
        return bytes(out), False
