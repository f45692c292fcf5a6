"""The build context of the classic builder: the `POST /build` body (or the `remote` it names)
unpacked into a directory of the engine's own, with its .dockerignore and file checksums.

moby's builder/remotecontext: the body is a tar (plain, gzip, bzip2 or xz), unpacked into a
temporary directory (FromArchive), with a tarsum of every member taken on the way; the
Dockerfile is read from it (`dockerfile`, default `Dockerfile`, falling back to `dockerfile`);
a body that is no archive is a Dockerfile on its own (what the docker CLI makes of
`docker build - < Dockerfile`). Here, as there, the checksums come from the bytes as they are
unpacked, so a COPY's cache key costs no second read of the files.

The tar is hostile: member names are cleaned and may not climb out, every parent is resolved
with openat2(RESOLVE_IN_ROOT) from the context's root fd (a symlink in the tar cannot point a
later member outside), the member itself is made with fd-relative calls that never follow its
last component; owners are the tar's numeric ids; device nodes and fifos are not made (a
context has no use for them and the engine runs as root). What the context's .dockerignore
excludes is not written at all, except the Dockerfile and .dockerignore themselves, which the
builder reads (the CLI sends them whatever the file says, docker/cli's
TrimBuildFilesFromExcludes); COPY leaves them out if they are excluded (copy.py asks `ignore`).
"""
from __future__ import annotations

import asyncio
import bz2
import contextlib
import hashlib
import lzma
import os
import posixpath
import re
import stat
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..base.errors import InvalidParameter
from ..containers.rootfs_fs import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    clean_member_name,
    lstat_at,
    open_in_root,
    open_root,
    openat2,
)
from ..images.pipe import LayerPipe, PipeClosed
from ..snapshots.tarstream import DIR, LNK, REG, SYM, ChunkStream, Member, TarError, TarReader
from ..util.fstree import remove_tree, remove_tree_quietly
from .context_index import ContextIndex, IndexError_, Node, build_index, header_bytes
from .dockerignore import IgnoreRules

DEFAULT_DOCKERFILE = "Dockerfile"
IGNORE_FILE = ".dockerignore"

_CHUNK = 1 << 20
_OUT_MAX = 1 << 20  # one decompress() call's output at most: a small bomb cannot balloon memory
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A walk below the context's root: never through a symlink, never above the root.
BENEATH = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_IGNORE_MAX = 4 << 20


class ContextError(InvalidParameter):
    """The context cannot be used (a bad archive, a missing Dockerfile): one line, 400."""


class HTTPSession(Protocol):
    """What is asked of the `session` (an aiohttp.ClientSession)."""

    def get(self, url: str, **kw: Any) -> Any: ...


# -- decompression ------------------------------------------------------------------------------


def compression_of(head: bytes) -> str:
    """moby's DetectCompression over the first bytes: gzip, bzip2, xz or "" (none)."""
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return ""


_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}


def _maker(kind: str) -> Callable[[], Any]:
    if kind == "gzip":
        return lambda: zlib.decompressobj(wbits=47)
    if kind == "bzip2":
        return bz2.BZ2Decompressor
    return lzma.LZMADecompressor


def _inflate(kind: str, read: Callable[[int], bytes], first: bytes) -> Iterator[bytes]:
    """The decompressed stream, concatenated members included (pigz, pbzip2)."""
    make = _maker(kind)
    d = make()
    pending = first
    is_zlib = kind == "gzip"
    while True:
        if d.eof:
            rest = d.unused_data or read(_CHUNK)
            while rest and len(rest) < len(_MAGIC[kind]):
                more = read(_CHUNK)
                if not more:
                    break
                rest += more
            if not rest.startswith(_MAGIC[kind]):
                return  # trailing padding: not part of the archive
            d = make()
            pending = rest
        try:
            if is_zlib:
                if not pending:
                    pending = read(_CHUNK)
                    if not pending:
                        raise ContextError(f"unexpected EOF in {kind} data")
                out = d.decompress(pending, _OUT_MAX)
                pending = d.unconsumed_tail
            elif d.needs_input:
                if not pending:
                    pending = read(_CHUNK)
                    if not pending:
                        raise ContextError(f"unexpected EOF in {kind} data")
                out = d.decompress(pending, _OUT_MAX)
                pending = b""
            else:
                out = d.decompress(b"", _OUT_MAX)
        except (zlib.error, OSError, lzma.LZMAError, EOFError) as e:
            raise ContextError(f"invalid {kind} data: {e}") from None
        if out:
            yield out


