"""A lean, forward-only tar reader for layer extraction.

`tarfile.TarFile` costs tens of microseconds of Python per member (TarInfo objects, a checksum
summed over a 504-tuple, field decoding it never needs), which on layers of small files is as
much as creating the file. This reader parses the 512-byte headers itself and hands a member's
data straight from the decoded chunks to `os.write`, without copying it into a file object.

It reads what `tarfile` reads, with the same results (tests compare the two member by member):
ustar and v7 headers, GNU long names and links ('L', 'K'), GNU sparse files ('S', with extension
blocks), pax extended and global headers (path, linkpath, size, uid, gid, mtime, hdrcharset,
xattr records) including the GNU sparse formats 0.0, 0.1 and 1.0, and base-256 numbers. Also
like `tarfile`: a zero block, or a header that is not valid, ends the archive (a layer's diff
ID covers the bytes anyway), except at the very start, where it means "not a tar"; a bad header
right after an extended header is an error. One deliberate difference: a pax mtime/atime is
parsed to the exact nanosecond (as Go's archive/tar does), not through a float.
"""
from __future__ import annotations

import hashlib
import os
import re
import struct
import zlib
from collections.abc import Iterator

BLOCK = 512
MAX_EXTENSION = 8 << 20  # bytes of one pax or GNU long-name header
_ZERO_BLOCK = bytes(BLOCK)

# Member kinds (tar type flags; every regular-file flavour is reported as REG).
REG = b"0"
LNK = b"1"
SYM = b"2"
CHR = b"3"
BLK = b"4"
DIR = b"5"
FIFO = b"6"

_REGULAR = frozenset((b"0", b"\0", b"7"))
_SPARSE = b"S"
_LONGNAME = b"L"
_LONGLINK = b"K"
_PAX_LOCAL = frozenset((b"x", b"X"))
_PAX_GLOBAL = b"g"
# Types whose header is never followed by data, whatever their size field says (tarfile and
# Go's archive/tar agree): everything else that is not regular carries `size` bytes we skip.
_HEADER_ONLY = frozenset((LNK, SYM, CHR, BLK, DIR, FIFO))
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_PAX_CHARSET = re.compile(rb"\d+ hdrcharset=([^\n]+)\n")
_SPARSE_OFFSET = re.compile(rb"\d+ GNU.sparse.offset=(\d+)\n")
_SPARSE_NUMBYTES = re.compile(rb"\d+ GNU.sparse.numbytes=(\d+)\n")
_SIGNED = struct.Struct("148b8x356b")
_FAST_TYPES = frozenset((b"0", b"\0", b"7", DIR, SYM, LNK))
_PAX_NAME_KEYS = frozenset((b"path", b"linkpath", b"uname", b"gname"))
_NO_PAX: dict[str, str] = {}  # shared by members without pax records: never mutated


class TarError(ValueError):
    """The stream is not a tar archive, or it is corrupt in a way that is not just its end."""


class _BadHeader(Exception):
    pass


