"""An active snapshot as an image layer: the tar of what it changed against its parent, in Docker's
layer format (whiteouts `.wh.<name>`, opaque directories `<dir>/.wh..wh..opq`).

Two ways, by the snapshotter's `whiteouts`:
  - "overlay": the upper dir is the diff. A 0/0 character device is a deletion, a directory
    with trusted.overlay.opaque (or user.overlay.opaque) = y replaced the lower one. The lowers
    are read only to tell a directory that overlayfs copied up for a child's sake (and that has
    nothing of its own to say) from a changed one.
  - "delete" (the copy snapshotter: every snapshot is a whole tree): a double walk of the tree
    and its parent's tree, as containerd's fs.Changes does: a name only in the tree is added,
    one only in the parent deleted, one in both changed when lstat's mode, owner, size, mtime,
    device, link target or xattrs differ (same size and whole-second mtimes on both: the
    contents are compared, the times may have been truncated by a tar).

Walked by directory fds opened with O_NOFOLLOW, never by paths: a running container can swap a
directory for a symlink at any moment. Entries come in a fixed order (pre-order, names in byte
order) with numeric owners, whole-second mtimes as moby writes them and no atime/ctime, so the
same tree always gives the same bytes and so the same diff ID. A hard-linked inode is written
once and its other names in the layer as hard-link entries.

What moby keeps in its init layer (mount points and files the engine and the runtime make for a
container, INIT_PATHS) is no change of the user's and is never in a diff; a directory that holds
only such things (/etc for /etc/hosts) is left out with them.

Blocking: iterate in a worker thread.
"""
from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from ..util.tarwrite import CHUNK, TarOut, file_entry, header
from .base import Snapshotter

__all__ = ["INIT_PATHS", "DiffSource", "LayerDiff", "diff_source"]

# What moby's init layer holds (mount points the engine and runtime create): not the user's
# changes. The runtime creates them in our writable layer instead. Shared with
# containers/changes.py (`docker diff`).
INIT_PATHS = frozenset({"/dev", "/dev/pts", "/dev/shm", "/dev/console", "/proc", "/sys", "/.dockerenv",
                        "/etc/resolv.conf", "/etc/hosts", "/etc/hostname", "/etc/mtab"})
_SKIP = frozenset(p.lstrip("/") for p in INIT_PATHS)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LOWER_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DiffSource(NamedTuple):
    """What to diff: `upper` against `lowers` (overlay: its lower dirs, top first; delete: the
    parent's whole tree, or none)."""

    mode: Literal["overlay", "delete"]
    upper: Path
    lowers: list[Path]


async def diff_source(snap: Snapshotter, key: str) -> DiffSource:
    """The dirs that make up active snapshot `key`'s diff against its parent."""
    info = await snap.stat(key)
    upper = snap.upper_dir(key)
    if snap.whiteouts == "overlay":
        lowers: list[Path] = []
        for m in await snap.mounts(key):
            for opt in m.options:
                if m.type == "overlay" and opt.startswith("lowerdir="):
                    lowers = [Path(p) for p in opt[len("lowerdir="):].split(":") if p]
        return DiffSource("overlay", upper, lowers)
    return DiffSource("delete", upper, [snap.upper_dir(info.parent)] if info.parent else [])


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _proc(dir_fd: int, name: str | None = None) -> str:
    # Through the fd's magic link: no xattr call takes a dir fd, and the last component is
    # never followed (follow_symlinks=False).
    return f"/proc/self/fd/{dir_fd}" + (f"/{name}" if name is not None else "")


