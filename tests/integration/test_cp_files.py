"""docker cp, diff and export through the real CLI and docker-py: files, directories and
symlinks both ways, to stdout, on created, running and stopped containers, Docker's errors,
and a target that tries to escape through a symlink (confined, the host untouched)."""
from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.process import wait_until


@pytest.fixture
def box(shared_daemon: Daemon) -> Iterator[str]:
    n = f"cp-{uuid.uuid4().hex[:8]}"
    shared_daemon.docker("run", "-d", "--name", n, "busybox", "sleep", "1000")
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


@pytest.fixture
def created(shared_daemon: Daemon) -> Iterator[str]:
    n = f"cpc-{uuid.uuid4().hex[:8]}"
    shared_daemon.docker("create", "--name", n, "busybox", "cat", "/hello.txt")
    yield n
    shared_daemon.docker("rm", "-f", n, check=False)


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from the host\n")
    (src / "d").mkdir()
    (src / "d" / "a").write_text("a\n")
    (src / "lnk").symlink_to("hello.txt")
    return src


def test_cp_both_directions(shared_daemon: Daemon, box: str, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    shared_daemon.docker("exec", box, "mkdir", "/data")
    for item in ("hello.txt", "d", "lnk"):
        shared_daemon.docker("cp", str(src / item), f"{box}:/data/")
    assert shared_daemon.docker("exec", box, "cat", "/data/hello.txt", "/data/d/a").stdout == "hello from the host\na\n"
    assert shared_daemon.docker("exec", box, "readlink", "/data/lnk").stdout == "hello.txt\n"
    back = tmp_path / "back"
    back.mkdir()
    for item in ("hello.txt", "d", "lnk"):
        shared_daemon.docker("cp", f"{box}:/data/{item}", str(back / item))
    assert (back / "hello.txt").read_text() == "hello from the host\n"
    assert (back / "d" / "a").read_text() == "a\n"
    assert (back / "lnk").is_symlink() and str((back / "lnk").readlink()) == "hello.txt"
    # contents of a directory with "/."
    shared_daemon.docker("cp", f"{box}:/data/d/.", str(tmp_path / "dcontent"))
    assert (tmp_path / "dcontent" / "a").read_text() == "a\n"


def test_cp_to_stdout_and_stat_header(shared_daemon: Daemon, box: str) -> None:
    r = shared_daemon.docker("cp", f"{box}:/etc/hostname", "-", text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        names = tar.getnames()
        assert names == ["hostname"]
        assert tar.extractfile("hostname").read().decode().strip() == box_id(shared_daemon, box)[:12]
    status, _ = shared_daemon.request("HEAD", f"/v1.41/containers/{box}/archive?path=/etc")
    assert status == 200
    bits, stat = shared_daemon.client().api.get_archive(box, "/etc")
    assert stat["name"] == "etc" and stat["mode"] & (1 << 31)
    bits, stat = shared_daemon.client().api.get_archive(box, "/bin/sh")
    assert stat["mode"] & (1 << 27) == 0 or stat["linkTarget"]


def box_id(daemon: Daemon, name: str) -> str:
    return daemon.docker("inspect", "-f", "{{.Id}}", name).stdout.strip()


def test_cp_errors(shared_daemon: Daemon, box: str, tmp_path: Path) -> None:
    r = shared_daemon.docker("cp", f"{box}:/nonexistent", str(tmp_path), check=False)
    assert r.returncode == 1 and f"Could not find the file /nonexistent in container {box}" in r.stderr
    (tmp_path / "f").write_text("x")
    r = shared_daemon.docker("cp", str(tmp_path / "f"), f"{box}:/nodir/", check=False)
    assert r.returncode == 1 and "no such directory" in r.stderr
    status, _ = shared_daemon.request("HEAD", f"/v1.41/containers/{box}/archive?path=/nodir/")
    assert status == 404


def test_cp_cannot_escape_through_symlinks(shared_daemon: Daemon, box: str, tmp_path: Path) -> None:
    marker = f"escape-{uuid.uuid4().hex[:8]}"
    f = tmp_path / marker
    f.write_text("should stay in the container\n")
    shared_daemon.docker("exec", box, "sh", "-c", "mkdir -p /data /tmp && ln -s / /data/up && ln -s /tmp /data/tmplink "
                         "&& ln -s ../../../../../../../tmp /data/rel")
    for target in ("/data/up/../../../../tmp/", "/data/tmplink/", "/data/rel/"):
        shared_daemon.docker("cp", str(f), f"{box}:{target}", check=False)
    assert not Path("/tmp", marker).exists()  # host untouched
    assert shared_daemon.docker("exec", box, "cat", f"/tmp/{marker}").stdout == "should stay in the container\n"
    # a tar whose members climb out is refused, nothing written outside
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"../../../../{marker}-2")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    ok = False
    try:
        ok = shared_daemon.client().api.put_archive(box, "/data/up", buf.getvalue())
    except Exception:
        pass
    assert not ok
    assert not Path("/", f"{marker}-2").exists() and not Path("/tmp", f"{marker}-2").exists()
    # reading through a symlink that points out stays inside too
    shared_daemon.docker("exec", box, "ln", "-s", "/etc/../../../../etc/hostname", "/data/hn")
    r = shared_daemon.docker("cp", f"{box}:/data/hn/", "-", text=False, check=False)
    assert b"root:" not in r.stdout


def test_cp_created_and_stopped_container(shared_daemon: Daemon, created: str, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    shared_daemon.docker("cp", str(src / "hello.txt"), f"{created}:/")
    r = shared_daemon.docker("cp", f"{created}:/hello.txt", "-", text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert tar.extractfile("hello.txt").read() == b"hello from the host\n"
    assert shared_daemon.docker("start", "-a", created).stdout == "hello from the host\n"
    shared_daemon.docker("cp", str(src / "d"), f"{created}:/")  # stopped now
    out = tmp_path / "out"
    shared_daemon.docker("cp", f"{created}:/d", str(out))
    assert (out / "a").read_text() == "a\n"


def test_diff_and_export(shared_daemon: Daemon, box: str) -> None:
    shared_daemon.docker("exec", box, "sh", "-c", "mkdir /newdir && touch /newdir/f /etc/newfile && rm /bin/true")
    diff = shared_daemon.docker("diff", box).stdout.splitlines()
    for line in ("A /newdir", "A /newdir/f", "C /etc", "A /etc/newfile", "C /bin", "D /bin/true"):
        assert line in diff
    assert not any(p.endswith(("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")) for p in diff)
    changes = shared_daemon.client().api.diff(box)
    assert {"Path": "/bin/true", "Kind": 2} in changes and {"Path": "/newdir", "Kind": 1} in changes
    r = shared_daemon.docker("export", box, text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        names = set(tar.getnames())
    assert {"bin/sh", "newdir/f", "etc/newfile"} <= names and "bin/true" not in names


def _pax_nul_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("harmless")
        info.pax_headers = {"path": "evil\0name"}
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    return buf.getvalue()


def test_put_archive_bad_tars_are_one_line_400s(shared_daemon: Daemon, box: str) -> None:
    """Issue 12 item 4: a NUL in a pax path, a non-tar and a truncated tar are the client's
    fault: 400 and one line naming no host path, no traceback in the (non-debug) log."""
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = 4096
        tar.addfile(info, io.BytesIO(bytes(4096)))
    log_before = shared_daemon.log_path.stat().st_size
    for body, want in ((_pax_nul_tar(), "NUL"), (b"not a tar at all\n" * 64, "invalid tar"),
                       (good.getvalue()[:2048], "invalid tar")):
        status, raw = shared_daemon.request("PUT", f"/v1.41/containers/{box}/archive?path=/tmp", body=body,
                                            headers={"Content-Type": "application/x-tar"})
        msg = json.loads(raw)["message"]
        assert status == 400, (status, msg)
        assert want in msg and "\n" not in msg and "Traceback" not in msg
        assert str(shared_daemon.root) not in msg and "/proc/" not in msg
    with shared_daemon.log_path.open("rb") as f:
        f.seek(log_before)
        assert b"Traceback" not in f.read()
    assert shared_daemon.docker("exec", box, "ls", "/tmp").stdout.strip() == ""


def _daemon_fds(d: Daemon) -> int:
    assert d.proc is not None
    return len(os.listdir(f"/proc/{d.proc.pid}/fd"))


def test_large_copies_stream_and_an_aborted_one_leaves_nothing(shared_daemon: Daemon, created: str) -> None:
    size = 48 << 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    assert shared_daemon.client().api.put_archive(created, "/", buf.getvalue())
    bits, stat = shared_daemon.client().api.get_archive(created, "/big")
    got = 0
    for chunk in bits:
        got += len(chunk)
    assert stat["size"] == size and got >= size + 512
    baseline = _daemon_fds(shared_daemon)
    # a client that reads the head and a little, then goes away
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(str(shared_daemon.socket))
        s.sendall(f"GET /v1.41/containers/{created}/archive?path=/big HTTP/1.1\r\nHost: d\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.close()
    # an upload that stops half way, its client gone
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(shared_daemon.socket))
    cut = tarfile.TarInfo("cut")
    cut.size = size
    head = cut.tobuf()
    s.sendall(f"PUT /v1.41/containers/{created}/archive?path=/ HTTP/1.1\r\nHost: d\r\n"
              f"Content-Type: application/x-tar\r\nContent-Length: {len(head) + size + 1024}\r\n\r\n".encode())
    s.sendall(head + bytes(8 << 20))
    s.close()
    cid = box_id(shared_daemon, created)

    def settled() -> bool:
        # every fd closed, and the snapshot mounted for the copies unmounted
        return _daemon_fds(shared_daemon) <= baseline and f"{cid}-cp-" not in Path("/proc/self/mountinfo").read_text()

    wait_until(settled, timeout=20, what="the aborted copies' fds and mounts to go",
               on_timeout=lambda: f"{_daemon_fds(shared_daemon)} fds, {baseline} before")
    # the cut upload left no partial file
    r = shared_daemon.docker("cp", f"{created}:/cut", "-", check=False)
    assert r.returncode == 1 and "Could not find the file /cut" in r.stderr