class Member:
    """One archive member, as the extractor needs it.

    `size` is the file's size (for a sparse file its full, expanded size); `sparse` lists the
    (offset, length) runs whose data follows, in order; `pax_headers` holds every pax record in
    force for the member (global ones included), or is empty."""

    __slots__ = ("name", "type", "mode", "uid", "gid", "size", "mtime_ns", "atime_ns",
                 "linkname", "devmajor", "devminor", "pax_headers", "sparse")

    def __init__(self) -> None:
        self.name = ""
        self.type = REG
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0
        self.mtime_ns = 0
        self.atime_ns: int | None = None
        self.linkname = ""
        self.devmajor = 0
        self.devminor = 0
        self.pax_headers: dict[str, str] = {}
        self.sparse: list[tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return f"<Member {self.name!r} type={self.type!r} size={self.size}>"


# ---------------------------------------------------------------------------------------------
# The byte stream


class ChunkStream:
    """The uncompressed archive as a forward-only stream over decoded chunks. Every chunk is
    hashed as it is pulled, so the digest covers exactly the bytes produced (once `drain()`ed,
    the whole stream)."""

    __slots__ = ("_chunks", "_buf", "_pos", "_hash", "_base")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""
        self._pos = 0
        self._hash = hashlib.sha256()
        self._base = 0  # stream offset of _buf[0]

    def _pull(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._hash.update(chunk)
                self._base += len(self._buf)
                self._buf = chunk
                self._pos = 0
                return True
        return False

    def tell(self) -> int:
        return self._base + self._pos

    def read(self, n: int) -> bytes:
        """Exactly n bytes, or fewer only at the end of the stream."""
        pos = self._pos
        end = pos + n
        buf = self._buf
        if end <= len(buf):
            self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        have = len(buf) - pos
        self._pos = len(buf)
        while have < n:
            if not self._pull():
                break
            take = min(n - have, len(self._buf))
            parts.append(self._buf[:take])
            self._pos = take
            have += take
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Skip up to n bytes; returns how many were skipped (fewer only at the end)."""
        left = n
        while left:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._pull():
                    break
                avail = len(self._buf)
            k = avail if avail < left else left
            self._pos += k
            left -= k
        return n - left

    def write_to(self, fd: int, n: int) -> int:
        """Write the next n bytes to fd; returns how many there were (fewer only at the end)."""
        left = n
        while left:
            buf = self._buf
            pos = self._pos
            avail = len(buf) - pos
            if not avail:
                if not self._pull():
                    break
                buf = self._buf
                pos = 0
                avail = len(buf)
            k = avail if avail < left else left
            view = memoryview(buf)[pos:pos + k]
            done = os.write(fd, view)
            while done < k:
                done += os.write(fd, view[done:])
            self._pos = pos + k
            left -= k
        return n - left

    def drain(self) -> None:
        """Pull (and hash) whatever is left: bytes after the end-of-archive blocks are part of
        the diff ID too."""
        self._pos = len(self._buf)
        while self._pull():
            self._pos = len(self._buf)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


# ---------------------------------------------------------------------------------------------
# Header fields


def _cstr(b: bytes) -> bytes:
    i = b.find(0)
    return b if i < 0 else b[:i]


def _num(b: bytes) -> int:
    """A numeric header field: octal text (NUL/space padded) or GNU base-256."""
    try:
        # The usual "0000644\0": int() takes the digits (and surrounding blanks) as they are.
        return int(b[:-1] if b[-1] == 0 else b, 8)
    except (ValueError, IndexError):
        return _num_slow(b)


def _num_slow(b: bytes) -> int:
    if b and b[0] & 0x80:
        if b[0] not in (0o200, 0o377):
            raise _BadHeader("invalid number")
        n = int.from_bytes(b[1:], "big")
        return n - (256 ** (len(b) - 1)) if b[0] == 0o377 else n
    b = _cstr(b).strip()
    if not b:
        return 0
    try:
        return int(b, 8)
    except ValueError:
        raise _BadHeader("invalid number") from None


def _checksum_ok(block: bytes) -> bool:
    raw = block[148:156]
    stored = int(raw[:6], 8) if raw[6:] == b"\0 " and raw[:6].isdigit() else _num(raw)
    # The unsigned sum with the checksum field read as spaces, in pieces small enough that
    # adler32's low half (1 + sum mod 65521) is the exact sum.
    total = (zlib.adler32(block[:148]) & 0xFFFF) + (zlib.adler32(block[156:356]) & 0xFFFF) + \
        (zlib.adler32(block[356:]) & 0xFFFF) - 3 + 8 * 32
    if stored == total:
        return True
    # Some old tars summed signed chars.
    return stored == 256 + sum(_SIGNED.unpack_from(block))


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def pax_time_ns(value: str) -> int:
    """A pax time ("1700000000.123456789", possibly negative) in nanoseconds, exactly; 0 if it
    does not parse (tarfile's fallback)."""
    secs, _, frac = value.strip().partition(".")
    try:
        s = int(secs)
        if not frac:
            return s * 1_000_000_000
        if not frac.isdigit() or not frac.isascii():
            raise ValueError(value)
        ns = int(frac[:9].ljust(9, "0"))
    except ValueError:
        try:
            return int(float(value) * 1_000_000_000)
        except ValueError:
            return 0
    neg = secs.strip().startswith("-")
    return s * 1_000_000_000 - ns if neg else s * 1_000_000_000 + ns


def _pax_int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            return int(float(value))
        except ValueError:
            return 0


# ---------------------------------------------------------------------------------------------
# The reader


class TarReader:
    """Members of the archive in `stream`, one `next()` at a time. The data of the member last
    returned is read with `write_data()` / `read_data()`; what is not read is skipped."""

    def __init__(self, stream: ChunkStream) -> None:
        self.stream = stream
        self._left = 0  # unread data bytes of the current member
        self._pad = 0  # padding after them
        self._globals: dict[str, str] = {}
        self._started = False
        self.ended = False

    # -- data of the current member -----------------------------------------------------------

    @property
    def data_left(self) -> int:
        return self._left

    def write_data(self, fd: int, n: int) -> None:
        """Write the next n data bytes of the current member to fd."""
        if n > self._left:
            raise TarError("read past the member's data")
        got = self.stream.write_to(fd, n)
        self._left -= got
        if got < n:
            raise TarError("the archive ends inside a member's data")

    def write_member(self, fd: int, m: Member) -> None:
        """Write regular member m's contents to fd: its data runs at their offsets (holes
        left as holes) for a sparse file, else its data."""
        if m.sparse is not None:
            for offset, size in m.sparse:
                os.lseek(fd, offset, os.SEEK_SET)
                self.write_data(fd, size)
            os.ftruncate(fd, m.size)
        elif m.size:
            self.write_data(fd, m.size)

    def read_data(self, n: int = -1) -> bytes:
        n = self._left if n < 0 or n > self._left else n
        data = self.stream.read(n)
        self._left -= len(data)
        if len(data) < n:
            raise TarError("the archive ends inside a member's data")
        return data

    # -- headers ------------------------------------------------------------------------------

    def _skip_rest(self) -> None:
        n = self._left + self._pad
        self._left = self._pad = 0
        if n and self.stream.skip(n) < n:
            raise TarError("unexpected end of data")

    def _read_ext(self, size: int) -> bytes:
        """The data of an extension header (long name, pax records), padding consumed."""
        padded = (size + BLOCK - 1) & ~(BLOCK - 1)
        buf = self.stream.read(padded)
        if len(buf) < padded:
            raise TarError("the archive ends inside an extended header")
        return buf[:size]

    def next(self) -> Member | None:
        if self.ended:
            return None
        self._skip_rest()
        first = not self._started
        self._started = True
        # Extension headers met before the real one, in order: ("L"|"K"|"x", payload).
        exts: list[tuple[bytes, bytes]] = []
        while True:
            block = self.stream.read(BLOCK)
            try:
                if len(block) < BLOCK:
                    raise _BadHeader("empty file" if not block else "truncated header")
                if block == _ZERO_BLOCK:
                    if exts:
                        raise _BadHeader("end of file header")
                    self.ended = True
                    return None
                if not _checksum_ok(block):
                    raise _BadHeader("bad checksum")
                typ = block[156:157]
                if typ in _PAX_LOCAL or typ == _PAX_GLOBAL or typ == _LONGNAME or typ == _LONGLINK:
                    size = _num(block[124:136])
                    if size < 0:
                        raise _BadHeader("negative size")
                    if size > MAX_EXTENSION:
                        # It is read into memory: a decompression bomb must not get to decide
                        # how much. (Go's archive/tar refuses more than 1 MiB.)
                        raise TarError(f"extended header of {size} bytes is too large")
                    payload = self._read_ext(size)
                    if typ == _PAX_GLOBAL:
                        self._parse_pax(payload, self._globals)
                        continue
                    exts.append((typ, payload))
                    continue
                return self._member(block, typ, exts)
            except _BadHeader as e:
                if exts:
                    raise TarError(f"invalid header after an extended header: {e}") from None
                if first:
                    raise TarError(str(e)) from None
                # tarfile's rule: anything that is not a header past the start ends the archive.
                self.ended = True
                return None

    def _parse_pax(self, buf: bytes, into: dict[str, str]) -> None:
        m = _PAX_CHARSET.search(buf)
        if m is not None:
            into["hdrcharset"] = m.group(1).decode("utf-8", "surrogateescape")
        pos = 0
        while True:
            m = _PAX_RECORD.match(buf, pos)
            if not m:
                break
            length = int(m.group(1))
            if length == 0:
                raise _BadHeader("invalid pax record")
            raw_key, raw_value = m.group(2), buf[m.end(2) + 1:m.start(1) + length - 1]
            # Go's archive/tar (validPAXRecord): no NUL in a key, nor in a name-like value.
            # A NUL would otherwise reach a system call as "embedded null byte".
            if b"\0" in raw_key or (b"\0" in raw_value and raw_key in _PAX_NAME_KEYS):
                raise _BadHeader(f"invalid pax record {raw_key.decode('utf-8', 'replace')!r}: NUL byte")
            into[raw_key.decode("utf-8", "surrogateescape")] = raw_value.decode("utf-8", "surrogateescape")
            pos += length

    def _member(self, block: bytes, typ: bytes, exts: list[tuple[bytes, bytes]]) -> Member:
        if not exts and not self._globals and typ in _FAST_TYPES and not block[345]:
            return self._plain_member(block, typ)
        return self._full_member(block, typ, exts)

    def _plain_member(self, block: bytes, typ: bytes) -> Member:
        """The common case, kept lean: a header with no extensions, no prefix, no globals."""
        m = Member.__new__(Member)
        i = block.find(0, 0, 100)
        name = block[:i] if i >= 0 else block[:100]
        if typ == b"\0" and name.endswith(b"/"):
            typ = DIR
        m.mode = _num(block[100:108])
        m.uid = _num(block[108:116])
        m.gid = _num(block[116:124])
        size = _num(block[124:136])
        if size < 0:
            raise _BadHeader("negative size")
        m.mtime_ns = _num(block[136:148]) * 1_000_000_000
        m.atime_ns = None
        if block[157]:
            i = block.find(0, 157, 257)
            m.linkname = block[157:i if i >= 0 else 257].decode("utf-8", "surrogateescape")
        else:
            m.linkname = ""
        m.devmajor = m.devminor = 0
        m.pax_headers = _NO_PAX
        m.sparse = None
        m.size = size
        if typ == DIR:
            name = name.rstrip(b"/")
            m.type = DIR
            self._left = self._pad = 0
        else:
            if typ == SYM or typ == LNK:
                m.type = typ
                self._left = self._pad = 0
            else:
                m.type = REG
                self._left = size
                self._pad = (-size) % BLOCK
        m.name = name.decode("utf-8", "surrogateescape")
        return m

    def _full_member(self, block: bytes, typ: bytes, exts: list[tuple[bytes, bytes]]) -> Member:
        m = Member()
        name = _text(_cstr(block[:100]))
        m.mode = _num(block[100:108])
        uid = _num(block[108:116])
        gid = _num(block[116:124])
        size = _num(block[124:136])
        mtime_ns = _num(block[136:148]) * 1_000_000_000
        linkname = _text(_cstr(block[157:257]))
        if typ == CHR or typ == BLK:
            m.devmajor = _num(block[329:337])
            m.devminor = _num(block[337:345])
        prefix = _cstr(block[345:500])
        if size < 0:
            raise _BadHeader("negative size")
        sparse: list[tuple[int, int]] | None = None
        realsize: int | None = None
        if typ == b"\0" and name.endswith("/"):
            typ = DIR  # the v7 way of writing a directory
        elif typ == _SPARSE:
            sparse, realsize = self._gnu_sparse(block)
        if typ == DIR:
            name = name.rstrip("/")
        if prefix and typ != _SPARSE:
            name = _text(prefix) + "/" + name
        has_data = typ not in _HEADER_ONLY

        def apply_pax(pax: dict[str, str]) -> None:
            nonlocal name, linkname, size, uid, gid, mtime_ns, realsize
            for key, value in pax.items():
                if key == "path":
                    name = value.rstrip("/")
                elif key == "linkpath":
                    linkname = value
                elif key == "size":
                    size = _pax_int(value)
                elif key == "uid":
                    uid = _pax_int(value)
                elif key == "gid":
                    gid = _pax_int(value)
                elif key == "mtime":
                    mtime_ns = pax_time_ns(value)
                elif key == "GNU.sparse.name":
                    name = value
                elif key == "GNU.sparse.size" or key == "GNU.sparse.realsize":
                    realsize = _pax_int(value)

        # What tarfile's recursion amounts to: the header, then the global pax records, then
        # each extension header from the innermost (last read) out, so the first has the last
        # word.
        pax_headers = dict(self._globals)  # a snapshot: later global headers must not change it
        if pax_headers:
            apply_pax(pax_headers)
        pending_10 = False
        for kind, payload in reversed(exts):
            if kind == _LONGNAME:
                name = _text(_cstr(payload))
                if typ == DIR:
                    name = name.removesuffix("/")
            elif kind == _LONGLINK:
                linkname = _text(_cstr(payload))
            else:
                local = dict(self._globals)
                self._parse_pax(payload, local)
                if "GNU.sparse.map" in local:
                    try:
                        nums = [int(x) for x in local["GNU.sparse.map"].split(",") if x]
                    except ValueError:
                        raise TarError("invalid GNU sparse map") from None
                    sparse, pending_10 = list(zip(nums[::2], nums[1::2])), False
                elif "GNU.sparse.size" in local:
                    offsets = [int(x.group(1)) for x in _SPARSE_OFFSET.finditer(payload)]
                    counts = [int(x.group(1)) for x in _SPARSE_NUMBYTES.finditer(payload)]
                    sparse, pending_10 = list(zip(offsets, counts)), False
                elif local.get("GNU.sparse.major") == "1" and local.get("GNU.sparse.minor") == "0":
                    pending_10 = True
                apply_pax(local)
                pax_headers = local
        if size < 0:
            raise _BadHeader("negative size")
        m.name = name
        m.type = REG if (typ in _REGULAR or typ == _SPARSE) else typ
        m.uid = uid
        m.gid = gid
        m.linkname = linkname
        m.mtime_ns = mtime_ns
        atime = pax_headers.get("atime")
        m.atime_ns = pax_time_ns(atime) if atime else None
        m.pax_headers = pax_headers
        data_len = size if has_data else 0
        self._left = data_len
        self._pad = (-data_len) % BLOCK
        if pending_10:
            sparse = self._sparse_10_map()
        m.sparse = sparse
        m.size = realsize if (sparse is not None and realsize is not None) else size
        return m

    # -- sparse files -------------------------------------------------------------------------

    def _gnu_sparse(self, block: bytes) -> tuple[list[tuple[int, int]], int]:
        structs: list[tuple[int, int]] = []
        pos = 386
        for _ in range(4):
            try:
                structs.append((_num(block[pos:pos + 12]), _num(block[pos + 12:pos + 24])))
            except _BadHeader:
                break
            pos += 24
        extended = block[482]
        realsize = _num(block[483:495])
        while extended:
            ext = self.stream.read(BLOCK)
            if len(ext) < BLOCK:
                raise TarError("the archive ends inside a sparse header")
            pos = 0
            for _ in range(21):
                try:
                    offset = _num(ext[pos:pos + 12])
                    numbytes = _num(ext[pos + 12:pos + 24])
                except _BadHeader:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
                pos += 24
            extended = ext[504]
        return structs, realsize

    def _sparse_10_map(self) -> list[tuple[int, int]]:
        """GNU sparse 1.0: the map leads the member's data, as decimal lines in whole blocks."""
        buf = self.read_data(min(BLOCK, self._left))
        head, sep, buf = buf.partition(b"\n")
        try:
            if not sep:
                raise ValueError(head)
            fields = int(head)
            nums: list[int] = []
            while len(nums) < fields * 2:
                if b"\n" not in buf:
                    more = self.read_data(min(BLOCK, self._left))
                    if not more:
                        raise ValueError(buf)
                    buf += more
                number, _, buf = buf.partition(b"\n")
                nums.append(int(number))
        except ValueError as e:
            if isinstance(e, TarError):
                raise
            raise TarError("invalid GNU sparse 1.0 map") from None
        return list(zip(nums[::2], nums[1::2]))

