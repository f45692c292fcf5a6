"""What exec start sends, as real clients read it: a TTY's output from its first byte (docker
CLI, docker-py, a raw hijacked start), stdcopy frames on a raw socket without a TTY, Docker's
exit codes and status for a command that cannot start, and the detach keys of the client's
config file."""
from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_tty_terminal import Terminal, terminals  # noqa: F401 - fixture
from tests.support.daemon import DOCKER_CLI, Daemon, UnixHTTPConnection

ROUNDS = 15


@pytest.fixture
def box(shared_daemon: Daemon) -> Iterator[str]:
    n = f"exs-{uuid.uuid4().hex[:8]}"
    shared_daemon.docker("run", "-d", "--name", n, "busybox", "sleep", "1000")
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


def _exec_create(daemon: Daemon, box: str, cmd: list[str], **extra: object) -> str:
    body = {"AttachStdout": True, "AttachStderr": True, "Cmd": cmd, **extra}
    status, out = daemon.request("POST", f"/containers/{box}/exec", body)
    assert status == 201, out
    exec_id: str = json.loads(out)["Id"]
    return exec_id


def _raw_start(daemon: Daemon, exec_id: str, body: dict[str, object]) -> bytes:
    """`POST /exec/{id}/start` with the Upgrade headers, read to EOF on the same socket: the
    response head and everything after it, exactly as sent."""
    payload = json.dumps(body).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(daemon.socket))
        s.sendall(b"POST /v1.41/exec/" + exec_id.encode() + b"/start HTTP/1.1\r\nHost: docker\r\n"
                  b"Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                  b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data
    finally:
        s.close()


def _body_after_head(raw: bytes) -> tuple[bytes, bytes]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw
    return head, rest


def test_exec_tty_output_is_whole_docker_cli(shared_daemon: Daemon, box: str) -> None:
    for _ in range(ROUNDS):
        r = shared_daemon.docker("exec", "-t", box, "sh", "-c", "echo hello out", text=False)
        assert r.stdout == b"hello out\r\n"


def test_exec_tty_output_is_whole_docker_py(shared_daemon: Daemon, box: str) -> None:
    c = shared_daemon.client().containers.get(box)
    for _ in range(ROUNDS):
        r = c.exec_run(["sh", "-c", "echo hello out"], tty=True)
        assert (r.exit_code, r.output) == (0, b"hello out\r\n")
        r = c.exec_run(["echo", "hello out"], tty=True)
        assert (r.exit_code, r.output) == (0, b"hello out\r\n")


def test_exec_tty_output_is_whole_raw_hijack(shared_daemon: Daemon, box: str) -> None:
    for _ in range(ROUNDS):
        ex = _exec_create(shared_daemon, box, ["echo", "hello out"], Tty=True)
        head, rest = _body_after_head(_raw_start(shared_daemon, ex, {"Detach": False, "Tty": True}))
        assert head.startswith(b"HTTP/1.1 101 UPGRADED") and rest == b"hello out\r\n"


def _exec_done(daemon: Daemon, exec_id: str) -> None:
    """Until the exec's process has exited (its output is with the daemon by then)."""
    deadline = time.monotonic() + 20
    while True:
        status, out = daemon.request("GET", f"/exec/{exec_id}/json")
        assert status == 200, out
        if json.loads(out)["ExitCode"] is not None:
            return
        assert time.monotonic() < deadline, out
        time.sleep(0.02)


NOT_FOUND = (b'OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuchcmd": '
             b"executable file not found in $PATH: unknown\r\n")


@pytest.mark.parametrize(("cmd", "tty", "expected"), [
    (["echo", "hello out"], True, b"hello out\r\n"),
    (["echo", "hello out"], False, b"\x01\x00\x00\x00\x00\x00\x00\x0ahello out\n"),
    (["nosuchcmd"], True, NOT_FOUND),
    (["nosuchcmd"], False, b"\x01\x00\x00\x00" + len(NOT_FOUND).to_bytes(4, "big") + NOT_FOUND),
])
def test_exec_output_waits_for_a_client_that_reads_the_head_late(shared_daemon: Daemon, box: str, cmd: list[str],
                                                                 tty: bool, expected: bytes) -> None:
    """docker-py's way: http.client reads the 101 head through a buffered reader, then the rest
    from the raw socket (APIClient._get_raw_response_socket), so output that reached the socket
    before it read the head is lost to it. A client busy elsewhere reads the head only after
    the process ran; all its output must still come after the head."""
    ex = _exec_create(shared_daemon, box, cmd, Tty=tty)
    conn = UnixHTTPConnection(str(shared_daemon.socket), timeout=30)
    try:
        conn.request("POST", f"/v1.41/exec/{ex}/start", body=json.dumps({"Detach": False, "Tty": tty}),
                     headers={"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"})
        _exec_done(shared_daemon, ex)
        resp = conn.getresponse()
        assert resp.status == 101
        raw = resp.fp.raw  # type: ignore[union-attr]
        data = b""
        while chunk := raw.read(65536):
            data += chunk
    finally:
        conn.close()
    assert data == expected


def test_exec_socket_without_tty_is_multiplexed_docker_py(shared_daemon: Daemon, box: str) -> None:
    """exec_run(socket=True) / exec_start(socket=True): the caller reads stdcopy frames itself."""
    from docker.utils.socket import frames_iter

    c = shared_daemon.client().containers.get(box)
    r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], socket=True)
    frames = list(frames_iter(r.output, tty=False))
    r.output._sock.close()
    # two pipes, read as they come: each stream's frames in order, the two interleaved either way
    assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
    api = shared_daemon.client().api
    ex = api.exec_create(box, ["sh", "-c", "echo o2"])
    sock = api.exec_start(ex["Id"], socket=True)
    assert list(frames_iter(sock, tty=False)) == [(1, b"o2\n")]
    sock._sock.close()