def _plain(read: Callable[[int], bytes], first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while True:
        b = read(_CHUNK)
        if not b:
            return
        yield b


def _fill(read: Callable[[int], bytes], want: int, have: bytes = b"") -> bytes:
    while len(have) < want:
        more = read(_CHUNK)
        if not more:
            break
        have += more
    return have


def _unzstd(read: Callable[[int], bytes], first: bytes) -> Iterator[bytes]:
    import zstandard  # only zstd bodies pay for the import

    class _Prefixed:
        # zstandard reads through .read(); put back the bytes that were sniffed
        def __init__(self) -> None:
            self.first = first

        def read(self, n: int = -1) -> bytes:
            if self.first:
                b, self.first = self.first, b""
                return b
            return read(n if n and n > 0 else _CHUNK)

    try:
        with zstandard.ZstdDecompressor().stream_reader(_Prefixed(), read_size=_CHUNK, read_across_frames=True,
                                                        closefd=False) as zr:
            while True:
                out = zr.read(_OUT_MAX)
                if not out:
                    return
                yield out
    except zstandard.ZstdError as e:
        raise ContextError(f"invalid zstd data: {e}") from None


def decompressed(read: Callable[[int], bytes]) -> tuple[str, Iterator[bytes]]:
    """(compression, the uncompressed chunks) of what `read` yields; sniffed by content
    (moby's DecompressStream: gzip, bzip2, xz, zstd)."""
    head = _fill(read, 6)
    kind = compression_of(head)
    if kind == "zstd":
        return kind, _unzstd(read, head)
    return kind, (_inflate(kind, read, head) if kind else _plain(read, head))


def is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    if block[:512] == bytes(512):
        return True  # an empty archive (just its end blocks)
    raw = block[148:156].rstrip(b"\0 ").lstrip(b" ")
    try:
        stored = int(raw or b"x", 8)
    except ValueError:
        return False
    b = bytearray(block[:512])
    b[148:156] = b" " * 8
    return stored == sum(b) or stored == sum(x - 256 if x > 127 else x for x in b)


def _head_and_rest(chunks: Iterator[bytes], want: int) -> tuple[bytes, Iterator[bytes]]:
    head = b""
    for c in chunks:
        head += c
        if len(head) >= want:
            break

    def again() -> Iterator[bytes]:
        if head:
            yield head
        yield from chunks

    return head, again()


# -- checksums ----------------------------------------------------------------------------------


def entry_sum(dir_fd: int, name: str, rel: str, st: os.stat_result) -> str:
    """The checksum of one entry as it is on disk (what a member sum taken while unpacking
    equals for the same entry); reads a regular file's content."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256(header_bytes(rel, mode, st.st_uid, st.st_gid, st.st_size, "0", ""))
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if st.st_size <= _CHUNK:
                h.update(os.read(fd, st.st_size + 1))
            else:
                while True:
                    b = os.read(fd, _CHUNK)
                    if not b:
                        break
                    h.update(b)
        finally:
            os.close(fd)
        return h.hexdigest()
    if stat.S_ISDIR(st.st_mode):
        return hashlib.sha256(header_bytes(rel, mode, st.st_uid, st.st_gid, 0, "5", "")).hexdigest()
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=dir_fd)
        return hashlib.sha256(header_bytes(rel, mode, st.st_uid, st.st_gid, 0, "2", target)).hexdigest()
    kind = "6" if stat.S_ISFIFO(st.st_mode) else "3" if stat.S_ISCHR(st.st_mode) else "4"
    return hashlib.sha256(header_bytes(rel, mode, st.st_uid, st.st_gid, 0, kind, "") +
                          f"rdev{st.st_rdev}".encode()).hexdigest()


# -- unpacking ----------------------------------------------------------------------------------


class _Unpacker:
    """Members of the context's tar into `root`, checksums taken on the way."""

    def __init__(self, root_fd: int, keep: frozenset[str], rules: IgnoreRules | None = None) -> None:
        self.root_fd = root_fd
        self.keep = keep
        self.rules: IgnoreRules | None = rules
        self.sums: dict[str, str] = {}
        self.early: list[str] = []  # written before the .dockerignore was seen
        self.dirs: list[tuple[str, int]] = []
        self._parent: tuple[str, int] | None = None

    def close(self) -> None:
        self._drop_parent()

    def _drop_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _parent_fd(self, rel_parent: str) -> int:
        if self._parent is not None and self._parent[0] == rel_parent:
            return self._parent[1]
        self._drop_parent()
        try:
            fd = open_in_root(self.root_fd, rel_parent, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            fd = self._make_parents(rel_parent)
        self._parent = (rel_parent, fd)
        return fd

    def _make_parents(self, rel_parent: str) -> int:
        fd = os.dup(self.root_fd)
        done = ""
        try:
            for comp in rel_parent.split("/"):
                nxt = f"{done}/{comp}" if done else comp
                try:
                    nfd = open_in_root(self.root_fd, nxt, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd, done = nfd, nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def member(self, m: Member, reader: TarReader) -> None:
        try:
            rel = clean_member_name(m.name)
            if "\0" in m.linkname:
                raise ValueError(f"invalid link name of {m.name!r}: it holds a NUL byte")
        except ValueError as e:
            raise ContextError(f"invalid build context: {e}") from None
        if rel == ".":
            return
        t = m.type
        if t not in (REG, DIR, SYM, LNK):
            return  # device nodes, fifos, GNU volume headers: nothing a build reads
        if self.rules is not None and rel not in self.keep and self.rules.excluded(rel, t == DIR):
            return  # as if the client had left it out
        try:
            self._apply(m, rel, reader)
        except TarError as e:
            raise ContextError(f"invalid build context: {e}") from None
        except OSError as e:
            raise ContextError(f"cannot extract {rel} from the build context: {e.strerror or e}") from None
        if self.rules is None:
            if rel == IGNORE_FILE and t == REG:
                self._load_rules()
            else:
                self.early.append(rel)

    def _load_rules(self) -> None:
        fd = open_in_root(self.root_fd, IGNORE_FILE, os.O_RDONLY, follow=False)
        try:
            data = os.read(fd, _IGNORE_MAX)
        finally:
            os.close(fd)
        try:
            self.rules = IgnoreRules(data.decode("utf-8", "replace"))
        except ValueError as e:
            raise ContextError(f"failed to parse {IGNORE_FILE}: {e}") from None

    def _apply(self, m: Member, rel: str, reader: TarReader) -> None:
        parent, base = posixpath.split(rel)
        pfd = self._parent_fd(parent or ".")
        t = m.type
        st = lstat_at(pfd, base)
        if st is not None and not (stat.S_ISDIR(st.st_mode) and t == DIR):
            # a later member of the same name replaces the earlier one
            if stat.S_ISDIR(st.st_mode):
                if self._parent is not None and (self._parent[0] + "/").startswith(rel + "/"):
                    self._drop_parent()
                remove_tree(base, dir_fd=pfd)
            else:
                os.unlink(base, dir_fd=pfd)
            self.sums = {k: v for k, v in self.sums.items() if k != rel and not k.startswith(rel + "/")}
        mode = m.mode & 0o7777
        if t == REG:
            fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=pfd)
            try:
                if m.sparse is not None:
                    reader.write_member(fd, m)  # holes kept; summed from disk when asked
                else:
                    h = hashlib.sha256(header_bytes(rel, mode, m.uid, m.gid, m.size, "0", ""))
                    left = m.size
                    while left:
                        data = reader.read_data(min(left, _CHUNK))
                        h.update(data)
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        left -= len(data)
                    self.sums[rel] = h.hexdigest()
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))
            finally:
                os.close(fd)
        elif t == DIR:
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            try:
                os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            self.dirs.append((rel, m.mtime_ns))
            self.sums[rel] = hashlib.sha256(header_bytes(rel, mode, m.uid, m.gid, 0, "5", "")).hexdigest()
        elif t == SYM:
            os.symlink(m.linkname, base, dir_fd=pfd)
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(base, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
            # a symlink's mode is 0777 on Linux whatever the tar says: sum what is on disk
            self.sums[rel] = hashlib.sha256(header_bytes(rel, 0o777, m.uid, m.gid, 0, "2", m.linkname)).hexdigest()
        else:  # LNK: both names share the inode; each is summed from disk when asked
            try:
                target = clean_member_name(m.linkname)
            except ValueError:
                raise ContextError(f"invalid hardlink {m.name!r} -> {m.linkname!r} in the build context") from None
            tparent, tbase = posixpath.split(target)
            if tbase in ("", "."):
                raise ContextError(f"invalid hardlink {m.name!r} -> {m.linkname!r} in the build context")
            tfd = open_in_root(self.root_fd, tparent or ".", os.O_PATH | os.O_DIRECTORY)
            try:
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(tfd)

    def finish(self) -> None:
        self._drop_parent()
        rules = self.rules
        if rules is not None:
            # members that came before the .dockerignore: take out what it excludes
            for rel in self.early:
                if rel in self.keep or not rules.excluded(rel):
                    continue
                parent, base = posixpath.split(rel)
                try:
                    pfd = openat2(self.root_fd, parent or ".", os.O_PATH | os.O_DIRECTORY, resolve=BENEATH)
                except OSError:
                    continue  # already gone with an excluded parent
                try:
                    st = lstat_at(pfd, base)
                    if st is None:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        remove_tree(base, dir_fd=pfd)
                    else:
                        os.unlink(base, dir_fd=pfd)
                finally:
                    os.close(pfd)
                self.sums = {k: v for k, v in self.sums.items() if k != rel and not k.startswith(rel + "/")}
        for rel, mtime in reversed(self.dirs):
            try:
                fd = openat2(self.root_fd, rel, os.O_RDONLY | os.O_DIRECTORY, resolve=BENEATH)
            except OSError:
                continue
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)


