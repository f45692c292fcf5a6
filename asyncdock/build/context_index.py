"""A build context held as its tar plus an index, unpacked only when a COPY needs its files.

The CLI sends the whole context with every build, so a rebuild whose COPY steps all hit the
cache only needs the checksums: writing 2,000 small files to disk costs far more than reading
them (file creation is the file system's slow path) and would be thrown away unread. So the
body is written once, as one file (the uncompressed tar), and parsed on the way into an index
of its members (type, mode, owner, size, where the data is, link target) with the same
checksums the unpacker takes (context.py); lookups follow symlinks inside the index as
RESOLVE_IN_ROOT does on disk. The first COPY that misses the cache unpacks the tar for real
(context.unpack_context, with the .dockerignore rules known from the start), and the sums
of the index stay the context's sums, so a key is the same whether it was taken before or
after that.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterator

from ..containers.rootfs_fs import clean_member_name
from ..snapshots.tarstream import DIR, LNK, REG, SYM, ChunkStream, Member, TarError, TarReader
from .dockerignore import IgnoreRules

_MAX_SYMLINKS = 40
_IGNORE_MAX = 4 << 20


class IndexError_(ValueError):
    """The tar cannot be used as a context (a name that climbs out, a bad link)."""


class Node:
    __slots__ = ("kind", "mode", "uid", "gid", "size", "linkname", "offset", "sum", "mtime_ns")

    def __init__(self, kind: str, mode: int, uid: int, gid: int, size: int, linkname: str, offset: int,
                 mtime_ns: int = 0) -> None:
        self.kind = kind  # "f" file, "d" directory, "l" symlink (a hard link is a "f" sharing data)
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.size = size
        self.linkname = linkname
        self.offset = offset  # of the data in the spool, for a file
        self.sum = ""
        self.mtime_ns = mtime_ns


def _implicit_dir() -> Node:
    # what the unpacker makes for a parent the tar does not list
    return Node("d", 0o755, 0, 0, 0, "", -1, time.time_ns())


class ContextIndex:
    """The members of the context's tar, by path relative to the root ("" is the root)."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {"": _implicit_dir()}
        self.children: dict[str, set[str]] = {"": set()}

    # -- lookups -----------------------------------------------------------------------------

    def resolve(self, rel: str, *, follow_last: bool = True) -> str | None:
        """The path `rel` leads to inside the index, symlinks followed and clamped at the root
        (FollowSymlinkInScope); None if it leads nowhere."""
        parts = [p for p in rel.split("/") if p and p != "."]
        resolved: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            cand = "/".join([*resolved, part])
            node = self.nodes.get(cand)
            if node is None:
                return None
            if node.kind == "l" and (parts or follow_last):
                links += 1
                if links > _MAX_SYMLINKS:
                    return None
                target = node.linkname
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            if parts and node.kind != "d":
                return None
            resolved.append(part)
        return "/".join(resolved)

    def walk(self, top: str, excluded: Callable[[str], bool],
             may_include_below: Callable[[str], bool]) -> Iterator[tuple[str, Node]]:
        """What is below `top`, in the order of copy._Resolver._walk on disk (directory by
        directory, each one's entries sorted by name, a directory before what it holds)."""
        pending = [top]
        while pending:
            d = pending.pop()
            subdirs: list[str] = []
            for name in sorted(self.children.get(d, ())):
                rel = f"{d}/{name}" if d else name
                node = self.nodes[rel]
                if excluded(rel):
                    if node.kind == "d" and may_include_below(rel):
                        subdirs.append(rel)
                    continue
                yield rel, node
                if node.kind == "d":
                    subdirs.append(rel)
            pending.extend(reversed(subdirs))

    def read(self, spool_fd: int, node: Node) -> bytes:
        return os.pread(spool_fd, node.size, node.offset) if node.size else b""

    # -- building ----------------------------------------------------------------------------

    def _drop(self, rel: str) -> None:
        node = self.nodes.pop(rel, None)
        if node is None:
            return
        parent, name = posixpath.split(rel)
        self.children.get(parent, set()).discard(name)
        if node.kind == "d":
            for child in list(self.children.pop(rel, ())):
                self._drop(f"{rel}/{child}")

    def _parent(self, rel_parent: str) -> str:
        """The directory a member with this parent path lands in (symlinked parents followed
        inside the index, missing ones made), as the unpacker's openat2 would find it."""
        if rel_parent == "" or (rel_parent in self.children and self.nodes[rel_parent].kind == "d"):
            return rel_parent
        done = ""
        for comp in rel_parent.split("/"):
            nxt = f"{done}/{comp}" if done else comp
            node = self.nodes.get(nxt)
            if node is None:
                node = _implicit_dir()
                node.sum = node_sum(nxt, node)
                self._add(nxt, node)
            elif node.kind == "l":
                target = self.resolve(nxt)
                if target is None or self.nodes[target].kind != "d":
                    raise IndexError_(f"cannot extract below {nxt}: it does not lead to a directory")
                nxt = target
            elif node.kind != "d":
                raise IndexError_(f"cannot extract below {nxt}: not a directory")
            done = nxt
        return done

    def _add(self, rel: str, node: Node) -> None:
        parent, _, name = rel.rpartition("/")
        self.nodes[rel] = node
        self.children.setdefault(parent, set()).add(name)
        if node.kind == "d":
            self.children.setdefault(rel, set())


