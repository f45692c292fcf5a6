"""Apply one image layer (a possibly compressed tar stream) to a directory. Blocking: run it in a
worker thread, one hop per layer.

The reader is consumed strictly forward (it may be a pipe fed by a download still running), and
the diff ID is hashed over the uncompressed bytes as they are produced, so a layer is read once.
The tar is parsed by our own lean reader (tarstream.py) and gzip is inflated by ISA-L when the
`isal` package is there (several times faster than zlib), else by zlib.

Per file the work is one open (with the final permission bits when the umask lets them through),
the writes, one futimens and one close: chown and chmod are issued only when the kernel would not
already have given the file the owner and mode the layer asks for (learned once per directory).

Security model: the tar is hostile. Every entry is created relative to a directory fd that was
opened component by component with O_NOFOLLOW from `dest`, so a symlink planted by the layer (or
by a lower layer, in "delete" mode) is never followed; `..` is refused; hard links resolve their
target the same way.
"""
from __future__ import annotations

import base64
import errno
import logging
import os
import stat
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ..util.fstree import remove_tree
from .limits import LayerNoSpace, guarded, is_no_space
from .tarstream import BLK, CHR, DIR, FIFO, LNK, REG, SYM, ChunkStream, Member, TarError, TarReader

try:  # ISA-L's inflate: same API as zlib's decompressobj, several times faster
    from isal import isal_zlib as _inflate_mod

    _INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _inflate_mod.error)
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _inflate_mod = zlib  # type: ignore[assignment]
    _INFLATE_ERRORS = (zlib.error,)

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # compressed bytes read from the source per call
_OUT_MAX = 1 << 20  # cap on one decompress() output, so a zip bomb cannot balloon memory

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerError(ValueError):
    """The layer is malformed or tries to write outside its destination."""


# ---------------------------------------------------------------------------------------------
# Decompression + diff ID


def _sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "tar"


def compression_of(media_type: str) -> str | None:
    """"gzip", "zstd", "tar", or None when the media type does not say (we then sniff)."""
    mt = media_type.lower()
    if mt.endswith(("+gzip", ".tar.gzip", ".tar.gz", "+gz")):
        return "gzip"
    if mt.endswith(("+zstd", ".tar.zstd")):
        return "zstd"
    if mt.endswith((".tar", "layer.v1.tar", "+tar")) or mt == "application/x-tar":
        return "tar"
    return None


def _gunzip(reader: BinaryIO, first: bytes) -> Iterator[bytes]:
    """Inflate a gzip stream, including concatenated members (pigz, some registries)."""
    d = _inflate_mod.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, max window
    pending = first
    started = False
    while True:
        if not pending:
            pending = reader.read(_CHUNK)
            if not pending:
                if not d.eof:
                    raise LayerError("truncated gzip stream" if started else "empty layer")
                return
        started = True
        if d.eof:
            if pending[:1] == b"\x1f" and len(pending) < 2:
                pending += reader.read(_CHUNK)
            if pending[:2] != b"\x1f\x8b":
                # Trailing padding after the last member: not part of the layer. Drain it so
                # a pipe writer is never left blocked.
                while reader.read(_CHUNK):
                    pass
                return
            d = _inflate_mod.decompressobj(wbits=47)
        try:
            out = d.decompress(pending, _OUT_MAX)
        except _INFLATE_ERRORS as e:
            raise LayerError(f"invalid gzip data: {e}") from None
        pending = d.unused_data if d.eof else d.unconsumed_tail
        if out:
            yield out


def _unzstd(reader: BinaryIO, first: bytes) -> Iterator[bytes]:
    import zstandard  # only zstd layers pay for the import

    class _Prefixed:
        # zstandard reads through .read(); put back the bytes we sniffed.
        def __init__(self) -> None:
            self.first = first

        def read(self, n: int = -1) -> bytes:
            if self.first:
                b, self.first = self.first, b""
                return b
            return reader.read(n if n and n > 0 else _CHUNK)

    dctx = zstandard.ZstdDecompressor()
    try:
        with dctx.stream_reader(_Prefixed(), read_size=_CHUNK, read_across_frames=True,
                                closefd=False) as zr:
            while True:
                out = zr.read(_OUT_MAX)
                if not out:
                    return
                yield out
    except zstandard.ZstdError as e:
        raise LayerError(f"invalid zstd data: {e}") from None