def _xattrs(path: str) -> dict[str, bytes]:
    """The xattrs a layer carries: not overlayfs' own bookkeeping, not the host's SELinux label."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for k in names:
        if k.startswith(("trusted.overlay.", "user.overlay.")) or k == "security.selinux":
            continue
        try:
            out[k] = os.getxattr(path, k, follow_symlinks=False)
        except OSError:
            pass
    return out


def _opaque(path: str) -> bool:
    for attr in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, attr) == b"y":
                return True
        except OSError:
            pass
    return False


def _listing(fd: int) -> list[str]:
    with os.scandir(fd) as it:
        return [e.name for e in it]


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same_content(a_dir: int, b_dir: int, name: str, size: int) -> bool:
    fa = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=a_dir)
    try:
        fb = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=b_dir)
        try:
            left = size
            while left > 0:
                n = min(left, 1 << 20)
                da, db = os.read(fa, n), os.read(fb, n)
                if da != db:
                    return False
                if not da:
                    return True
                left -= len(da)
            return True
        finally:
            os.close(fb)
    finally:
        os.close(fa)


class _Dir:
    __slots__ = ("fd", "arc", "names", "header", "lowers", "upper_names")

    def __init__(self, fd: int, arc: str, names: list[str], header: bytes | None, lowers: list[int],
                 upper_names: set[str] | None) -> None:
        self.fd = fd
        self.arc = arc
        self.names = names  # still to visit, popped from the end
        self.header = header  # not written yet: only once something under it is
        self.lowers = lowers  # overlay: the merged lower dir's fds (top first); delete: [parent's]
        self.upper_names = upper_names  # delete: the names in the tree itself


class LayerDiff:
    """The layer tar of `source`, as an iterator of chunks of about `chunk` bytes. After the
    iteration, `entries` tells how many entries it held (0: an empty diff, which moby commits
    as no layer at all) and `size` the layer's apparent size as Docker counts it (st_size of
    its files, each hard-linked inode once, and of its symlinks)."""

    def __init__(self, source: DiffSource, *, chunk: int = CHUNK) -> None:
        self.source = source
        self.chunk = chunk
        self.entries = 0
        self.size = 0
        self._inodes: set[tuple[int, int]] = set()
        self._w = TarOut()
        self._stack: list[_Dir] = []
        self._pending = 0  # trailing frames of the stack whose header is not written yet
        self._big: Iterator[bytes] | None = None  # a regular file's entry, streamed next

    # -- output ------------------------------------------------------------------------------

    def _flush_parents(self) -> None:
        if self._pending:
            for f in self._stack[len(self._stack) - self._pending:]:
                assert f.header is not None
                self._w.out += f.header
                f.header = None
                self.entries += 1
            self._pending = 0

    def _put(self, data: bytes) -> None:
        self._flush_parents()
        self._w.out += data
        self.entries += 1

    # -- walk --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        src = self.source
        root = os.open(src.upper, _DIR_FLAGS)
        lower_fds: list[int] = []
        try:
            for p in src.lowers:
                try:
                    lower_fds.append(os.open(p, _DIR_FLAGS if src.mode == "delete" else _LOWER_FLAGS))
                except FileNotFoundError:
                    continue
            self._push(root, "", None, lower_fds)
            while self._stack:
                f = self._stack[-1]
                if not f.names:
                    self._stack.pop()
                    if f.header is not None:
                        self._pending -= 1
                    if self._stack:  # the root's fds are closed below
                        os.close(f.fd)
                        for fd in f.lowers:
                            os.close(fd)
                    continue
                name = f.names.pop()
                arc = f"{f.arc}/{name}" if f.arc else name
                if arc in _SKIP:
                    continue
                if src.mode == "overlay":
                    self._overlay_entry(f, name, arc)
                else:
                    self._tree_entry(f, name, arc)
                out = self._w.take(self.chunk)
                if out is not None:
                    yield out
                if self._big is not None:
                    yield from self._big
                    self._big = None
            yield self._w.end()
        finally:
            for f in self._stack[1:]:
                os.close(f.fd)
                for fd in f.lowers:
                    os.close(fd)
            self._stack.clear()
            os.close(root)
            for fd in lower_fds:
                os.close(fd)

    def _push(self, fd: int, arc: str, hdr: bytes | None, lowers: list[int],
              upper_names: set[str] | None = None) -> None:
        try:
            names = _listing(fd)
            if self.source.mode == "delete":
                upper_names = set(names)
                for lfd in lowers:
                    names = list(upper_names.union(_listing(lfd)))
            names.sort(key=os.fsencode, reverse=True)
        except BaseException:
            if self._stack:
                os.close(fd)
                for lfd in lowers:
                    os.close(lfd)
            raise
        self._stack.append(_Dir(fd, arc, names, hdr, lowers, upper_names))
        if hdr is not None:
            self._pending += 1

    def _leaf(self, f: _Dir, name: str, arc: str, st: os.stat_result) -> None:
        """Write a non-directory of the tree (a regular file's data is queued in _big)."""
        mode = st.st_mode
        xattrs = _xattrs(_proc(f.fd, name))
        if stat.S_ISREG(mode):
            self._flush_parents()
            self.entries += 1
            if st.st_nlink < 2:
                self.size += st.st_size
            elif (st.st_dev, st.st_ino) not in self._inodes:
                self._inodes.add((st.st_dev, st.st_ino))
                self.size += st.st_size
            self._big = file_entry(self._w, f.fd, name, arc, st, self.chunk, xattrs=xattrs)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(name, dir_fd=f.fd)
            except OSError:
                return
            self.size += len(os.fsencode(target))
            self._put(header(arc, st, tarfile.SYMTYPE, linkname=target, xattrs=xattrs))
        elif stat.S_ISCHR(mode):
            self._put(header(arc, st, tarfile.CHRTYPE, xattrs=xattrs))
        elif stat.S_ISBLK(mode):
            self._put(header(arc, st, tarfile.BLKTYPE, xattrs=xattrs))
        elif stat.S_ISFIFO(mode):
            self._put(header(arc, st, tarfile.FIFOTYPE, xattrs=xattrs))
        # sockets: tar has no type for them (moby skips them too)

    def _open_sub(self, f: _Dir, name: str) -> tuple[int, os.stat_result] | None:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=f.fd)
        except OSError:
            return None  # gone, or no directory any more
        return fd, os.fstat(fd)

    def _whiteout(self, parent_arc: str, name: str, st: os.stat_result | None) -> None:
        arc = f"{parent_arc}/{WHITEOUT_PREFIX}{name}" if parent_arc else f"{WHITEOUT_PREFIX}{name}"
        self._put(header(arc, st, tarfile.REGTYPE))

    # -- overlay -----------------------------------------------------------------------------

    def _overlay_entry(self, f: _Dir, name: str, arc: str) -> None:
        st = _lstat(name, f.fd)
        if st is None:
            return
        if _is_whiteout(st):
            self._whiteout(f.arc, name, st)
            return
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(f, name, arc, st)
            return
        opened = self._open_sub(f, name)
        if opened is None:
            return
        fd, st = opened
        try:
            opaque = _opaque(_proc(fd))
            lowers: list[int] = []
            top: os.stat_result | None = None
            if not opaque:
                for lfd in f.lowers:
                    lst = _lstat(name, lfd)
                    if lst is None:
                        continue
                    if not stat.S_ISDIR(lst.st_mode):
                        break  # a file or a whiteout hides the lower layers' dirs
                    try:
                        lowers.append(os.open(name, _LOWER_FLAGS, dir_fd=lfd))
                    except OSError:
                        break
                    top = top or lst
                    if _opaque(_proc(lowers[-1])):
                        break
            xattrs = _xattrs(_proc(fd))
            hdr = header(arc, st, tarfile.DIRTYPE, xattrs=xattrs)
            same = (top is not None and top.st_mode == st.st_mode and top.st_uid == st.st_uid
                    and top.st_gid == st.st_gid and _xattrs(_proc(lowers[0])) == xattrs)
        except BaseException:
            os.close(fd)
            for lfd in lowers:
                os.close(lfd)
            raise
        if same:
            # Copied up for a child's sake: written only if something under it is.
            self._push(fd, arc, hdr, lowers)
            return
        self._put(hdr)
        if opaque:
            self._put(header(f"{arc}/{WHITEOUT_OPAQUE}", st, tarfile.REGTYPE))
        self._push(fd, arc, None, lowers)

    # -- whole trees (copy snapshotter) ---------------------------------------------------------

    def _tree_entry(self, f: _Dir, name: str, arc: str) -> None:
        assert f.upper_names is not None
        lfd = f.lowers[0] if f.lowers else None
        lst = _lstat(name, lfd) if lfd is not None else None
        if name not in f.upper_names:
            if lst is not None:
                self._whiteout(f.arc, name, None)
            return
        st = _lstat(name, f.fd)
        if st is None:
            return
        if not stat.S_ISDIR(st.st_mode):
            if lst is not None and lfd is not None and self._same_leaf(f.fd, lfd, name, st, lst):
                return
            self._leaf(f, name, arc, st)
            return
        opened = self._open_sub(f, name)
        if opened is None:
            return
        fd, st = opened
        sub_lowers: list[int] = []
        try:
            xattrs = _xattrs(_proc(fd))
            hdr = header(arc, st, tarfile.DIRTYPE, xattrs=xattrs)
            same = False
            if lst is not None and lfd is not None and stat.S_ISDIR(lst.st_mode):
                try:
                    sub_lowers.append(os.open(name, _DIR_FLAGS, dir_fd=lfd))
                except OSError:
                    pass
                else:
                    same = (lst.st_mode == st.st_mode and lst.st_uid == st.st_uid
                            and lst.st_gid == st.st_gid and _xattrs(_proc(sub_lowers[0])) == xattrs)
        except BaseException:
            os.close(fd)
            for x in sub_lowers:
                os.close(x)
            raise
        if same:
            self._push(fd, arc, hdr, sub_lowers)
            return
        self._put(hdr)
        # A directory where the parent had none, or one whose own metadata changed: its parent
        # counterpart's children (if any) are still compared, as containerd does.
        self._push(fd, arc, None, sub_lowers)

    @staticmethod
    def _same_leaf(ufd: int, lfd: int, name: str, st: os.stat_result, lst: os.stat_result) -> bool:
        if (st.st_mode != lst.st_mode or st.st_uid != lst.st_uid or st.st_gid != lst.st_gid
                or st.st_size != lst.st_size):
            return False
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            if st.st_rdev != lst.st_rdev:
                return False
        if st.st_mtime_ns // 1_000_000_000 != lst.st_mtime_ns // 1_000_000_000:
            return False
        if stat.S_ISLNK(st.st_mode):
            try:
                if os.readlink(name, dir_fd=ufd) != os.readlink(name, dir_fd=lfd):
                    return False
            except OSError:
                return False
        if _xattrs(_proc(ufd, name)) != _xattrs(_proc(lfd, name)):
            return False
        if stat.S_ISREG(st.st_mode):
            if st.st_mtime_ns % 1_000_000_000 or lst.st_mtime_ns % 1_000_000_000:
                return st.st_mtime_ns == lst.st_mtime_ns
            # Whole seconds on both: either may be a tar's truncation; only the bytes can tell.
            try:
                return _same_content(ufd, lfd, name, st.st_size)
            except OSError:
                return False
        return True
