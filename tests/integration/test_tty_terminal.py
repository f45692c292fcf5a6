"""A real terminal around the docker CLI: `docker run -it` gets a prompt, runs what is typed,
sees resizes, detaches on Ctrl-P Ctrl-Q leaving the container running, and `docker attach`
then `exit 3` returns 3. Several clients attached at once see the same output."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.daemon import DOCKER_CLI, Daemon


class Terminal:
    """The docker CLI in a pseudo-terminal of its own, as a user's shell would run it."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.resize(rows, cols, signal_cli=False)
        self.seen = b""
        self.status: int | None = None

    def resize(self, rows: int, cols: int, *, signal_cli: bool = True) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        if signal_cli:
            os.kill(self.pid, signal.SIGWINCH)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def expect(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; terminal shows {self.seen[-500:]!r}")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"{needle!r} not seen before EOF; terminal shows {self.seen[-500:]!r}")
                self.seen += data
        before, _, after = self.seen.partition(needle)
        self.seen = after
        return before + needle

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the CLI did not exit; terminal shows {self.seen[-500:]!r}")
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    pass
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)


@pytest.fixture
def terminals(shared_daemon: Daemon) -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for t in made:
        t.close()


def _term(terminals: list[Terminal], daemon: Daemon, *args: str) -> Terminal:
    env = dict(daemon.env)
    env["TERM"] = "xterm"
    t = Terminal([DOCKER_CLI, *args], env)
    terminals.append(t)
    return t


@pytest.fixture
def name(shared_daemon: Daemon) -> Iterator[str]:
    n = f"tty-{uuid.uuid4().hex[:8]}"
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


def test_run_it_prompt_resize_detach_attach_exit(shared_daemon: Daemon, terminals: list[Terminal], name: str) -> None:
    t = _term(terminals, shared_daemon, "run", "-it", "--name", name, "busybox", "sh")
    t.expect(b"/ # ")
    t.send(b"echo $((6*7))\r")
    assert b"\r\n42\r\n" in t.expect(b"42\r\n/ # ")
    t.resize(33, 101)
    # the CLI forwards SIGWINCH as POST /containers/{id}/resize; poll until the shell sees it
    deadline = time.monotonic() + 20
    while True:
        t.send(b"stty size\r")
        out = t.expect(b"/ # ")
        if b"33 101" in out:
            break
        assert time.monotonic() < deadline, out
    t.send(b"\x10\x11")  # Ctrl-P Ctrl-Q
    assert t.wait() == 0
    state = shared_daemon.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
    assert state == "true"

    a = _term(terminals, shared_daemon, "attach", name)
    a.send(b"echo attached-$((1+1))\r")
    a.expect(b"attached-2")
    a.send(b"exit 3\r")
    assert a.wait() == 3
    assert shared_daemon.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "3"


def test_run_t_output_is_raw_and_logged(shared_daemon: Daemon, name: str) -> None:
    out = shared_daemon.docker("run", "-t", "--name", name, "busybox", "sh", "-c", "tty; printf 'a\\nb\\n'").stdout
    assert out.replace("\r\n", "\n") == "/dev/pts/0\na\nb\n"
    logs = shared_daemon.docker("logs", name).stdout
    assert logs.replace("\r\n", "\n") == "/dev/pts/0\na\nb\n"


def test_two_attached_clients_see_the_same_output(shared_daemon: Daemon, name: str) -> None:
    client = shared_daemon.client()
    c = client.containers.run("busybox", ["sh", "-c", "read line; echo got:$line; read x"], name=name,
                              tty=True, stdin_open=True, detach=True)
    socks = [client.api.attach_socket(c.id, params={"stdout": 1, "stream": 1, "stdin": int(i == 0)})
             for i in range(2)]
    try:
        socks[0]._sock.sendall(b"hello\n")
        for s in socks:
            raw = s._sock
            raw.settimeout(20)
            seen = b""
            while b"got:hello" not in seen:
                chunk = raw.recv(4096)
                assert chunk, seen
                seen += chunk
    finally:
        for s in socks:
            s.close()
    # closing the attached sockets detached them; the container still runs
    c.reload()
    assert c.status == "running"


def test_resize_of_a_stopped_container_is_a_conflict(shared_daemon: Daemon, name: str) -> None:
    shared_daemon.docker("create", "-t", "--name", name, "busybox")
    status, body = shared_daemon.request("POST", f"/v1.41/containers/{name}/resize?h=10&w=10")
    assert status == 409 and b"is not running" in body
