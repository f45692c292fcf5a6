"""COPY and ADD of the classic builder: the sources' cache key and the copy into a rootfs.

moby's builder/dockerfile/copy.go, in the order it does things:
- each source (after `/` and `./` are trimmed) is a URL (ADD only: downloaded, mode 0600,
  mtime from Last-Modified, named after the URL's path or its Content-Disposition), a Go
  filepath.Match wildcard matched against every path of the context (each match a source of
  its own), or a path resolved with symlinks followed inside the context;
- its checksum is `file:<sum>` for a file and `dir:<sha256 of its entries' sums, sorted, joined
  by ",">` for a directory, and several sources make `multi:<sha256 of theirs>`; a sum covers
  the name, mode, owner, size, type and link target of an entry and a file's bytes, never its
  mtime (tarsum version 1), so touching a file keeps the cache and a byte or a mode breaks it;
- a file lands at `dest` or, when `dest` ends in `/` or is a directory, at dest/<its name>; a
  directory's contents (not itself) are copied into `dest`; several sources need a `dest`
  ending in `/`; missing parents are made (0755, owned by the --chown identity for a file, the
  destination directory itself for a directory copy); everything copied is owned by --chown
  or 0:0, keeps its mode (or gets --chmod) and its mtime; ADD unpacks a local tar (plain,
  gzip, bzip2, xz) into `dest` instead of copying it (never one it downloaded).

The rootfs is written only through fds: `dest` is resolved with openat2(RESOLVE_IN_ROOT) from the
root fd (the image's symlinks are followed as the container would, clamped at its root), and
below it every directory is opened without following symlinks; what is in the way is removed
and replaced, never written through. A source is read the same way (RESOLVE_IN_ROOT from the
context's or the other stage's root). Resolving, hashing and copying of one instruction run in
one worker-thread hop.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.utils
import hashlib
import os
import posixpath
import stat
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

from ..base.errors import InvalidParameter
from ..containers import tarextract
from ..containers.rootfs_fs import lstat_at, open_in_root, openat2, resolved_path
from ..util.fstree import remove_tree
from .context_index import ContextIndex, Node
from .context import BENEATH, BuildContext, ContextError, HTTPSession, is_tar_header, decompressed, entry_sum, fetch_url, is_url
from .dockerignore import IgnoreRules, go_clean, go_match, has_wildcards

UNNAMED = "__unnamed__"
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20
DOWNLOAD_MAX = 8 << 30  # bytes of one ADD <url>
DOWNLOAD_TIMEOUT = 600.0


class CopyError(InvalidParameter):
    """COPY or ADD cannot be done as written: one line, in moby's words where it has them."""


# -- flags --------------------------------------------------------------------------------------


def parse_chmod(value: str) -> int:
    """`--chmod=0755`: an octal mode of at most 4 digits."""
    v = value.strip()
    try:
        mode = int(v, 8)
    except ValueError:
        mode = -1
    if not v or mode < 0 or mode > 0o7777:
        raise CopyError(f"invalid chmod parameter: {value!r}: it must be an octal mode such as 0755")
    return mode


def parse_chown(value: str) -> tuple[str, str | None]:
    """`--chown=user[:group]` split (names are the builder's to resolve in the image)."""
    user, sep, group = value.partition(":")
    if not user or (sep and not group):
        raise CopyError(f"invalid chown parameter: {value!r}: it must be user, user:group, uid or uid:gid")
    return user, (group if sep else None)


def numeric_chown(value: str) -> tuple[int, int] | None:
    """(uid, gid) when `--chown` holds numbers only (uid alone: gid = uid, as Docker)."""
    user, group = parse_chown(value)
    if user.isdigit() and (group is None or group.isdigit()):
        uid = int(user)
        return uid, int(group) if group is not None else uid
    return None


def refuse_heredocs(cmd: str, sources: list[str]) -> None:
    """The classic builder has no heredocs: say so instead of 'file not found: <<EOF'."""
    for s in sources:
        if s.startswith("<<"):
            raise CopyError(f"{cmd} {s}: heredocs are not supported by the classic builder "
                            f"(use a file in the build context, or build with BuildKit)")


# -- downloads ----------------------------------------------------------------------------------