def header_bytes(rel: str, mode: int, uid: int, gid: int, size: int, typeflag: str, linkname: str) -> bytes:
    """The part of an entry's checksum that is not its data (tarsum version 1's header
    selection without uname/gname: owners are numeric here; no mtime)."""
    return (f"name{rel}mode{mode}uid{uid}gid{gid}size{size}typeflag{typeflag}linkname{linkname}"
            f"unamegnamedevmajor0devminor0").encode("utf-8", "surrogateescape")


def node_sum(rel: str, node: Node) -> str:
    """The checksum of a directory or symlink node (a file's covers its data: _member, _link)."""
    typeflag = "5" if node.kind == "d" else "2"
    mode = 0o777 if node.kind == "l" else node.mode
    return hashlib.sha256(header_bytes(rel, mode, node.uid, node.gid, 0, typeflag, node.linkname)).hexdigest()


class _Spooled:
    """The decompressed chunks, written to the spool as they pass: offsets of the stream are
    offsets of the file."""

    def __init__(self, chunks: Iterator[bytes], fd: int) -> None:
        self.chunks = chunks
        self.fd = fd

    def __iter__(self) -> Iterator[bytes]:
        fd = self.fd
        for c in self.chunks:
            view = memoryview(c)
            while view:
                view = view[os.write(fd, view):]
            yield c


def build_index(chunks: Iterator[bytes], spool_fd: int, keep: frozenset[str]) -> tuple[ContextIndex, IgnoreRules | None]:
    """Blocking: index the tar in `chunks` (spooled to `spool_fd`), with its .dockerignore
    applied as the unpacker applies it."""
    idx = ContextIndex()
    stream = ChunkStream(iter(_Spooled(chunks, spool_fd)))
    reader = TarReader(stream)
    rules: IgnoreRules | None = None
    early: list[str] = []
    hardlinks: list[tuple[str, str]] = []
    while True:
        try:
            m = reader.next()
        except (TarError, ValueError) as e:
            raise IndexError_(f"invalid build context: {e}") from None
        if m is None:
            break
        try:
            rel, node, data_hash = _member(m, reader, stream)  # hashed under the member's own name
        except TarError as e:
            raise IndexError_(f"invalid build context: {e}") from None
        if not rel:
            continue
        if rules is not None and rel not in keep and rules.excluded(rel, node.kind == "d"):
            continue
        member_rel = rel
        parent, _, name = rel.rpartition("/")
        real_parent = idx._parent(parent)
        if real_parent != parent:
            rel = f"{real_parent}/{name}" if real_parent else name
        old = idx.nodes.get(rel)
        if old is not None and not (old.kind == "d" and node.kind == "d"):
            idx._drop(rel)
        if m.type == LNK:
            hardlinks.append((rel, m.linkname))
            node.kind = "f"
        if old is not None and old.kind == "d" and node.kind == "d":
            old.mode, old.uid, old.gid, old.mtime_ns = node.mode, node.uid, node.gid, node.mtime_ns
            node = old
        else:
            idx._add(rel, node)
        if m.type == REG:
            # the data was hashed under the member's own name: a symlinked parent (rare,
            # hostile) moves it, and then its sum is taken again under the name it landed at
            node.sum = data_hash if rel == member_rel else _file_sum(rel, node, spool_fd)
        elif m.type != LNK:
            node.sum = node_sum(rel, node)
        if rules is None:
            if rel == ".dockerignore" and node.kind == "f":
                data = os.pread(spool_fd, min(node.size, _IGNORE_MAX), node.offset)
                try:
                    rules = IgnoreRules(data.decode("utf-8", "replace"))
                except ValueError as e:
                    raise IndexError_(f"failed to parse .dockerignore: {e}") from None
            else:
                early.append(rel)
    for rel, target in hardlinks:
        _link(idx, rel, target, spool_fd)
    if rules is not None:
        for rel in early:
            if rel in idx.nodes and rel not in keep and rules.excluded(rel):
                idx._drop(rel)
    return idx, rules


