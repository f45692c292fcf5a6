"""Trees deeper than Python's recursion limit and longer than PATH_MAX, in images and in
containers: pulled, run, written to, removed; left behind by a crash and found at the next
start; and a leftover that cannot be removed does not stop the daemon."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import DaemonFactory
from tests.support.daemon import Daemon
from tests.support.imagebuild import DEEP_DIRS
from tests.support.process import wait_until

IMAGE = "deepdirs"
# Walks down the tree with cd (a path to the bottom is longer than PATH_MAX) and reads the leaf.
DESCEND = "cd /deep; n=0; while [ -d d ]; do cd d; n=$((n+1)); done; echo $n; cat leaf"


def _snapshots_dir(d: Daemon) -> Path:
    driver = d.config.get("storage-driver") or "overlayfs"
    return d.data_root / "snapshots" / driver / "snapshots"


def _leftover_dirs(d: Daemon) -> list[str]:
    snaps = sorted(p.name for p in _snapshots_dir(d).iterdir() if p.name.startswith(("rm-", "new-")))
    trash = sorted(p.name for p in (d.data_root / "containers").iterdir() if p.name.startswith("rm-"))
    return snaps + trash


def _one_file_tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _names(tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r|") as t:
        return [m.name.rstrip("/") for m in t]


def _make_deep(top: Path, depth: int) -> None:
    """top/d/d/.../d with a file at the bottom, made fd-relative (the path is too long)."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("driver", ["overlayfs", "copy"])
def test_pull_run_write_and_remove_a_tree_2000_deep(daemon_factory: DaemonFactory,
                                                    driver: str) -> None:
    """Both snapshotters: overlay (a write copies 2,000 directories up) and copy (every
    container's layer is a copy of the whole tree)."""
    daemon = daemon_factory({"storage-driver": driver})
    daemon.docker("pull", "-q", IMAGE)
    assert daemon.docker("run", "--rm", IMAGE, "sh", "-c", DESCEND).stdout.split() == \
        [str(DEEP_DIRS), str(DEEP_DIRS), "levels"]
    # A write at the bottom copies all 2,000 directories up into the container's layer.
    daemon.docker("run", "--name", "writer", IMAGE, "sh", "-c",
                  DESCEND + " >/dev/null; echo new > written")
    sizes = daemon.docker("ps", "-a", "--size", "--format", "{{.Size}}").stdout
    assert "B" in sizes, sizes  # the container's size walked its 2,000-deep layer
    assert "deepdirs" in daemon.docker("system", "df", "-v").stdout
    # diff, export and cp walk the container's tree: 2,000 levels without recursion
    if driver == "overlayfs":  # the copy snapshotter has no diff
        diff = daemon.docker("diff", "writer").stdout.splitlines()
        assert [line.split("/").count("d") for line in diff] == [DEEP_DIRS, DEEP_DIRS], [line[:20] for line in diff]
        assert diff[0].startswith("C /deep/d/") and diff[1].startswith("A /deep/d/") and diff[1].endswith("/written")
    exported = _names(daemon.docker("export", "writer", text=False).stdout)
    assert [n.split("/").count("d") for n in exported if n.endswith(("/written", "/leaf"))] == [DEEP_DIRS] * 2
    tree = _names(daemon.docker("cp", "writer:/deep", "-", text=False).stdout)
    assert tree[0] == "deep" and len(tree) == DEEP_DIRS + 3  # deep, 2,000 d's, leaf, written
    # and an archive put over the deep directory replaces it whole (a file where the tree was;
    # the docker CLI always sends noOverwriteDirNonDir, the API does not have to)
    status, body = daemon.request("PUT", "/containers/writer/archive?path=/", _one_file_tar("deep", b"flat"),
                                  headers={"Content-Type": "application/x-tar"})
    assert status == 200, body
    assert _names(daemon.docker("cp", "writer:/deep", "-", text=False).stdout) == ["deep"]
    daemon.docker("rm", "writer")
    out = daemon.docker("rmi", IMAGE)
    assert "Deleted:" in out.stdout, out.stdout + out.stderr
    assert daemon.docker("images", "-q", IMAGE).stdout == ""
    # removals run in the background: wait for their directories to go
    wait_until(lambda: not _leftover_dirs(daemon), timeout=60,
               what="the removed image's and container's directories to go")
    assert daemon.running and daemon.ping()


def test_start_removes_deep_leftovers_of_a_crash(daemon: Daemon) -> None:
    """A daemon killed in the middle of removing an image's snapshot and a container's files
    leaves rm-* directories; the next start removes them (it used to die on them)."""
    daemon.docker("pull", "-q", IMAGE)
    daemon.kill9()
    _make_deep(_snapshots_dir(daemon) / "rm-77-0123abcd" / "fs" / "deep", DEEP_DIRS)
    _make_deep(d_trash := daemon.data_root / "containers" / ("rm-" + "e" * 64), DEEP_DIRS)
    daemon.start()
    assert not (_snapshots_dir(daemon) / "rm-77-0123abcd").exists()
    assert not d_trash.exists()
    assert daemon.docker("run", "--rm", IMAGE, "sh", "-c", DESCEND).stdout.split()[0] == \
        str(DEEP_DIRS)


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_daemon(daemon: Daemon) -> None:
    """A mount point inside a leftover (the remover never crosses into one: it could be a
    volume) makes its removal fail: the daemon starts all the same and says so in its log."""
    daemon.stop()
    stuck = _snapshots_dir(daemon) / "rm-78-4567cdef"
    (stuck / "fs" / "mnt").mkdir(parents=True)
    _make_deep(stuck / "fs" / "deep", DEEP_DIRS)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "adt-stuck", str(stuck / "fs" / "mnt")],
                   check=True, capture_output=True, timeout=30)
    try:
        (stuck / "fs" / "mnt" / "kept").write_text("a mounted file system is never emptied")
        daemon.start()
        assert daemon.docker("info", "--format", "{{.ServerVersion}}").stdout.strip()
        assert (stuck / "fs" / "mnt" / "kept").exists()
        log = daemon.log_path.read_text()
        assert "rm-78-4567cdef" in log and "trying again" in log, daemon.log_tail()
    finally:
        subprocess.run(["umount", str(stuck / "fs" / "mnt")], check=True, capture_output=True,
                       timeout=30)
    # the next start gets it
    daemon.restart()
    assert not stuck.exists()