def _keep_names(dockerfile: str) -> frozenset[str]:
    names = {IGNORE_FILE}
    with contextlib.suppress(ValueError):
        rel = clean_member_name(dockerfile)
        names.add(rel)
        if dockerfile == DEFAULT_DOCKERFILE:
            names.add(DEFAULT_DOCKERFILE.lower())
    return frozenset(names)


class _Unpacked:
    __slots__ = ("sums", "rules", "plain_dockerfile")

    def __init__(self, sums: dict[str, str], rules: IgnoreRules | None, plain_dockerfile: bool) -> None:
        self.sums = sums
        self.rules = rules
        self.plain_dockerfile = plain_dockerfile


def unpack_context(read: Callable[[int], bytes], root: Path, dockerfile: str = DEFAULT_DOCKERFILE, *,
                   rules: IgnoreRules | None = None, raw: bool = False) -> _Unpacked:
    """Blocking: the body read through `read` into the empty directory `root` (`raw`: an
    uncompressed tar, not sniffed; `rules`: the .dockerignore, known beforehand)."""
    kind, chunks = ("", _plain(read, b"")) if raw else decompressed(read)
    head, chunks = _head_and_rest(chunks, 512)
    root_fd = open_root(root)
    try:
        if not head:
            return _Unpacked({}, None, False)  # an empty body: an empty context
        if not is_tar_header(head):
            if kind:
                raise ContextError(f"invalid build context: the {kind} data is not a tar archive")
            # `docker build - < Dockerfile`: the body is the Dockerfile itself
            fd = os.open(DEFAULT_DOCKERFILE, _FILE_FLAGS, 0o644, dir_fd=root_fd)
            try:
                for c in chunks:
                    view = memoryview(c)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            return _Unpacked({}, None, True)
        reader = TarReader(ChunkStream(chunks))
        u = _Unpacker(root_fd, _keep_names(dockerfile), rules)
        try:
            while True:
                try:
                    m = reader.next()
                except (TarError, ValueError) as e:
                    raise ContextError(f"invalid build context: {e}") from None
                if m is None:
                    break
                u.member(m, reader)
            u.finish()
        finally:
            u.close()
        return _Unpacked(u.sums, u.rules, False)
    finally:
        os.close(root_fd)