def _file_sum(rel: str, node: Node, spool_fd: int) -> str:
    h = hashlib.sha256(header_bytes(rel, node.mode, node.uid, node.gid, node.size, "0", ""))
    if node.size:
        h.update(os.pread(spool_fd, node.size, node.offset))
    return h.hexdigest()


def _member(m: Member, reader: TarReader, stream: ChunkStream) -> tuple[str, Node, str]:
    try:
        rel = clean_member_name(m.name)
        if "\0" in m.linkname:
            raise ValueError(f"invalid link name of {m.name!r}: it holds a NUL byte")
    except ValueError as e:
        raise IndexError_(f"invalid build context: {e}") from None
    t = m.type
    if rel == "." or t not in (REG, DIR, SYM, LNK):
        return "", _implicit_dir(), ""
    mode = m.mode & 0o7777
    if t == REG:
        if m.sparse is not None:
            raise IndexError_("sparse files are unpacked, not indexed")
        offset = stream.tell()
        h = hashlib.sha256(header_bytes(rel, mode, m.uid, m.gid, m.size, "0", ""))
        left = m.size
        while left:
            data = reader.read_data(min(left, 1 << 20))
            h.update(data)
            left -= len(data)
        return rel, Node("f", mode, m.uid, m.gid, m.size, "", offset, m.mtime_ns), h.hexdigest()
    if t == DIR:
        return rel, Node("d", mode, m.uid, m.gid, 0, "", -1, m.mtime_ns), ""
    if t == SYM:
        return rel, Node("l", 0o777, m.uid, m.gid, 0, m.linkname, -1, m.mtime_ns), ""
    return rel, Node("f", mode, m.uid, m.gid, 0, m.linkname, -1, m.mtime_ns), ""


def _link(idx: ContextIndex, rel: str, target: str, spool_fd: int) -> None:
    """A hard link: the file it names, under a second name (its data, mode and owner)."""
    try:
        trel = clean_member_name(target)
    except ValueError:
        raise IndexError_(f"invalid hardlink {rel!r} -> {target!r} in the build context") from None
    tparent, tname = posixpath.split(trel)
    rp = idx.resolve(tparent) if tparent else ""
    src = idx.nodes.get(f"{rp}/{tname}" if rp else tname) if rp is not None else None
    node = idx.nodes.get(rel)
    if src is None or src.kind != "f" or node is None:
        raise IndexError_(f"invalid hardlink {rel!r} -> {target!r} in the build context")
    node.mode, node.uid, node.gid, node.size, node.offset, node.linkname, node.mtime_ns = \
        src.mode, src.uid, src.gid, src.size, src.offset, "", src.mtime_ns
    node.sum = _file_sum(rel, node, spool_fd)