def _filename_for_download(url: str, disposition: str) -> str:
    path = urllib.parse.urlsplit(url).path
    if path and not path.endswith("/"):
        name = posixpath.basename(path)
        if name:
            return urllib.parse.unquote(name)
    if disposition:
        msg = email.message.Message()
        msg["content-disposition"] = disposition
        fname = msg.get_param("filename", header="content-disposition")
        if isinstance(fname, str) and fname and not fname.endswith("/"):
            base = posixpath.basename(fname)
            if base and base not in (".", ".."):
                return base
    return ""


async def download(ctx: BuildContext, url: str, session: HTTPSession, *, max_bytes: int = DOWNLOAD_MAX,
                   timeout: float = DOWNLOAD_TIMEOUT) -> tuple[Path, str]:
    """ADD <url>: fetched once per context into its workdir; (its directory, its name or "")."""
    if url in ctx.downloads:
        return ctx.downloads[url]
    where = ctx.workdir / "downloads" / str(len(ctx.downloads))
    where.mkdir(parents=True)
    spool = where / ".part"
    with open(spool, "wb") as f:
        def sink(b: bytes) -> None:
            f.write(b)

        _, headers = await fetch_url(session, url, sink, max_bytes=max_bytes, timeout=timeout)
    lower = {k.lower(): v for k, v in headers.items()}
    name = _filename_for_download(url, lower.get("content-disposition", ""))
    target = where / (name or UNNAMED)
    os.replace(spool, target)
    os.chmod(target, 0o600)
    os.chown(target, 0, 0)
    lastmod = lower.get("last-modified", "")
    if lastmod:
        with contextlib.suppress(TypeError, ValueError):
            t = email.utils.parsedate_to_datetime(lastmod).timestamp()
            os.utime(target, (t, t))
    ctx.downloads[url] = (where, name)
    return where, name


# -- resolving sources --------------------------------------------------------------------------


class _Info:
    """One source: where it is (relative to its root fd), its checksum, what it holds."""

    __slots__ = ("root_fd", "rel", "name", "st", "hash", "entries", "no_decompress", "node")

    def __init__(self, root_fd: int, rel: str, name: str, st: os.stat_result | None, h: str,
                 entries: list[tuple[str, Any]] | None, no_decompress: bool = False, node: Node | None = None) -> None:
        self.root_fd = root_fd
        self.rel = rel  # "" is the root itself
        self.name = name  # the name a file gets inside a destination directory
        self.st = st
        self.hash = h
        # a directory's entries below it (rel, lstat or index node), grouped by parent directory
        self.entries = entries
        self.no_decompress = no_decompress
        self.node = node  # a file of a context held as its index


def _hash_slice(prefix: str, items: list[str]) -> str:
    return prefix + ":" + hashlib.sha256(",".join(items).encode()).hexdigest()