SPOOL_NAME = "context.tar"


class _Indexed:
    __slots__ = ("index", "rules", "spool", "plain_dockerfile")

    def __init__(self, index: ContextIndex | None, rules: IgnoreRules | None, spool: Path | None,
                 plain_dockerfile: bool) -> None:
        self.index = index
        self.rules = rules
        self.spool = spool
        self.plain_dockerfile = plain_dockerfile


def index_context(read: Callable[[int], bytes], workdir: Path, root: Path,
                  dockerfile: str = DEFAULT_DOCKERFILE) -> _Indexed:
    """Blocking: the body read through `read` spooled (uncompressed) into workdir and indexed;
    a bare Dockerfile is written into `root` instead (nothing to index)."""
    kind, chunks = decompressed(read)
    head, chunks = _head_and_rest(chunks, 512)
    if not head:
        return _Indexed(ContextIndex(), None, None, False)
    if not is_tar_header(head):
        if kind:
            raise ContextError(f"invalid build context: the {kind} data is not a tar archive")
        root_fd = open_root(root)
        try:
            fd = os.open(DEFAULT_DOCKERFILE, _FILE_FLAGS, 0o644, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        try:
            for c in chunks:
                view = memoryview(c)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return _Indexed(None, None, None, True)
    spool = workdir / SPOOL_NAME
    fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            index, rules = build_index(chunks, fd, _keep_names(dockerfile))
        except IndexError_ as e:
            raise ContextError(str(e)) from None
    finally:
        os.close(fd)
    return _Indexed(index, rules, spool, False)


# -- remote contexts ----------------------------------------------------------------------------

_GIT_URL_SUFFIX = re.compile(r"\.git(?:#.+)?$")


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def is_git_url(s: str) -> bool:
    """moby's urlutil.IsGitURL."""
    if is_url(s) and _GIT_URL_SUFFIX.search(s):
        return True
    return s.startswith(("git://", "github.com/", "git@"))


def _text_like(head: bytes) -> bool:
    # what Go's http.DetectContentType calls text/plain: no byte a text file does not hold
    return not any(b < 0x20 and b not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B) for b in head[:512])