def test_exec_that_cannot_start_codes_as_docker(shared_daemon: Daemon, box: str) -> None:
    """moby's setExitCodeFromError, kept for the exec since Docker 28 (moby c866a7e5f8,
    TestFailedExecExitCode): 127 for a missing command, 126 for one that cannot be invoked; a
    detached start answers the error as 400, an attached one as output."""
    r = shared_daemon.docker("exec", box, "nosuchcmd", check=False)
    assert r.returncode == 127 and r.stdout + r.stderr == NOT_FOUND.decode().replace("\r\n", "\n")
    ex = _exec_create(shared_daemon, box, ["nosuchcmd"])
    status, out = shared_daemon.request("POST", f"/exec/{ex}/start", {"Detach": True, "Tty": False})
    assert (status, json.loads(out)["message"]) == (400, NOT_FOUND.decode().rstrip())
    status, out = shared_daemon.request("GET", f"/exec/{ex}/json")
    info = json.loads(out)
    assert (info["ExitCode"], info["Running"], info["Pid"]) == (127, False, 0)
    r = shared_daemon.docker("exec", "-d", box, "nosuchcmd", check=False)
    assert r.returncode == 1 and "executable file not found in $PATH" in r.stderr
    r = shared_daemon.docker("exec", box, "/etc", check=False)
    assert r.returncode == 126 and "permission denied" in r.stdout + r.stderr


def test_exec_it_detaches_with_the_config_files_keys(shared_daemon: Daemon, box: str, tmp_path: Path,
                                                     terminals: list[Terminal]) -> None:  # noqa: F811
    """`"detachKeys"` of the CLI's config.json: the CLI sends it as the exec's DetachKeys; the
    default keys are then ordinary input."""
    (tmp_path / "config.json").write_text(json.dumps({"detachKeys": "ctrl-x,x"}))
    env = dict(shared_daemon.env)
    env.update(TERM="xterm", DOCKER_CONFIG=str(tmp_path))
    t = Terminal([DOCKER_CLI, "exec", "-it", box, "sh"], env)
    terminals.append(t)
    t.expect(b"/ # ")
    t.send(b"\x10\x11echo still $((6*7))\r")  # ctrl-p ctrl-q: not the keys any more
    t.expect(b"still 42\r\n")
    t.send(b"sleep 1000\r")
    t.send(b"\x18x")
    # the CLI's exec returns the escape as its error, as against Docker: status 1
    assert t.wait() == 1
    assert b"read escape sequence" in t.seen
    # detached, not ended: the shell and its sleep run on
    assert "sleep 1000" in shared_daemon.docker("top", box).stdout



def test_exec_detach_keys_of_the_create_body_end_a_raw_session(shared_daemon: Daemon, box: str) -> None:
    """The server's side of it, for clients that send their keys and no proxy of their own."""
    ex = _exec_create(shared_daemon, box, ["cat"], Tty=True, AttachStdin=True, DetachKeys="ctrl-x,x")
    payload = json.dumps({"Detach": False, "Tty": True}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(str(shared_daemon.socket))
        s.sendall(b"POST /exec/" + ex.encode() + b"/start HTTP/1.1\r\nHost: docker\r\n"
                  b"Content-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                  b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        s.sendall(b"\x10\x11one\r")  # the default keys are plain input now
        while b"one\r\n" not in data.partition(b"\r\n\r\n")[2].replace(b"\x10\x11", b""):
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        s.sendall(b"\x18x")
        while chunk := s.recv(4096):  # the server ends the session
            data += chunk
    finally:
        s.close()
    status, out = shared_daemon.request("GET", f"/exec/{ex}/json")
    assert json.loads(out)["Running"] is True
