"""docker exec through the real CLI and docker-py: exit codes, Docker's error for a missing or
non-executable binary, stdin with half-close, -e/-w/-u/--privileged, -d, -it in a real
terminal, exec inspect, events, and exec processes dying with their container."""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.test_tty_terminal import Terminal, _term, terminals  # noqa: F401 - fixture
from tests.support.daemon import Daemon


@pytest.fixture
def box(shared_daemon: Daemon) -> Iterator[str]:
    n = f"ex-{uuid.uuid4().hex[:8]}"
    shared_daemon.docker("run", "-d", "--name", n, "busybox", "sleep", "1000")
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


def test_exec_output_and_exit_codes(shared_daemon: Daemon, box: str) -> None:
    assert shared_daemon.docker("exec", box, "echo", "hi").stdout == "hi\n"
    r = shared_daemon.docker("exec", box, "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")


def test_exec_missing_and_not_executable(shared_daemon: Daemon, box: str) -> None:
    r = shared_daemon.docker("exec", box, "nosuch", check=False)
    assert r.returncode == 127
    assert ('OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": '
            "executable file not found in $PATH: unknown") in r.stdout + r.stderr
    r = shared_daemon.docker("exec", box, "/etc/passwd", check=False)
    assert r.returncode == 126 and "permission denied" in r.stdout + r.stderr


def test_exec_stdin_is_closed_at_eof(shared_daemon: Daemon, box: str) -> None:
    r = shared_daemon.docker("exec", "-i", box, "cat", input="line1\nline2\n")
    assert r.stdout == "line1\nline2\n"
    r = shared_daemon.docker("exec", "-i", box, "wc", "-l", input="a\nb\nc\n")
    assert r.stdout.strip() == "3"


def test_exec_env_workdir_user_privileged(shared_daemon: Daemon, box: str) -> None:
    out = shared_daemon.docker("exec", "-e", "A=1", "-w", "/tmp", "-u", "1000", box,
                               "sh", "-c", 'echo "$A $(pwd) $(id -u)"').stdout
    assert out == "1 /tmp 1000\n"
    # the container's environment is there, overridable
    assert "PATH=" in shared_daemon.docker("exec", box, "env").stdout
    caps = shared_daemon.docker("exec", box, "grep", "CapEff", "/proc/self/status").stdout.split()[1]
    priv = shared_daemon.docker("exec", "--privileged", box, "grep", "CapEff", "/proc/self/status").stdout.split()[1]
    assert int(priv, 16) > int(caps, 16) and int(caps, 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    nonroot = shared_daemon.docker("exec", "-u", "1000", box, "grep", "CapEff", "/proc/self/status").stdout.split()[1]
    assert int(nonroot, 16) == 0


def test_exec_detached_inspect_and_events(shared_daemon: Daemon, box: str) -> None:
    client = shared_daemon.client()
    since = str(int(time.time()) - 1)
    api = client.api
    ex = api.exec_create(box, ["sh", "-c", "sleep 30"])
    api.exec_start(ex["Id"], detach=True)
    info = api.exec_inspect(ex["Id"])
    assert info["Running"] is True and info["Pid"] > 0 and info["ExitCode"] is None
    assert info["ProcessConfig"]["entrypoint"] == "sh" and info["ContainerID"].startswith(
        shared_daemon.docker("inspect", "-f", "{{.Id}}", box).stdout.strip())
    pid = info["Pid"]
    assert "sleep 30" in shared_daemon.docker("top", box).stdout
    # exec processes go with their container, reaped (no zombie left)
    shared_daemon.docker("stop", "-t", "1", box)
    deadline = time.monotonic() + 20
    while api.exec_inspect(ex["Id"])["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert api.exec_inspect(ex["Id"])["ExitCode"] == 137
    assert not os.path.exists(f"/proc/{pid}") or _state(pid) != "Z"
    until = str(int(time.time()) + 1)
    events = [json.loads(line) for line in shared_daemon.docker(
        "events", "--since", since, "--until", until, "--format", "{{json .}}",
        "--filter", f"container={box}").stdout.splitlines()]
    actions = [e["Action"] for e in events]
    assert "exec_create: sh -c sleep 30" in actions and "exec_start: sh -c sleep 30" in actions
    die = [e for e in events if e["Action"] == "exec_die"]
    assert die and die[0]["Actor"]["Attributes"]["execID"] == ex["Id"]
    assert die[0]["Actor"]["Attributes"]["exitCode"] == "137"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_exec_cli_detached(shared_daemon: Daemon, box: str) -> None:
    shared_daemon.docker("exec", "-d", box, "sh", "-c", "echo done > /tmp/marker")
    deadline = time.monotonic() + 20
    while shared_daemon.docker("exec", box, "cat", "/tmp/marker", check=False).stdout != "done\n":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_exec_docker_py(shared_daemon: Daemon, box: str) -> None:
    c = shared_daemon.client().containers.get(box)
    r = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 4"], demux=True)
    assert r.exit_code == 4 and r.output == (b"o\n", b"e\n")
    r = c.exec_run("tty", tty=True)
    assert r.exit_code == 0 and r.output.startswith(b"/dev/pts/")
    r = c.exec_run("nosuch")
    assert r.exit_code == 127 and b"executable file not found" in r.output


def test_exec_errors(shared_daemon: Daemon, box: str) -> None:
    r = shared_daemon.docker("exec", "nosuch-container-x", "true", check=False)
    assert r.returncode != 0 and "No such container: nosuch-container-x" in r.stderr
    status, body = shared_daemon.request("GET", "/v1.41/exec/deadbeef/json")
    assert status == 404 and b"No such exec instance" in body
    shared_daemon.docker("stop", "-t", "0", box)
    r = shared_daemon.docker("exec", box, "true", check=False)
    assert r.returncode != 0 and "is not running" in r.stderr


def test_exec_it_in_a_terminal(shared_daemon: Daemon, box: str, terminals: list[Terminal]) -> None:  # noqa: F811
    t = _term(terminals, shared_daemon, "exec", "-it", box, "sh")
    t.expect(b"/ # ")
    t.send(b"echo $((6*7)) $TERM\r")
    t.expect(b"42 xterm\r\n")
    t.send(b"exit 5\r")
    assert t.wait() == 5