def _plain(reader: BinaryIO, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        b = reader.read(_CHUNK)
        if not b:
            return
        yield b


def _open_stream(reader: BinaryIO, media_type: str, dest: Path, max_size: int, min_free: int) -> ChunkStream:
    first = reader.read(_CHUNK)
    while 0 < len(first) < 4:  # reads may be short: sniffing needs the magic bytes
        more = reader.read(_CHUNK)
        if not more:
            break
        first += more
    kind = compression_of(media_type) or _sniff(first)
    decode = {"gzip": _gunzip, "zstd": _unzstd, "tar": _plain}[kind]
    chunks = decode(reader, first)
    if max_size or min_free:
        # Counted after decompression: a small blob may expand without bound (a zip bomb).
        chunks = guarded(chunks, dest, max_size, min_free)
    return ChunkStream(chunks)


# ---------------------------------------------------------------------------------------------
# Safe path handling


def _components(name: str) -> list[str]:
    """Entry name -> path components under dest. Leading '/' is stripped as tar does; '..'
    anywhere is refused (even when it would stay inside: a layer has no business using it)."""
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise LayerError(f"layer entry {name!r} has a '..' component")
    return parts


class _DirCursor:
    """Opens directories under dest one component at a time with O_NOFOLLOW.

    Keeps the fds of the last resolved chain: tar entries come grouped by directory, so most
    entries reuse the whole chain and cost no open() at all. Only children of the current tip
    are ever removed (whiteouts, replaced entries), so a cached fd never points at a directory
    that the extraction replaced.

    Per directory of the chain it also remembers the owner the kernel gives to what is created
    in it (learned from the first entry made there: setgid directories, `grpid` mounts and
    id-mapped mounts all decide that), so entries that already have the owner the layer asks
    for are not chowned.
    """

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.names: list[str] = []
        self.fds: list[int] = []
        self.owners: list[tuple[int, int] | None] = []
        self.root_owner: tuple[int, int] | None = None

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.names.clear()
        self.fds.clear()
        self.owners.clear()

    def _truncate(self, keep: int) -> None:
        for fd in self.fds[keep:]:
            os.close(fd)
        del self.names[keep:], self.fds[keep:], self.owners[keep:]

    def resolve(self, comps: list[str], *, create: bool) -> int | None:
        """fd of the directory `comps` (relative to dest). Missing directories are created with
        mode 0755 if `create`, else None is returned. A non-directory on the way is an error."""
        names = self.names
        keep = 0
        limit = min(len(names), len(comps))
        while keep < limit and names[keep] == comps[keep]:
            keep += 1
        if keep == len(comps) and keep == len(names):
            return self.fds[-1] if self.fds else self.root_fd
        self._truncate(keep)
        fd = self.fds[-1] if self.fds else self.root_fd
        for comp in comps[keep:]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.fchmod(nfd, 0o755)  # whatever the daemon's umask is
            except OSError as e:
                # ELOOP (a symlink) or ENOTDIR (a file): refusing is the only safe answer.
                raise LayerError(
                    f"path {'/'.join(comps)!r} goes through {comp!r}, which is not a directory "
                    f"({e.strerror})") from None
            self.names.append(comp)
            self.fds.append(nfd)
            self.owners.append(None)
            fd = nfd
        return fd

    def push(self, name: str, fd: int) -> None:
        """Adopt a just-created directory's fd as the new tip (its parent must be the tip)."""
        self.names.append(name)
        self.fds.append(fd)
        self.owners.append(None)

    def tip_owner(self) -> tuple[int, int] | None:
        return self.owners[-1] if self.owners else self.root_owner

    def set_tip_owner(self, owner: tuple[int, int]) -> None:
        if self.owners:
            self.owners[-1] = owner
        else:
            self.root_owner = owner


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, st: os.stat_result | None = None) -> None:
    """Remove a child of dir_fd, whatever it is, never following links, at any depth."""
    st = st or _lstat(name, dir_fd)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        remove_tree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _process_umask() -> int | None:
    """The umask, read without changing it (os.umask() would race with other threads); None
    when the kernel does not say (then every file is chmodded)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _has_default_acl(fd: int) -> bool:
    """A default ACL on a directory replaces the umask for what is created in it."""
    try:
        os.getxattr(fd, "system.posix_acl_default")
    except OSError:
        return False  # ENODATA (none), ENOTSUP (no ACLs here)
    return True


# ---------------------------------------------------------------------------------------------
# Extraction


def _xattrs(member: Member) -> list[tuple[str, bytes]]:
    if not member.pax_headers:
        return []
    out: list[tuple[str, bytes]] = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            # PAX values are decoded as UTF-8 with surrogateescape; this gives the raw bytes
            # back (security.capability is binary).
            out.append((key[13:], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            out.append((urllib.parse.unquote(key[17:]), base64.b64decode(value + "==")))
    # A layer must not forge overlayfs' own metadata (opaque dirs, redirects, metacopy).
    return [(k, v) for k, v in out if not k.startswith("trusted.overlay.")]


class _Extractor:
    def __init__(self, dest: Path, whiteouts: Literal["overlay", "delete"]) -> None:
        self.dest = dest
        self.mode = whiteouts
        self.root_fd = os.open(dest, _DIR_FLAGS)
        self.cur = _DirCursor(self.root_fd)
        self.privileged = os.geteuid() == 0
        # (components, mode, atime_ns, mtime_ns): applied once the layer is done, because
        # creating entries inside a directory changes its mtime (and a 0555 dir would stop a
        # non-root extraction from filling it).
        self.dirs: list[tuple[list[str], int, int, int]] = []
        # "delete" mode: paths this layer wrote, which an opaque marker must not remove.
        self.written: set[str] = set()
        self.xattr_warned = False
        # Permission bits a new file keeps as given to open(): those outside the umask, unless a
        # default ACL decides instead. In "delete" mode the lower layers' directories may carry
        # default ACLs we did not see being set, so every file is chmodded there.
        umask = _process_umask()
        self.acl_risk = whiteouts == "delete" or umask is None or _has_default_acl(self.root_fd)
        self.umask = 0o777 if umask is None else umask
        # "overlay" mode (dest starts empty): the apparent size of what the layer wrote, as
        # Docker reports a layer's size (st_size of every non-directory, hard-linked inodes
        # once). Every name is new, so a plain sum is exact until something is replaced or
        # removed; then None, and the caller walks the tree instead.
        self.size: int | None = 0 if whiteouts == "overlay" else None

    def close(self) -> None:
        self.cur.close()
        os.close(self.root_fd)

    # -- per-entry -----------------------------------------------------------------------------

    def entry(self, m: Member, tr: TarReader) -> None:
        comps = _components(m.name)
        if not comps:
            if m.type != DIR:
                raise LayerError(f"layer entry {m.name!r} names the root but is not a directory")
            self._root_dir(m)
            return
        base = comps[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(comps)
            return
        pfd = self.cur.resolve(comps[:-1], create=True)
        assert pfd is not None
        if self.mode == "delete":
            # Ancestors too: a directory this layer only implies must survive an opaque marker.
            for i in range(len(comps), 0, -1):
                path = "/".join(comps[:i])
                if path in self.written:
                    break
                self.written.add(path)
        t = m.type
        if t == REG:
            self._file(pfd, base, m, tr)
        elif t == DIR:
            self._dir(pfd, comps, m)
        elif t == SYM:
            self._symlink(pfd, base, m)
        elif t == LNK:
            self._hardlink(pfd, base, m)
        elif t == CHR or t == BLK or t == FIFO:
            self._node(pfd, base, m)
        else:
            log.debug("skipping layer entry %r of tar type %r", m.name, t)

    def _create(self, pfd: int, name: str, make: Callable[[], Any]) -> Any:
        """Run make(); if the name is taken, remove what is there and try once more."""
        try:
            return make()
        except FileExistsError:
            self.size = None
            _remove(name, pfd)
            return make()

    def _owner_in_tip(self, probe: Callable[[], os.stat_result]) -> tuple[int, int]:
        """The (uid, gid) the kernel gives new entries in the cursor's tip directory; `probe`
        stats one just created there the first time."""
        owner = self.cur.tip_owner()
        if owner is None:
            st = probe()
            owner = (st.st_uid, st.st_gid)
            self.cur.set_tip_owner(owner)
        return owner

    def _file(self, pfd: int, name: str, m: Member, tr: TarReader) -> None:
        mode = m.mode & 0o7777
        try:
            fd = os.open(name, _FILE_FLAGS, mode & 0o777, dir_fd=pfd)
        except FileExistsError:
            self.size = None
            _remove(name, pfd)
            fd = os.open(name, _FILE_FLAGS, mode & 0o777, dir_fd=pfd)
        if self.size is not None:
            self.size += m.size
        try:
            try:
                tr.write_member(fd, m)
            except TarError:
                raise LayerError(f"layer ends inside the data of {m.name!r}") from None
            # Order matters: chown clears set-id bits and security.capability, so chmod and
            # xattrs come after it; times come last because the others touch ctime only.
            chowned = False
            if self.privileged and (m.uid, m.gid) != self._owner_in_tip(lambda: os.fstat(fd)):
                os.fchown(fd, m.uid, m.gid)
                chowned = True
            if chowned or self.acl_risk or mode & 0o7000 or mode & self.umask:
                os.fchmod(fd, mode)
            if m.pax_headers:
                self._set_xattrs(fd, m)
            os.utime(fd, ns=self._times(m))
        finally:
            os.close(fd)

    def _dir(self, pfd: int, comps: list[str], m: Member) -> None:
        name = comps[-1]
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = _lstat(name, pfd)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                self.size = None
                _remove(name, pfd, st)
                os.mkdir(name, 0o700, dir_fd=pfd)
        dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        # The cursor's tip is this dir's parent: adopting the fd saves the open for its children.
        self.cur.push(name, dfd)
        if self.privileged:
            os.fchown(dfd, m.uid, m.gid)
        self._set_xattrs(dfd, m)
        t = self._times(m)
        self.dirs.append((comps, m.mode & 0o7777, t[0], t[1]))

    def _root_dir(self, m: Member) -> None:
        if self.privileged:
            os.fchown(self.root_fd, m.uid, m.gid)
        self._set_xattrs(self.root_fd, m)
        t = self._times(m)
        self.dirs.append(([], m.mode & 0o7777, t[0], t[1]))
        self.cur.root_owner = None  # a chown of a setgid root changes what its children get

    def _symlink(self, pfd: int, name: str, m: Member) -> None:
        self._create(pfd, name, lambda: os.symlink(m.linkname, name, dir_fd=pfd))
        if self.size is not None:
            self.size += len(os.fsencode(m.linkname))
        if self.privileged and (m.uid, m.gid) != self._owner_in_tip(
                lambda: os.stat(name, dir_fd=pfd, follow_symlinks=False)):
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if m.pax_headers:
            # No dir_fd for setxattr: go through the (verified) parent's /proc fd link instead.
            self._set_xattrs(lambda: f"/proc/self/fd/{pfd}/{name}", m)
        os.utime(name, ns=self._times(m), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, pfd: int, name: str, m: Member) -> None:
        tcomps = _components(m.linkname)
        lcomps = _components(m.name)
        if tcomps == lcomps:
            return  # a link to itself names what is already there
        if not tcomps or tcomps[:len(lcomps)] == lcomps:
            # Replacing the link's path would first delete its own target.
            raise LayerError(f"hard link {m.name!r} -> {m.linkname!r} points inside itself")
        if tcomps[:-1] == lcomps[:-1]:
            # Same directory (busybox's applets, for one): the cursor stays where it is.
            tfd, pfd_link, dup = pfd, pfd, None
        else:
            # Resolve the target's directory with the same no-symlink walk. Keep our own fd
            # for the link's parent: the cursor moves to the target's chain.
            dup = os.dup(pfd)
            pfd_link = dup
        try:
            if dup is not None:
                tfd = self.cur.resolve(tcomps[:-1], create=False)  # type: ignore[assignment]
            tname = tcomps[-1]
            if tfd is None or _lstat(tname, tfd) is None:
                raise LayerError(f"hard link {m.name!r} -> {m.linkname!r}: target not in the layer")

            def make() -> None:
                # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW links a symlink itself.
                os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd_link, follow_symlinks=False)

            try:
                self._create(pfd_link, name, make)  # the inode was counted at its first name
            except (PermissionError, IsADirectoryError) as e:
                raise LayerError(f"hard link {m.name!r} -> {m.linkname!r}: {e.strerror}") from None
        finally:
            if dup is not None:
                os.close(dup)

    def _node(self, pfd: int, name: str, m: Member) -> None:
        if m.type == FIFO:
            self._create(pfd, name, lambda: os.mkfifo(name, 0o600, dir_fd=pfd))
        else:
            kind = stat.S_IFCHR if m.type == CHR else stat.S_IFBLK
            dev = os.makedev(m.devmajor, m.devminor)
            try:
                self._create(pfd, name, lambda: os.mknod(name, kind | 0o600, dev, dir_fd=pfd))
            except PermissionError:
                if self.privileged:
                    raise
                # Without CAP_MKNOD devices cannot exist; rootless engines skip them too.
                log.debug("skipping device %r: not privileged", m.name)
                return
        if self.privileged:
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        # After chown: chown clears set-id bits. The node was just created by us, so following
        # is safe here (fchmodat cannot not-follow on Linux).
        os.chmod(name, m.mode & 0o7777, dir_fd=pfd)
        # No dir_fd for setxattr: go through the (verified) parent's /proc fd link instead.
        self._set_xattrs(lambda: f"/proc/self/fd/{pfd}/{name}", m)
        os.utime(name, ns=self._times(m), dir_fd=pfd, follow_symlinks=False)

    # -- metadata ------------------------------------------------------------------------------

    @staticmethod
    def _times(m: Member) -> tuple[int, int]:
        mtime = m.mtime_ns
        return (mtime if m.atime_ns is None else m.atime_ns, mtime)

    def _set_xattrs(self, target: int | Callable[[], str], m: Member) -> None:
        xattrs = _xattrs(m)
        if not xattrs:
            return
        path = target if isinstance(target, int) else target()
        for key, value in xattrs:
            try:
                if isinstance(path, int):
                    os.setxattr(path, key, value)
                else:
                    os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as e:
                # Like moby: a backing fs without (some) xattr support still unpacks; say so.
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
                if not self.xattr_warned:
                    log.warning("could not set xattr %s on %r: %s", key, m.name, e.strerror)
                    self.xattr_warned = True
            if key == "system.posix_acl_default":
                self.acl_risk = True  # files created under this dir take the ACL, not the umask

    # -- whiteouts -----------------------------------------------------------------------------

    def _whiteout(self, comps: list[str]) -> None:
        base = comps[-1]
        parent = comps[:-1]
        if base == WHITEOUT_OPAQUE:
            if self.mode == "overlay":
                pfd = self.cur.resolve(parent, create=True)
                assert pfd is not None
                os.setxattr(pfd, OVERLAY_OPAQUE_XATTR, b"y")
            else:
                pfd = self.cur.resolve(parent, create=False)
                if pfd is not None:
                    self._empty_dir(pfd, parent)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and friends): not content
        name = base[len(WHITEOUT_PREFIX):]
        if not name or name in (".", ".."):
            raise LayerError(f"invalid whiteout {'/'.join(comps)!r}")
        if self.mode == "overlay":
            pfd = self.cur.resolve(parent, create=True)
            assert pfd is not None
            # overlayfs' whiteout: a 0/0 character device (allowed without CAP_MKNOD since 5.8).
            self._create(pfd, name, lambda: os.mknod(name, stat.S_IFCHR | 0o000, 0, dir_fd=pfd))
        else:
            pfd = self.cur.resolve(parent, create=False)
            if pfd is not None:
                _remove(name, pfd)

    def _empty_dir(self, pfd: int, comps: list[str]) -> None:
        prefix = "/".join(comps)
        prefix = prefix + "/" if prefix else ""
        with os.scandir(pfd) as it:
            names = [e.name for e in it]
        for n in names:
            if prefix + n not in self.written:
                _remove(n, pfd)

    # -- end -----------------------------------------------------------------------------------

    def finish(self) -> None:
        # Deepest first, so setting a child's times does not disturb its parent's afterwards.
        for comps, mode, atime, mtime in reversed(self.dirs):
            try:
                fd = self.cur.resolve(comps, create=False) if comps else self.root_fd
            except LayerError:
                continue  # replaced by a non-directory later in the layer
            if fd is None:
                continue
            os.fchmod(fd, mode)
            os.utime(fd, ns=(atime, mtime))


class LayerStats:
    """What apply_layer tells besides the diff ID. `size`: in "overlay" mode, the apparent size
    of what the layer wrote (st_size of every non-directory, hard-linked inodes once: what
    Docker reports as a layer's size), or None when it could not count it exactly."""

    size: int | None = None


def _entry_error(e: OSError, what: str) -> OSError:
    """The same error (its errno, so ENOSPC stays ENOSPC) named for the layer entry: the
    system call's own text names an fd number at best ("[Errno 22] Invalid argument: 17")."""
    if not isinstance(e.errno, int) or e.errno <= 0:
        return e
    return OSError(e.errno, f"{what}: {os.strerror(e.errno)}")


def apply_layer(reader: BinaryIO, dest: Path, *, whiteouts: Literal["overlay", "delete"],
                media_type: str, stats: LayerStats | Any | None = None, max_size: int = 0,
                min_free: int = 0) -> str:
    """Extract the layer read from `reader` into `dest`; return its diff ID ("sha256:<hex>").

    `whiteouts="overlay"`: dest is an empty upper dir; whiteouts become overlayfs whiteouts.
    `whiteouts="delete"`: dest holds the parent's tree; whiteouts remove from it.
    `stats`, if given, receives a LayerStats' fields.
    `max_size` (0: none) bounds the uncompressed stream; `min_free` (0: none) is the free space
    dest's file system must keep, checked every SPACE_CHECK_EVERY bytes.
    Raises LayerError for a malformed layer or one that tries to escape dest, LayerTooLarge
    past max_size, LayerNoSpace when the disk is full or below min_free. What was extracted
    so far stays in dest: the caller removes dest.
    """
    if whiteouts not in ("overlay", "delete"):
        raise ValueError(f"unknown whiteout mode {whiteouts!r}")
    try:
        return _apply(reader, Path(dest), whiteouts, media_type, stats, max_size, min_free)
    except OSError as e:
        # One error for a full disk wherever the extractor met it (a file's data, a mkdir, a
        # symlink, the ingest behind the reader): the pull reports it and cleans up.
        if is_no_space(e) and not isinstance(e, LayerNoSpace):
            raise LayerNoSpace() from e
        raise


def _apply(reader: BinaryIO, dest: Path, whiteouts: Literal["overlay", "delete"], media_type: str,
           stats: LayerStats | Any | None, max_size: int, min_free: int) -> str:
    src = _open_stream(reader, media_type, dest, max_size, min_free)
    ex = _Extractor(dest, whiteouts)
    try:
        tr = TarReader(src)
        seen = False
        while True:
            try:
                m = tr.next()
            except TarError as e:
                raise LayerError(f"corrupt layer tar: {e}" if seen else f"not a tar stream: {e}") from None
            if m is None:
                break
            seen = True
            try:
                ex.entry(m, tr)
            except OSError as e:
                raise _entry_error(e, f"extracting {m.name}") from e
        try:
            ex.finish()
        except OSError as e:
            raise _entry_error(e, "setting directory modes and times") from e
        src.drain()
    finally:
        ex.close()
    if stats is not None:
        stats.size = ex.size
    return src.digest()
