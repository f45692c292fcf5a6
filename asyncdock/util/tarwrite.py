"""Tar streams made in the engine: a container's files (docker cp out, docker export) and, through
`TarOut`, `header` and `file_entry`, image layers (snapshots/diff.py).

The walk is fd-relative from directory fds opened inside the container's root (rootfs_fs):
a child is lstat'ed and opened by name under its parent's fd, never through a path, and never
through a symlink. Headers carry numeric owners only, with empty user and group names (moby's
FileInfoHeaderNoLookups): `tarfile.TarFile.add` would look the ids up, and glibc would then
read the container's nsswitch.conf and load its NSS modules if we ran chrooted, or report host
names for container ids if not.

The stream is a generator of chunks of about CHUNK bytes (bounded memory, whatever the size
of a file), meant to be advanced one step at a time in a worker thread. Its end is two zero
blocks, as Go's archive/tar writes it.
"""
from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections.abc import Generator, Iterator

CHUNK = 1 << 18
_READ = 1 << 20
_BLOCK = 512
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def header(name: str, st: os.stat_result | None, type_: bytes, *, size: int = 0, linkname: str = "",
           xattrs: dict[str, bytes] | None = None) -> bytes:
    """One tar header (PAX where a name, a link or an xattr needs it) with numeric owners only.
    `st` None: an entry of mode 0, owner 0:0, time 0 (a whiteout the walk made up)."""
    ti = tarfile.TarInfo(name)
    ti.type = type_
    if st is not None:
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.mtime = st.st_mtime_ns // 1_000_000_000  # whole seconds, as moby writes them
        if type_ in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        ti.mode = ti.uid = ti.gid = ti.mtime = 0
    ti.uname = ti.gname = ""
    ti.size = size
    ti.linkname = linkname
    if xattrs:
        # Values are bytes (security.capability is binary): tarfile writes a str decoded with
        # surrogateescape back as the same bytes (hdrcharset=BINARY when not UTF-8).
        ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                          for k, v in sorted(xattrs.items())}
    # tobuf only encodes the fields above: no lookup of any kind
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")




class TarOut:
    """The stream being built: bytes not yet handed out, and the first name of every
    hard-linked inode written (later names become hard-link entries)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.links: dict[tuple[int, int], str] = {}  # (dev, ino) of regular files -> first name

    def take(self, chunk: int) -> bytes | None:
        """The pending bytes once there are at least `chunk` of them."""
        if len(self.out) < chunk:
            return None
        b = bytes(self.out)
        self.out.clear()
        return b

    def end(self) -> bytes:
        """What is left, with the two zero blocks that end an archive."""
        self.out += bytes(2 * _BLOCK)
        b = bytes(self.out)
        self.out.clear()
        return b




def tar_stream(entries: list[tuple[int, str, str]], *, chunk: int = CHUNK) -> Iterator[bytes]:
    """The tar of `entries`: (dir fd, name under it, name in the archive), directories
    recursively, children in name order. Entries that vanish while the walk runs are left
    out (a running container's files change). The fds given stay the caller's."""
    w = TarOut()
    for dir_fd, name, arcname in entries:
        yield from _entry(w, dir_fd, name, arcname, chunk, top=True)
    w.out += bytes(2 * _BLOCK)
    yield bytes(w.out)


def _entry(w: TarOut, dir_fd: int, name: str, arcname: str, chunk: int, *, top: bool = False) -> Iterator[bytes]:
    # An explicit stack (one open fd per level) instead of recursion: a container's tree can be
    # deeper than Python's recursion limit.
    stack: list[tuple[int, str, list[str]]] = []
    try:
        pending: tuple[int, str, str] | None = (dir_fd, name, arcname)
        while True:
            if pending is not None:
                pfd, n, arc = pending
                pending = None
                child = yield from _one(w, pfd, n, arc, chunk, top=top)
                top = False
                if child is not None:
                    names = sorted(e.name for e in os.scandir(child))
                    names.reverse()  # popped from the end
                    stack.append((child, arc, names))
            if not stack:
                return
            fd, arc, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            n = names.pop()
            pending = (fd, n, f"{arc.rstrip('/')}/{n}" if arc not in ("", "/") else n)
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _one(w: TarOut, pfd: int, name: str, arc: str, chunk: int, *, top: bool) -> Generator[bytes, None, int | None]:
    """Write one entry; return the fd of its directory (to walk) or None. A generator: the
    data of a large file goes out in chunks."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        if top:
            raise
        return None
    mode = st.st_mode
    if stat.S_ISREG(mode):
        yield from file_entry(w, pfd, name, arc, st, chunk)
        return None
    if stat.S_ISDIR(mode):
        try:
            dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as e:
            # gone, or no directory any more (ELOOP: a symlink now) since the lstat
            if top or e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise
            return None
        try:
            st = os.fstat(dfd)
            w.out += header(arc, st, tarfile.DIRTYPE)
        except BaseException:
            os.close(dfd)
            raise
        if len(w.out) >= chunk:
            yield bytes(w.out)
            w.out.clear()
        return dfd
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(name, dir_fd=pfd)
        except OSError as e:
            if top or e.errno not in (errno.ENOENT, errno.EINVAL):
                raise
            return None
        w.out += header(arc, st, tarfile.SYMTYPE, linkname=target)
    elif stat.S_ISCHR(mode):
        w.out += header(arc, st, tarfile.CHRTYPE)
    elif stat.S_ISBLK(mode):
        w.out += header(arc, st, tarfile.BLKTYPE)
    elif stat.S_ISFIFO(mode):
        w.out += header(arc, st, tarfile.FIFOTYPE)
    else:
        return None  # sockets: tar has no type for them (moby skips them too)
    if len(w.out) >= chunk:
        yield bytes(w.out)
        w.out.clear()
    return None


def file_entry(w: TarOut, pfd: int, name: str, arc: str, st: os.stat_result, chunk: int, *,
               xattrs: dict[str, bytes] | None = None) -> Iterator[bytes]:
    """The entry of the regular file `name` under `pfd` (a hard-link entry for an inode already
    written), its data in chunks; nothing when it vanished or is no regular file any more."""
    # O_PATH first: opening a name that a running container just swapped for a FIFO or a device
    # would block or act on it. The O_PATH fd is checked, then reopened (same inode) to read.
    try:
        ofd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(ofd)
        if not stat.S_ISREG(st.st_mode):
            return
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            first = w.links.get(key)
            if first is not None and first != arc:
                w.out += header(arc, st, tarfile.LNKTYPE, linkname=first, xattrs=xattrs)
                return
            w.links[key] = arc
        fd = os.open(f"/proc/self/fd/{ofd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ofd)
    try:
        size = st.st_size
        w.out += header(arc, st, tarfile.REGTYPE, size=size, xattrs=xattrs)
        left = size
        while left:
            data = os.read(fd, min(left, _READ))
            if not data:
                # it shrank while we read: pad, as GNU tar does, so the stream stays a tar
                w.out += bytes(left)
                break
            w.out += data
            left -= len(data)
            if len(w.out) >= chunk:
                yield bytes(w.out)
                w.out.clear()
        pad = -size % _BLOCK
        if pad:
            w.out += bytes(pad)
    finally:
        os.close(fd)
    if len(w.out) >= chunk:
        yield bytes(w.out)
        w.out.clear()