async def fetch_url(session: HTTPSession, url: str, sink: Callable[[bytes], None], *,
                    max_bytes: int = 1 << 34, timeout: float = 600.0) -> tuple[str, dict[str, str]]:
    """GET `url`, giving the body to `sink` chunk by chunk; (content type, headers). moby's
    GetWithStatusError texts for a bad status; bounded in size and time."""
    import aiohttp

    try:
        async with asyncio.timeout(timeout):
            async with session.get(url, allow_redirects=True) as resp:
                if resp.status >= 400:
                    body = (await resp.content.read(4096)).decode("utf-8", "replace").strip()
                    raise ContextError(f"failed to GET {url} with status {resp.status} {resp.reason}: {body}")
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ContextError(f"failed to GET {url}: more than {max_bytes} bytes")
                    sink(chunk)
                return resp.headers.get("Content-Type", ""), dict(resp.headers)
    except TimeoutError:
        raise ContextError(f"failed to GET {url}: timed out after {timeout:g}s") from None
    except aiohttp.ClientError as e:
        raise ContextError(f"error downloading remote context {url}: {e}") from None


async def _git(*args: str, cwd: Path) -> tuple[int, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "GIT_TERMINAL_PROMPT": "0",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LC_ALL": "C",
           # what a clone may reach: never the daemon's own files
           "GIT_PROTOCOL_FROM_USER": "0", "GIT_ALLOW_PROTOCOL": "http:https:git:ssh",
           "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}  # never a prompt on the daemon's terminal
    proc = await asyncio.create_subprocess_exec(
        "git", "-c", "protocol.file.allow=never", "-c", "core.hooksPath=/dev/null", *args, cwd=cwd,
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode("utf-8", "replace").strip()


def parse_git_fragment(url: str) -> tuple[str, str, str]:
    """(repository URL, ref, subdir) of `url#ref:subdir` (moby's gitutils.parseRemoteURL)."""
    remote, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    if remote.startswith("github.com/"):
        remote = "https://" + remote
    return remote, ref, subdir


async def clone_git(url: str, dest: Path) -> Path:
    """Clone `url` (with its `#ref:subdir`) into `dest` with the host's git; the context's
    root (dest or its subdir)."""
    remote, ref, subdir = parse_git_fragment(url)
    dest.mkdir(parents=True, exist_ok=True)
    for args in (("init", "-q"), ("remote", "add", "origin", remote)):
        rc, out = await _git(*args, cwd=dest)
        if rc:
            raise ContextError(f"error initializing git repository: {out}")
    fetch_ref = ref or "HEAD"
    rc, out = await _git("fetch", "-q", "--depth", "1", "origin", "--", fetch_ref, cwd=dest)
    if rc:
        # dumb HTTP servers and some refs cannot be fetched shallow: try the whole history
        rc, out = await _git("fetch", "-q", "origin", "--", fetch_ref, cwd=dest)
    if rc:
        raise ContextError(f"error fetching: {out}: exit status {rc}")
    rc, out = await _git("checkout", "-q", "FETCH_HEAD", cwd=dest)
    if rc:
        raise ContextError(f"error checking out {fetch_ref}: {out}: exit status {rc}")
    rc, out = await _git("submodule", "update", "--init", "--recursive", "--depth=1", cwd=dest)
    if rc:
        raise ContextError(f"error initializing submodules: {out}: exit status {rc}")
    if not subdir:
        return dest
    root_fd = open_root(dest)
    try:
        fd = open_in_root(root_fd, subdir, os.O_PATH)
    except OSError:
        raise ContextError(f"subdir not found: {subdir}") from None
    finally:
        os.close(root_fd)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise ContextError(f"subdir is not a directory: {subdir}")
        # the subdir as the kernel resolved it inside the clone (a symlink may have led there)
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


# -- the context --------------------------------------------------------------------------------


class BuildContext:
    """A build context on disk: `root`, its `.dockerignore` rules, checksums by path."""

    def __init__(self, root: Path, workdir: Path, ignore: IgnoreRules, sums: dict[str, str] | None = None,
                 *, plain_dockerfile: bool = False, index: ContextIndex | None = None, spool: Path | None = None,
                 dockerfile_name: str = DEFAULT_DOCKERFILE) -> None:
        self.root = root
        self.workdir = workdir
        self.ignore = ignore
        self.plain_dockerfile = plain_dockerfile
        # a tar body is held as its spool + index until a COPY needs the files (materialize)
        self.index = index
        self.spool = spool
        self._dockerfile_name = dockerfile_name
        self._materialize_lock = threading.Lock()
        if index is not None:
            sums = {rel: n.sum for rel, n in index.nodes.items() if rel}
        # rel path -> checksum, taken while unpacking (valid for the context's life: nothing
        # writes to it after)
        self.sums: dict[str, str] = dict(sums or {})
        # (dev, ino, size, mtime, mode, uid, gid, rel) -> checksum of what was summed from disk
        self.stat_sums: dict[tuple[int, int, int, int, int, int, int, str], str] = {}
        # downloads of ADD <url>: url -> (dir, file name)
        self.downloads: dict[str, tuple[Path, str]] = {}
        self._root_fd: int | None = None

    @property
    def root_fd(self) -> int:
        """An O_PATH fd of the root, opened once, closed by close()."""
        if self._root_fd is None:
            self._root_fd = open_root(self.root)
        return self._root_fd

    @classmethod
    async def from_tar(cls, chunks: AsyncIterator[bytes], workdir: Path, *,
                       dockerfile: str = DEFAULT_DOCKERFILE) -> BuildContext:
        """Unpack a `POST /build` body into `workdir` (made if missing; owned by the context
        from now on, removed by close() or on failure). `dockerfile` is kept whatever the
        .dockerignore says, as the CLI sends it."""
        root = workdir / "context"
        root.mkdir(parents=True, exist_ok=True)
        pipe = LayerPipe()

        def work() -> _Indexed:
            try:
                return index_context(pipe.read, workdir, root, dockerfile)
            finally:
                pipe.reader_done()

        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            try:
                async for chunk in chunks:
                    await pipe.put(chunk)
                pipe.close()
            except PipeClosed:
                pass  # the worker stopped early (a bad archive): its error is the one to give
            except BaseException as e:
                pipe.abort(ContextError(f"the build context upload failed: {e}"))
                with contextlib.suppress(BaseException):
                    await task
                raise
            out = await task
        except BaseException:
            await asyncio.to_thread(remove_tree_quietly, workdir)
            raise
        return cls(root, workdir, out.rules or IgnoreRules(""), plain_dockerfile=out.plain_dockerfile,
                   index=out.index, spool=out.spool, dockerfile_name=dockerfile)

    def materialize(self) -> None:
        """Blocking: unpack the spooled tar into `root` (once; what .dockerignore excludes is
        not written). The sums stay those of the index."""
        with self._materialize_lock:
            if self.index is None:
                return
            if self.spool is not None:
                with open(self.spool, "rb") as f:
                    unpack_context(f.read, self.root, self._dockerfile_name, rules=self.ignore, raw=True)
                self.spool.unlink()
            self.index = None
            self.spool = None

    @contextlib.contextmanager
    def held_index(self) -> Iterator[tuple[ContextIndex | None, Path | None]]:
        """(index, spool) while they cannot be materialized away, or (None, None) once the
        context is on disk."""
        with self._materialize_lock:
            yield self.index, self.spool

    async def amaterialize(self) -> None:
        await asyncio.to_thread(self.materialize)

    @classmethod
    async def from_remote(cls, url: str, workdir: Path, *, session: HTTPSession | None,
                          dockerfile: str = DEFAULT_DOCKERFILE) -> BuildContext:
        """The `remote` parameter: a git URL (cloned with the host's git), or an http(s) URL
        of a tar (any compression) or of a Dockerfile (text/plain, or sniffed as text)."""
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            if is_git_url(url):
                root = await clone_git(url, workdir / "git")
                rules = await asyncio.to_thread(_read_rules, root)
                return cls(root, workdir, rules)
            if not is_url(url):
                raise ContextError(f"remoteURL ({url}) could not be recognized as URL")
            if session is None:
                raise ContextError("no HTTP session to fetch the remote context with")
            with tempfile.NamedTemporaryFile(dir=workdir, prefix="remote-", delete=False) as f:
                spool = Path(f.name)

                def sink(b: bytes) -> None:
                    f.write(b)

                ctype, _ = await fetch_url(session, url, sink)
            return await asyncio.to_thread(cls._from_download, spool, ctype, workdir, dockerfile)
        except BaseException:
            await asyncio.to_thread(remove_tree_quietly, workdir)
            raise

    @classmethod
    def _from_download(cls, spool: Path, ctype: str, workdir: Path, dockerfile: str) -> BuildContext:
        root = workdir / "context"
        root.mkdir(exist_ok=True)
        try:
            with open(spool, "rb") as f:
                head = f.read(512)
                if not head:
                    raise ContextError("empty response")
                mt = ctype.split(";")[0].strip().lower()
                if (not mt or mt == "application/octet-stream") and not compression_of(head) and _text_like(head):
                    mt = "text/plain"
                if mt == "text/plain":
                    os.replace(spool, root / DEFAULT_DOCKERFILE)
                    os.chmod(root / DEFAULT_DOCKERFILE, 0o644)
                    return cls(root, workdir, IgnoreRules(""), plain_dockerfile=True)
                f.seek(0)
                out = unpack_context(f.read, root, dockerfile)
        finally:
            with contextlib.suppress(FileNotFoundError):
                spool.unlink()
        return cls(root, workdir, out.rules or IgnoreRules(""), out.sums, plain_dockerfile=out.plain_dockerfile)

    def dockerfile(self, name: str = DEFAULT_DOCKERFILE) -> bytes:
        """The Dockerfile `name` (relative to the context; moby's withDockerfileFromContext:
        `Dockerfile` falls back to `dockerfile`; symlinks followed inside the context)."""
        name = name or DEFAULT_DOCKERFILE
        if self.plain_dockerfile:
            name = DEFAULT_DOCKERFILE
        candidates = [name]
        if name == DEFAULT_DOCKERFILE:
            candidates.append(name.lower())
        for cand in candidates:
            rel = posixpath.normpath(cand.lstrip("/")) if cand.strip("/") else "."
            if rel == ".." or rel.startswith("../"):
                raise ContextError(f"Cannot locate specified Dockerfile: {name}")
            with self._materialize_lock:
                index, spool = self.index, self.spool
                if index is not None:
                    found = index.resolve(rel)
                    node: Node | None = index.nodes.get(found) if found is not None else None
                    if node is None:
                        continue
                    if node.kind != "f":
                        raise ContextError(f"Cannot locate specified Dockerfile: {name}")
                    if spool is None or not node.size:
                        raise ContextError(f"the Dockerfile ({name}) cannot be empty")
                    fd = os.open(spool, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        return index.read(fd, node)
                    finally:
                        os.close(fd)
            try:
                fd = open_in_root(self.root_fd, rel, os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as e:
                raise ContextError(f"Cannot locate specified Dockerfile: {name}: {e.strerror}") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ContextError(f"Cannot locate specified Dockerfile: {name}")
                with os.fdopen(os.dup(fd), "rb") as f:
                    data = f.read()
            finally:
                os.close(fd)
            if not data:
                raise ContextError(f"the Dockerfile ({name}) cannot be empty")
            return data
        raise ContextError(f"Cannot locate specified Dockerfile: {name}")

    async def close(self) -> None:
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None
        await asyncio.to_thread(remove_tree_quietly, self.workdir)


def _read_rules(root: Path) -> IgnoreRules:
    root_fd = open_root(root)
    try:
        try:
            fd = open_in_root(root_fd, IGNORE_FILE, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return IgnoreRules("")
        try:
            data = os.read(fd, _IGNORE_MAX)
        finally:
            os.close(fd)
    finally:
        os.close(root_fd)
    try:
        return IgnoreRules(data.decode("utf-8", "replace"))
    except ValueError as e:
        raise ContextError(f"failed to parse {IGNORE_FILE}: {e}") from None
