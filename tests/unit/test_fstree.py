"""The iterative, fd-relative tree walk and remover (asyncdock/util/fstree.py)."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.util import fstree
from asyncdock.util.fstree import disk_usage, remove_tree, walk

DEPTH = 5000


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """pytest's own clean-up of old temporary directories uses shutil.rmtree, which these
    trees defeat: never leave one behind, pass or fail."""
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)


def _deep_tree(root: Path, depth: int, *, readonly_every: int = 0) -> None:
    """root/d/d/.../d (depth levels), a file at each level, and at the bottom symlinks to
    `outside` (to the directory and into it), one up the tree (a cycle), a fifo, a file and a hard
    link to it."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    ro: list[int] = []
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            with open(os.open(f"f{level % 3}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd),
                      "wb") as f:
                f.write(b"x" * 10)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if readonly_every and level % readonly_every == 0:
                ro.append(os.dup(fd))
            os.close(fd)
            fd = nfd
        outside = str(root.parent / "outside")
        os.symlink(outside, "abs", dir_fd=fd)
        os.symlink("../../../d", "rel", dir_fd=fd)  # a cycle, for a walk that follows links
        os.symlink(outside + "/dir", "dirlink", dir_fd=fd)
        os.mkfifo("fifo", dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"x" * 10)
        os.link("f", "hard", src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
        for i, r in enumerate(ro):  # read-only levels, every other one unsearchable too
            os.fchmod(r, 0o555 if i % 2 else 0o000)
            os.close(r)


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "keep").write_text("keep")
    (out / "dir" / "keep").write_text("keep")
    return out


def test_python_recursion_cannot_remove_such_a_tree(tmp_path: Path) -> None:
    """What the issue hit: the stdlib's remover recurses (Python 3.11)."""
    _deep_tree(tmp_path / "t", 2000)
    with pytest.raises(RecursionError):
        shutil.rmtree(tmp_path / "t")
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_removes_a_tree_5000_deep_without_following_symlinks(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    _deep_tree(tmp_path / "t", DEPTH)
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()
    assert (outside / "keep").read_text() == "keep"
    assert (outside / "dir" / "keep").read_text() == "keep"


def test_removes_read_only_and_unsearchable_directories(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "t", 300, readonly_every=7)
    (tmp_path / "t").chmod(0o500)
    remove_tree(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_a_symlink_given_as_the_top_is_removed_not_followed(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    (tmp_path / "link").symlink_to(outside)
    remove_tree(tmp_path / "link")
    assert not (tmp_path / "link").is_symlink() and (outside / "keep").exists()


def test_missing_and_plain_file(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "absent", missing_ok=False)
    (tmp_path / "file").write_text("x")
    remove_tree(tmp_path / "file")
    assert not (tmp_path / "file").exists()


def test_walk_keeps_few_fds_open_and_lists_everything_post_order(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "t", DEPTH)
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    dirs = files = 0
    for i, e in enumerate(walk(tmp_path / "t")):
        if i % 500 == 0:
            most = max(most, len(os.listdir("/proc/self/fd")) - before)
        dirs += e.is_dir
        files += not e.is_dir
    assert most <= fstree.KEEP_OPEN + 3
    assert dirs == DEPTH + 1
    assert files == DEPTH + 6  # a file a level; 3 symlinks, the fifo, a file and its link
    assert len(os.listdir("/proc/self/fd")) == before  # every fd closed
    remove_tree(tmp_path / "t")


def test_a_directory_moved_away_during_the_walk_stops_it(tmp_path: Path) -> None:
    _deep_tree(tmp_path / "t", fstree.KEEP_OPEN + 10)
    deep = tmp_path / "t" / "/".join(["d"] * (fstree.KEEP_OPEN + 3))
    it = walk(tmp_path / "t")
    for e in it:
        if e.name == "fifo":
            break
    # Levels below KEEP_OPEN are found again through "..": move one of them elsewhere.
    deep.rename(tmp_path / "moved")
    with pytest.raises(OSError, match="moved during the walk"):
        for _ in it:
            pass


def test_disk_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "f").write_bytes(b"y" * 10000)
    os.link(tmp_path / "t" / "a" / "f", tmp_path / "t" / "g")
    assert disk_usage(tmp_path / "t", apparent=True) == 10000
    assert disk_usage(tmp_path / "t") >= 10000
    assert disk_usage(tmp_path / "absent") == 0
    _deep_tree(tmp_path / "deep", 2000)
    outside = str(tmp_path / "outside")
    links = len(outside) + len(outside + "/dir") + len("../../../d")
    assert disk_usage(tmp_path / "deep", apparent=True) == 2000 * 10 + 10 + links