class _Resolver:
    def __init__(self, ctx: BuildContext, root_fd: int, from_context: bool, cmd: str) -> None:
        self.ctx = ctx
        self.root_fd = root_fd
        self.from_context = from_context
        self.cmd = cmd
        self.ignore: IgnoreRules | None = ctx.ignore if from_context and ctx.ignore else None
        self.sums = ctx.sums if from_context else {}
        self._root_path = os.readlink(f"/proc/self/fd/{root_fd}")

    def _sum(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> str:
        known = self.sums.get(rel)
        if known is not None:
            return known
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, rel)
        got = self.ctx.stat_sums.get(key)
        if got is None:
            got = entry_sum(dir_fd, name, rel, st)
            self.ctx.stat_sums[key] = got
        return got

    def _excluded(self, rel: str) -> bool:
        return self.ignore is not None and self.ignore.excluded(rel)

    def _not_found(self, orig: str) -> CopyError:
        if self.from_context:
            return CopyError(f"{self.cmd} failed: file not found in build context or excluded by .dockerignore: "
                             f"stat {orig}: file does not exist")
        return CopyError(f"{self.cmd} failed: stat {orig}: file does not exist")

    def _walk(self, top: str) -> Iterator[tuple[int, str, os.stat_result]]:
        """(dir fd, rel, lstat) of everything below `top`, directory by directory (each
        directory's entries together, a directory before what it holds); the excluded left
        out, an excluded directory entered only when an exception may bring back something in it."""
        pending = [top]
        while pending:
            d = pending.pop()
            fd = openat2(self.root_fd, d or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
            try:
                with os.scandir(fd) as it:
                    ents = sorted(it, key=lambda e: e.name)
                subdirs: list[str] = []
                for e in ents:
                    rel = f"{d}/{e.name}" if d else e.name
                    is_dir = e.is_dir(follow_symlinks=False)
                    if self._excluded(rel):
                        if is_dir and self.ignore is not None and self.ignore.may_include_below(rel):
                            subdirs.append(rel)
                        continue
                    st = e.stat(follow_symlinks=False)
                    yield fd, rel, st
                    if is_dir:
                        subdirs.append(rel)
                pending.extend(reversed(subdirs))
            finally:
                os.close(fd)

    def _resolved_rel(self, fd: int) -> str:
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real == self._root_path:
            return ""
        prefix = self._root_path.rstrip("/") + "/"
        if not real.startswith(prefix):  # pragma: no cover - RESOLVE_IN_ROOT keeps it inside
            raise CopyError(f"{self.cmd} failed: source resolved outside its root")
        return real[len(prefix):]

    def info(self, orig: str, name: str) -> _Info:
        """One source path without wildcards (relative to the root, already trimmed)."""
        clean = go_clean(orig)
        if clean == ".." or clean.startswith("../"):
            raise CopyError(f"{self.cmd} failed: Forbidden path outside the build context: {orig} ()")
        rel0 = "" if clean == "." else clean
        if rel0 and self._excluded(rel0):
            raise self._not_found(orig)
        try:
            fd = open_in_root(self.root_fd, rel0 or ".", os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(orig) from None
        except OSError as e:
            raise CopyError(f"{self.cmd} failed: stat {orig}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            rel = self._resolved_rel(fd)
        finally:
            os.close(fd)
        if rel and rel != rel0 and self._excluded(rel):
            raise self._not_found(orig)
        parent, base = posixpath.split(rel)
        if not stat.S_ISDIR(st.st_mode):
            pfd = openat2(self.root_fd, parent or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
            try:
                h = "file:" + self._sum(pfd, base, rel, st)
            finally:
                os.close(pfd)
            return _Info(self.root_fd, rel, name, st, h, None)
        hashes: list[str] = []
        if rel:
            pfd = openat2(self.root_fd, parent or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
            try:
                hashes.append(self._sum(pfd, base, rel, st))
            finally:
                os.close(pfd)
        entries: list[tuple[str, os.stat_result]] = []
        for dfd, erel, est in self._walk(rel):
            hashes.append(self._sum(dfd, posixpath.basename(erel), erel, est))
            entries.append((erel, est))
        hashes.sort()
        return _Info(self.root_fd, rel, name, st, _hash_slice("dir", hashes), entries)

    def wildcard(self, pattern: str) -> list[_Info]:
        out: list[_Info] = []
        for _fd, rel, _st in self._walk(""):
            if go_match(pattern, rel):
                out.append(self.info(rel, posixpath.basename(rel)))
        return out


class _IndexResolver:
    """_Resolver's answers for a context still held as its index (context_index.py): the
    same paths, the same order, the same sums, without a file on disk."""

    def __init__(self, ctx: BuildContext, index: ContextIndex, cmd: str) -> None:
        self.index = index
        self.cmd = cmd
        self.ignore: IgnoreRules | None = ctx.ignore if ctx.ignore else None
        self._disk = _Resolver.__new__(_Resolver)  # for its error texts only
        self._disk.cmd, self._disk.from_context = cmd, True

    def _excluded(self, rel: str) -> bool:
        return self.ignore is not None and self.ignore.excluded(rel)

    def _may_include_below(self, rel: str) -> bool:
        return self.ignore is not None and self.ignore.may_include_below(rel)

    def info(self, orig: str, name: str) -> _Info:
        clean = go_clean(orig)
        if clean == ".." or clean.startswith("../"):
            raise CopyError(f"{self.cmd} failed: Forbidden path outside the build context: {orig} ()")
        rel0 = "" if clean == "." else clean
        if rel0 and self._excluded(rel0):
            raise self._disk._not_found(orig)
        rel = self.index.resolve(rel0)
        if rel is None or (rel and rel != rel0 and self._excluded(rel)):
            raise self._disk._not_found(orig)
        node = self.index.nodes[rel]
        if node.kind != "d":
            return _Info(-1, rel, name, None, "file:" + node.sum, None, node=node)
        hashes = [node.sum] if rel else []
        entries = list(self.index.walk(rel, self._excluded, self._may_include_below))
        hashes.extend(n.sum for _, n in entries)
        hashes.sort()
        return _Info(-1, rel, name, None, _hash_slice("dir", hashes), entries)

    def wildcard(self, pattern: str) -> list[_Info]:
        return [self.info(rel, posixpath.basename(rel))
                for rel, _ in self.index.walk("", self._excluded, self._may_include_below) if go_match(pattern, rel)]


def _trim(orig: str) -> str:
    p = orig.removeprefix("/")
    return p.removeprefix("./")


def _resolve(ctx: BuildContext, sources: list[str], dest: str, src_fd: int | None, add: bool, *,
             index: ContextIndex | None = None) -> list[_Info]:
    """Blocking: every source of one instruction, with its checksum (`index`: the context's,
    while it is held as one)."""
    cmd = "ADD" if add else "COPY"
    refuse_heredocs(cmd, sources)
    infos: list[_Info] = []
    resolver: _Resolver | _IndexResolver = _IndexResolver(ctx, index, cmd) if index is not None else \
        _Resolver(ctx, src_fd if src_fd is not None else ctx.root_fd, src_fd is None, cmd)
    for orig in sources:
        if is_url(orig):
            if not add:
                raise CopyError(f"{cmd} failed: source can't be a URL for COPY")
            where, name = ctx.downloads[orig]
            if not name and dest.endswith("/"):
                raise CopyError(f"{cmd} failed: cannot determine filename for source {orig}")
            dfd = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fname = name or UNNAMED
                st = os.stat(fname, dir_fd=dfd, follow_symlinks=False)
                h = entry_sum(dfd, fname, fname, st)
            finally:
                os.close(dfd)
            info = _Info(-1, str(where / fname), fname, st, h, None, no_decompress=True)
            infos.append(info)
            continue
        p = _trim(orig)
        try:
            if has_wildcards(p):
                infos.extend(resolver.wildcard(p))
            else:
                infos.append(resolver.info(p, posixpath.basename(go_clean(p)) if p else ""))
        except ValueError as e:  # BadPattern
            if isinstance(e, CopyError):
                raise
            raise CopyError(f"{cmd} failed: {e}") from None
    if not infos:
        raise CopyError(f"{cmd} failed: no source files were specified")
    if len(infos) > 1 and not dest.endswith("/"):
        raise CopyError(f"When using {cmd} with more than one source file, the destination must be a directory "
                        f"and end with a /")
    return infos


def checksum_of(infos: list[_Info]) -> str:
    if len(infos) == 1:
        return infos[0].hash
    return _hash_slice("multi", [i.hash for i in infos])


async def _downloads(ctx: BuildContext, sources: list[str], add: bool, session: HTTPSession | None) -> None:
    for s in sources:
        if add and is_url(s):
            if session is None:
                raise CopyError(f"ADD failed: no HTTP session to download {s} with")
            await download(ctx, s, session)


async def source_checksum(ctx: BuildContext, sources: list[str], *, dest: str = "/", src_fd: int | None = None,
                          add: bool = False, session: HTTPSession | None = None) -> str:
    """The cache key of COPY/ADD `sources` (from the context, or from the root fd `src_fd` of
    another stage or image for --from). `dest` only for moby's checks that depend on it."""
    await _downloads(ctx, sources, add, session)

    def work() -> str:
        with ctx.held_index() as (index, _):
            return checksum_of(_resolve(ctx, sources, dest, src_fd, add, index=index if src_fd is None else None))

    return await asyncio.to_thread(work)


# -- writing into the rootfs --------------------------------------------------------------------


def normalize_dest(workdir: str, dest: str) -> str:
    """moby's normalizeDest: relative to WORKDIR, a trailing `/` kept."""
    if dest.startswith("/"):
        return dest
    joined = posixpath.normpath(posixpath.join("/", workdir or "/", dest))
    joined = "/" + joined.lstrip("/")
    if dest.endswith("/") and joined != "/":
        joined += "/"
    return joined


class _Source:
    """One entry to copy, read from the disk (a directory fd and a name) or from the spooled
    tar of a context still held as its index (the spool fd and the node)."""

    __slots__ = ("kind", "perm", "mtime_ns", "size", "rdev", "_dir_fd", "_name", "_spool_fd", "_node")

    def __init__(self, kind: int, perm: int, mtime_ns: int, size: int, rdev: int = 0, *, dir_fd: int = -1,
                 name: str = "", spool_fd: int = -1, node: Node | None = None) -> None:
        self.kind = kind
        self.perm = perm
        self.mtime_ns = mtime_ns
        self.size = size
        self.rdev = rdev
        self._dir_fd = dir_fd
        self._name = name
        self._spool_fd = spool_fd
        self._node = node

    @classmethod
    def on_disk(cls, dir_fd: int, name: str, st: os.stat_result) -> _Source:
        return cls(stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, st.st_rdev,
                   dir_fd=dir_fd, name=name)

    @classmethod
    def in_spool(cls, spool_fd: int, node: Node) -> _Source:
        kind = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK}[node.kind]
        return cls(kind, node.mode, node.mtime_ns, node.size, spool_fd=spool_fd, node=node)

    def linkname(self) -> str:
        if self._node is not None:
            return self._node.linkname
        return os.readlink(self._name, dir_fd=self._dir_fd)

    def write_to(self, out: int) -> None:
        if not self.size:
            return
        if self._node is not None:
            off, left = self._node.offset, self.size
            while left:
                n = os.copy_file_range(self._spool_fd, out, left, off) if left > _COPY_CHUNK else 0
                if not n:
                    data = os.pread(self._spool_fd, min(left, _COPY_CHUNK), off)
                    if not data:
                        raise OSError(5, "the spooled context ended early")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(out, view):]
                    n = len(data)
                off += n
                left -= n
            return
        src = os.open(self._name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        try:
            _copy_data(src, out, self.size)
        finally:
            os.close(src)

    def reader(self) -> tuple[Callable[[int], bytes], Callable[[], None]]:
        """(read(n), close) over the content, for ADD's archive sniffing and unpacking."""
        if self._node is not None:
            pos = [self._node.offset]
            end = self._node.offset + self.size
            spool = self._spool_fd

            def read(n: int) -> bytes:
                n = min(n, end - pos[0])
                if n <= 0:
                    return b""
                data = os.pread(spool, n, pos[0])
                pos[0] += len(data)
                return data

            return read, lambda: None
        fd = os.open(self._name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        return (lambda n: os.read(fd, n)), (lambda: os.close(fd))


class _Writer:
    def __init__(self, root_fd: int, owner: tuple[int, int], chmod: int | None) -> None:
        self.root_fd = root_fd
        self.uid, self.gid = owner
        self.chmod = chmod

    def mkdirs(self, path: str, owner: tuple[int, int]) -> int:
        """An fd of the rootfs directory `path` (resolved in the root), made with its missing
        parents (0755, `owner`) when missing; a non-directory in the way is an error."""
        # moby resolves the destination first (FollowSymlinkInScope), so a dangling symlink of
        # the image leads to where its target would be, inside the root, and that is made
        comps = [c for c in resolved_path(self.root_fd, path).split("/") if c]
        fd = open_in_root(self.root_fd, "/", os.O_PATH | os.O_DIRECTORY)
        done = ""
        try:
            for comp in comps:
                nxt = f"{done}/{comp}"
                try:
                    nfd = open_in_root(self.root_fd, nxt, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    # made under the fd we hold, never through a path
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                    os.fchown(nfd, *owner)
                    os.fchmod(nfd, 0o755)
                except NotADirectoryError:
                    raise CopyError(f"failed to copy files: mkdir {nxt}: not a directory") from None
                os.close(fd)
                fd, done = nfd, nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _clear(self, pfd: int, base: str, keep_dir: bool) -> bool:
        """Remove what is at `base` unless it is a directory and `keep_dir`; True if a
        directory was kept."""
        st = lstat_at(pfd, base)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            remove_tree(base, dir_fd=pfd)
        else:
            os.unlink(base, dir_fd=pfd)
        return False

    def _mode(self, src: _Source) -> int:
        return self.chmod if self.chmod is not None else src.perm

    def file(self, src: _Source, pfd: int, base: str) -> None:
        try:
            self._create(src, pfd, base)
        except FileExistsError:
            self._clear(pfd, base, keep_dir=False)
            self._create(src, pfd, base)

    def _create(self, src: _Source, pfd: int, base: str) -> None:
        mt = src.mtime_ns
        kind = src.kind
        if kind == stat.S_IFREG:
            out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
            try:
                src.write_to(out)
                os.fchown(out, self.uid, self.gid)
                os.fchmod(out, self._mode(src))  # after chown, which clears set-id bits
                os.utime(out, ns=(mt, mt))
            finally:
                os.close(out)
        elif kind == stat.S_IFLNK:
            os.symlink(src.linkname(), base, dir_fd=pfd)
            os.chown(base, self.uid, self.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(base, ns=(mt, mt), dir_fd=pfd, follow_symlinks=False)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            if kind == stat.S_IFIFO:
                os.mkfifo(base, 0o600, dir_fd=pfd)
            else:
                os.mknod(base, kind | 0o600, src.rdev, dir_fd=pfd)
            fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.chown(f"/proc/self/fd/{fd}", self.uid, self.gid)
                os.chmod(f"/proc/self/fd/{fd}", self._mode(src))
                os.utime(f"/proc/self/fd/{fd}", ns=(mt, mt))
            finally:
                os.close(fd)
        # sockets are not copied (tar has no way to carry them either)

    def directory(self, src: _Source, pfd: int, base: str) -> None:
        kept = self._clear(pfd, base, keep_dir=True)
        if not kept:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        try:
            os.fchown(fd, self.uid, self.gid)
            os.fchmod(fd, self._mode(src))
        finally:
            os.close(fd)

    def tree(self, entries: Iterator[tuple[str, _Source]], dest_fd: int) -> None:
        """A directory's entries (paths relative to it, a directory before what it holds)
        into the directory `dest_fd`."""
        cur_parent: str | None = None
        dfd = -1
        times: list[tuple[str, int]] = []
        try:
            for sub, src in entries:
                parent, base = posixpath.split(sub)
                if parent != cur_parent:
                    if dfd >= 0:
                        os.close(dfd)
                        dfd = -1
                    dfd = self._below(dest_fd, parent)
                    cur_parent = parent
                if src.kind == stat.S_IFDIR:
                    self.directory(src, dfd, base)
                    times.append((sub, src.mtime_ns))
                else:
                    self.file(src, dfd, base)
        finally:
            if dfd >= 0:
                os.close(dfd)
        for sub, mt in reversed(times):  # deepest last-made first
            with contextlib.suppress(OSError):
                fd = openat2(dest_fd, sub, os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
                try:
                    os.utime(fd, ns=(mt, mt))
                finally:
                    os.close(fd)

    def _below(self, dest_fd: int, parent: str) -> int:
        """The directory `parent` below the destination, made (0755, the copy's owner) when an
        excluded directory was skipped but something in it is copied."""
        fd = os.dup(dest_fd)
        for comp in [c for c in parent.split("/") if c]:
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                os.fchown(nfd, self.uid, self.gid)
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            fd = nfd
        return fd


def _copy_data(src: int, out: int, size: int) -> None:
    if size <= _COPY_CHUNK:
        data = os.read(src, size)
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
        if len(data) == size:
            return
    while True:
        try:
            n = os.copy_file_range(src, out, _COPY_CHUNK)
        except OSError:
            n = os.sendfile(out, src, None, _COPY_CHUNK)
        if not n:
            return


def _is_archive(src: _Source) -> bool:
    """moby's isArchivePath: decompresses and reads a first tar header."""
    if src.kind != stat.S_IFREG:
        return False
    read, close = src.reader()
    try:
        _, chunks = decompressed(read)
        head = b""
        for c in chunks:
            head += c
            if len(head) >= 512:
                break
        return is_tar_header(head) and head[:512] != bytes(512)
    except ValueError:
        return False
    finally:
        close()


def _untar(src: _Source, root_fd: int, dest: str) -> None:
    read, close = src.reader()
    try:
        _, chunks = decompressed(read)
        tarextract.extract(root_fd, dest, chunks)
    except (tarextract.BadArchive, ContextError) as e:
        raise CopyError(f"ADD failed: {e}") from None
    finally:
        close()


def _disk_entries(info: _Info) -> Iterator[tuple[str, _Source]]:
    assert info.entries is not None
    top = info.rel
    cut = len(top) + 1 if top else 0
    cur: str | None = None
    sfd = -1
    try:
        for rel, st in info.entries:
            sub = rel[cut:]
            parent, base = posixpath.split(sub)
            if parent != cur:
                if sfd >= 0:
                    os.close(sfd)
                    sfd = -1
                sfd = openat2(info.root_fd, posixpath.join(top, parent).strip("/") or ".",
                              os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
                cur = parent
            yield sub, _Source.on_disk(sfd, base, st)
    finally:
        if sfd >= 0:
            os.close(sfd)


def _spool_entries(info: _Info, spool_fd: int) -> Iterator[tuple[str, _Source]]:
    assert info.entries is not None
    cut = len(info.rel) + 1 if info.rel else 0
    for rel, node in info.entries:
        yield rel[cut:], _Source.in_spool(spool_fd, node)


def _copy(ctx: BuildContext, sources: list[str], dest: str, root_fd: int, workdir: str,
          owner: tuple[int, int], chmod: int | None, add: bool, src_fd: int | None) -> None:
    dest_path = normalize_dest(workdir, dest)
    spool_fd = -1
    with ctx.held_index() as (index, spool):
        if src_fd is None and index is not None and spool is not None:
            spool_fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
        try:
            infos = _resolve(ctx, sources, dest_path, src_fd, add, index=index if src_fd is None else None)
            _copy_infos(infos, dest_path, root_fd, owner, chmod, add, spool_fd, dest)
        finally:
            if spool_fd >= 0:
                os.close(spool_fd)


def _copy_infos(infos: list[_Info], dest_path: str, root_fd: int, owner: tuple[int, int], chmod: int | None,
                add: bool, spool_fd: int, dest: str) -> None:
    ends_in_slash = dest_path.endswith("/")
    w = _Writer(root_fd, owner, chmod)
    try:
        for info in infos:
            if info.entries is not None:
                # moby: the parents of a directory's destination are root's, the destination
                # itself (when made) the copy's owner
                os.close(w.mkdirs(posixpath.dirname(dest_path.rstrip("/")) or "/", (0, 0)))
                dfd = w.mkdirs(dest_path, owner)
                try:
                    w.tree(_spool_entries(info, spool_fd) if spool_fd >= 0 else _disk_entries(info), dfd)
                finally:
                    os.close(dfd)
                continue
            sdir = -1
            if info.node is not None:
                src = _Source.in_spool(spool_fd, info.node)
            else:
                assert info.st is not None
                if info.root_fd < 0:  # a download: in its own directory
                    sdir = os.open(posixpath.dirname(info.rel), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                else:
                    parent = posixpath.dirname(info.rel)
                    sdir = openat2(info.root_fd, parent or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
                # info.rel is the source with its symlinks resolved: its target is copied
                src = _Source.on_disk(sdir, posixpath.basename(info.rel), info.st)
            try:
                if add and not info.no_decompress and _is_archive(src):
                    os.close(w.mkdirs(dest_path, (0, 0)))
                    _untar(src, root_fd, dest_path)
                    continue
                target = dest_path
                if ends_in_slash or _is_dir(root_fd, dest_path):
                    target = posixpath.join(dest_path, info.name)
                # moby writes where the destination resolves inside the root (its
                # ResolveScopedPath follows a last-component symlink too)
                parent, base = posixpath.split(resolved_path(root_fd, target.rstrip("/") or "/"))
                if not base:
                    raise CopyError("failed to copy files: the destination of a file cannot be /")
                pfd = w.mkdirs(parent or "/", owner)
                try:
                    w.file(src, pfd, base)
                finally:
                    os.close(pfd)
            finally:
                if sdir >= 0:
                    os.close(sdir)
    except OSError as e:
        raise CopyError(f"failed to copy files: {e.strerror or e}: {e.filename or dest}") from None


def _is_dir(root_fd: int, path: str) -> bool:
    try:
        fd = open_in_root(root_fd, path, os.O_PATH)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


async def copy_into(ctx: BuildContext, sources: list[str], dest: str, root_fd: int, *, workdir: str = "/",
                    chown: tuple[int, int] | None = None, chmod: int | None = None, add: bool = False,
                    session: HTTPSession | None = None, src_fd: int | None = None) -> None:
    """COPY/ADD `sources` (from the context, or from the directory fd `src_fd` of another
    stage or image for --from) to `dest` in the rootfs open as `root_fd`. Resolving, hashing
    and copying in one worker-thread hop; a context still held as its index is copied
    straight from its spooled tar (never unpacked to disk first)."""
    await _downloads(ctx, sources, add, session)
    await asyncio.to_thread(_copy, ctx, sources, dest, root_fd, workdir, chown or (0, 0), chmod, add, src_fd)
