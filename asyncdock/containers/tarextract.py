"""Unpack a client's tar into a container (`PUT /containers/{id}/archive`, docker cp in).

moby's rules (pkg/archive Unpack under chrootarchive): member names are cleaned and may not
climb out of the extraction point; a member's parent directories are resolved as the
container resolves them (its symlinks followed, clamped at its root) and created if missing;
what already has the member's name is removed and replaced (a directory is kept for a
directory), never written through; noOverwriteDirNonDir refuses to swap a directory and a
non-directory. Owners are the tar's numeric ids; names in the tar are ignored.

Every parent is opened with openat2(RESOLVE_IN_ROOT) from the container's root fd and the
member itself is made with fd-relative calls that never follow its last component, so
nothing a tar holds or a (running) container does can reach outside the root.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

from ..snapshots.tarstream import BLK, CHR, DIR, FIFO, LNK, REG, SYM, ChunkStream, Member, TarError, TarReader
from ..util.fstree import remove_tree
from .rootfs_fs import clean_member_name, lstat_at, open_in_root

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# What the host, not the tar, is to blame for: a 500, not a 400.
_HOST_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE))


class BadArchive(ValueError):
    """The tar is malformed, or a member cannot be applied: one line for the client (400)."""


class ExtractFailed(RuntimeError):
    """The host failed the extraction (disk full, I/O error): one line for the client (500)."""


def extract(root_fd: int, dest: str, chunks: Iterator[bytes], *, no_overwrite: bool = False) -> None:
    """Unpack the tar read from `chunks` into the directory `dest` of the root `root_fd`.
    Blocking: run it in a worker thread."""
    reader = TarReader(ChunkStream(chunks))
    x = _Extractor(root_fd, dest, no_overwrite)
    try:
        while True:
            try:
                m = reader.next()
            except TarError as e:
                if reader.stream.tell() == 0:
                    return  # an empty body: nothing to do (moby's Untar reads EOF as the end)
                raise BadArchive(f"invalid tar stream: {e}") from None
            except ValueError as e:  # undecodable numbers and the like
                raise BadArchive(f"invalid tar stream: {e}") from None
            if m is None:
                break
            x.member(m, reader)
        x.finish()
    finally:
        x.close()


class _Extractor:
    def __init__(self, root_fd: int, dest: str, no_overwrite: bool) -> None:
        self.root_fd = root_fd
        self.dest = posixpath.normpath(posixpath.join("/", dest))
        self.no_overwrite = no_overwrite
        self.dirs: list[tuple[str, int]] = []  # (container path, mtime ns): set last
        self._parent: tuple[str, int] | None = None  # the last parent opened, reused

    def close(self) -> None:
        self._drop_parent()

    def _drop_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _path(self, rel: str) -> str:
        return self.dest if rel == "." else posixpath.join(self.dest, rel)

    # -- parents ---------------------------------------------------------------------------

    def _parent_fd(self, rel_parent: str) -> int:
        """The directory `rel_parent` under dest, resolved in the root, made if missing."""
        path = self._path(rel_parent)
        if self._parent is not None and self._parent[0] == path:
            return self._parent[1]
        self._drop_parent()
        try:
            fd = open_in_root(self.root_fd, path, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            fd = self._make_parents(rel_parent)
        self._parent = (path, fd)
        return fd

    def _make_parents(self, rel_parent: str) -> int:
        fd = open_in_root(self.root_fd, self.dest, os.O_PATH | os.O_DIRECTORY)
        done = self.dest
        try:
            for comp in rel_parent.split("/"):
                nxt = posixpath.join(done, comp)
                try:
                    nfd = open_in_root(self.root_fd, nxt, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    # made under the fd we hold, never through a path
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd, done = nfd, nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- members ---------------------------------------------------------------------------

    def member(self, m: Member, reader: TarReader) -> None:
        try:
            rel = clean_member_name(m.name)
            if "\0" in m.linkname:
                raise ValueError(f"invalid link name of {m.name!r}: it holds a NUL byte")
        except ValueError as e:
            raise BadArchive(str(e)) from None
        if rel == ".":
            return  # the extraction point itself: it exists and stays as it is
        where = self._path(rel)
        try:
            self._apply(m, rel, reader)
        except TarError as e:
            raise BadArchive(f"invalid tar stream: {e}") from None
        except OSError as e:
            msg = f"cannot extract {where}: {e.strerror or e}"
            if e.errno in _HOST_ERRNOS:
                raise ExtractFailed(msg) from None
            raise BadArchive(msg) from None

    def _apply(self, m: Member, rel: str, reader: TarReader) -> None:
        parent, base = posixpath.split(rel)
        pfd = self._parent_fd(parent or ".")
        t = m.type
        is_dir = t == DIR
        st = lstat_at(pfd, base)
        if st is not None:
            have_dir = stat.S_ISDIR(st.st_mode)
            path = "/" + rel  # moby names them relative to the extraction point
            if self.no_overwrite and have_dir and not is_dir:
                raise BadArchive(f"cannot overwrite directory {path!r} with non-directory {path!r}")
            if self.no_overwrite and not have_dir and is_dir:
                raise BadArchive(f"cannot overwrite non-directory {path!r} with directory {path!r}")
            if not (have_dir and is_dir):
                if have_dir:
                    # by fds, never following a symlink, and iteratively (any depth)
                    self._drop_parent_if_below(rel)
                    remove_tree(base, dir_fd=pfd)
                else:
                    os.unlink(base, dir_fd=pfd)
        mode = m.mode & 0o7777
        if t == REG:
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
            try:
                try:
                    reader.write_member(fd, m)
                except BaseException:
                    # a file cut short (a truncated tar, an aborted upload) is not left behind
                    with contextlib.suppress(OSError):
                        os.unlink(base, dir_fd=pfd)
                    raise
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)  # after chown, which clears set-id bits
                os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
            finally:
                os.close(fd)
        elif is_dir:
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            try:
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            self.dirs.append((self._path(rel), m.mtime_ns))
        elif t == SYM:
            os.symlink(m.linkname, base, dir_fd=pfd)
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(base, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        elif t == LNK:
            self._hardlink(m, pfd, base)
        elif t in (CHR, BLK, FIFO):
            if t == FIFO:
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if t == CHR else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            self._chmod_node(pfd, base, mode)
            os.utime(base, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        # other types (GNU volume headers and the like) carry nothing to make: skipped

    def _drop_parent_if_below(self, rel: str) -> None:
        if self._parent is not None and (self._parent[0] + "/").startswith(self._path(rel) + "/"):
            self._drop_parent()

    def _hardlink(self, m: Member, pfd: int, base: str) -> None:
        try:
            target = clean_member_name(m.linkname)
        except ValueError:
            raise BadArchive(f"invalid hardlink {m.name!r} -> {m.linkname!r}: it climbs out of the extraction point") from None
        tparent, tbase = posixpath.split(target)
        if tbase in ("", "."):
            raise BadArchive(f"invalid hardlink {m.name!r} -> {m.linkname!r}")
        tfd = open_in_root(self.root_fd, self._path(tparent or "."), os.O_PATH | os.O_DIRECTORY)
        try:
            # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    @staticmethod
    def _chmod_node(pfd: int, base: str, mode: int) -> None:
        # fchmodat follows symlinks (Linux has no lchmod): go through an O_PATH fd of the node
        # we just made, checked to still be a node, so a racing swap cannot redirect the chmod.
        fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            st = os.fstat(fd)
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                os.chmod(f"/proc/self/fd/{fd}", mode)
        finally:
            os.close(fd)

    def finish(self) -> None:
        # Deepest last-made first, so a child's times are not undone by its parent's.
        self._drop_parent()
        for path, mtime in reversed(self.dirs):
            try:
                fd = open_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY, follow=False)
            except OSError:
                continue  # replaced by a later member
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
