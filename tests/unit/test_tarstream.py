"""The lean tar reader (asyncdock/snapshots/tarstream.py) against Python's tarfile, member by
member and byte by byte: every header format (v7, ustar, GNU, pax), long names and links, pax
records (xattrs, global headers, fractional times, overrides), base-256 numbers, hard links,
devices, GNU sparse files in all four formats (made by GNU tar), chunk boundaries anywhere, and
how both treat the end of an archive, garbage and truncation."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdock.snapshots import tarstream
from asyncdock.snapshots.tarstream import ChunkStream, TarError, TarReader, pax_time_ns

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def chunks(data: bytes, step: int) -> Iterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]


def ours(data: bytes, step: int = 65536) -> list[dict[str, Any]]:
    tr = TarReader(ChunkStream(chunks(data, step)))
    out = []
    while (m := tr.next()) is not None:
        out.append({"name": m.name, "type": m.type, "mode": m.mode, "uid": m.uid, "gid": m.gid,
                    "size": m.size, "mtime_ns": m.mtime_ns, "linkname": m.linkname,
                    "dev": (m.devmajor, m.devminor) if m.type in (tarstream.CHR, tarstream.BLK) else None,
                    "pax": dict(m.pax_headers), "sparse": m.sparse,
                    "data": _sparse_data(tr, m) if m.type == tarstream.REG else None})
    return out


def _sparse_data(tr: TarReader, m: tarstream.Member) -> bytes:
    if m.sparse is None:
        return tr.read_data(m.size)
    buf = bytearray(m.size)
    for offset, size in m.sparse:
        buf[offset:offset + size] = tr.read_data(size)
    return bytes(buf)


def theirs(data: bytes) -> list[dict[str, Any]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            reg = ti.isreg()
            typ = tarstream.REG if reg else ti.type
            mtime = ti.mtime
            if "mtime" in ti.pax_headers:  # ours is exact; tarfile goes through a float
                mtime_ns = pax_time_ns(ti.pax_headers["mtime"])
                assert abs(mtime_ns - int(mtime * 1e9)) < 1000
            else:
                mtime_ns = int(mtime) * 1_000_000_000
            data = None
            if reg:
                f = tf.extractfile(ti)
                assert f is not None
                data = f.read()
            out.append({"name": ti.name, "type": typ, "mode": ti.mode, "uid": ti.uid, "gid": ti.gid,
                        "size": ti.size, "mtime_ns": mtime_ns, "linkname": ti.linkname,
                        "dev": (ti.devmajor, ti.devminor) if ti.ischr() or ti.isblk() else None,
                        "pax": dict(ti.pax_headers), "sparse": ti.sparse, "data": data})
    return out


def same(data: bytes) -> list[dict[str, Any]]:
    expected = theirs(data)
    for step in (1, 7, 511, 512, 513, 4096, 1 << 20):
        assert ours(data, step) == expected, f"chunk size {step}"
    return expected


def build(fmt: int, entries: list[tuple[tarfile.TarInfo, bytes | None]],
          pax_headers: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name: str, type: bytes = tarfile.REGTYPE, **kw: Any) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type = type
    t.mtime = kw.pop("mtime", 1_600_000_000)
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def everything(fmt: int) -> bytes:
    long_dir = "d/" + "x" * 120
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (ti("etc", tarfile.DIRTYPE, mode=0o755), None),
        (ti("etc/hosts", size=21, mode=0o644, uid=1000, gid=1001), b"127.0.0.1 localhost\n\n"),
        (ti("empty", size=0), b""),
        (ti("big", size=70_000, mode=0o4755), os.urandom(70_000)),
        (ti("link", tarfile.SYMTYPE, linkname="/etc/hosts"), None),
        (ti("hard", tarfile.LNKTYPE, linkname="etc/hosts"), None),
        (ti("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
        (ti("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660), None),
        (ti("run/fifo", tarfile.FIFOTYPE, mode=0o620), None),
        (ti("tmp", tarfile.DIRTYPE, mode=0o1777), None),
        # 150 characters: ustar splits it into prefix + name; GNU and pax use their extensions
        (ti("usr/share/" + "a" * 60 + "/" + "b" * 70 + "/file", size=3), b"abc"),
    ]
    if fmt != tarfile.USTAR_FORMAT:
        entries += [
            (ti(long_dir + "/" + "y" * 200, size=1), b"z"),  # longer than ustar can say
            (ti("longlink", tarfile.SYMTYPE, linkname="/" + "t" * 150), None),
            (ti("hardlong", tarfile.LNKTYPE, linkname="usr/share/" + "a" * 60 + "/" + "b" * 70 + "/file"), None),
            (ti("bigids", size=1, uid=3_000_000, gid=2**22), b"u"),  # beyond 7 octal digits
        ]
    if fmt == tarfile.PAX_FORMAT:
        entries += [
            (ti("unicode-é-ñ-日本", size=2), b"hi"),
            (ti("xattr", size=1, pax_headers={
                "SCHILY.xattr.user.note": "hello",
                "SCHILY.xattr.security.capability": bytes.fromhex("0100000200040000").decode("utf-8", "surrogateescape"),
                "mtime": "1700000000.123456789", "atime": "1700000001.5"}), b"x"),
            (ti("negative-time", size=0, pax_headers={"mtime": "-1.25"}), b""),
        ]
    return build(fmt, entries)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_every_member_kind_matches_tarfile(fmt: int) -> None:
    members = same(everything(fmt))
    assert len(members) >= 11


def test_global_pax_headers_and_overrides() -> None:
    data = build(tarfile.PAX_FORMAT, [
        (ti("a", size=1, pax_headers={"path": "renamed/", "uid": "77", "gid": "88", "comment": "x"}), b"a"),
        (ti("b", size=1), b"b"),
        (ti("c", tarfile.SYMTYPE, pax_headers={"linkpath": "elsewhere"}), None),
    ], pax_headers={"comment": "global", "mtime": "1234567890.5"})
    members = same(data)
    assert members[0]["name"] == "renamed" and members[0]["uid"] == 77
    assert members[1]["pax"]["comment"] == "global"
    assert members[1]["mtime_ns"] == 1_234_567_890_500_000_000
    assert members[2]["linkname"] == "elsewhere"


def test_non_utf8_names_round_trip() -> None:
    name = b"caf\xe9".decode("utf-8", "surrogateescape")  # latin-1 bytes, not UTF-8
    for fmt in FORMATS.values():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
            tf.addfile(ti(name, size=1), io.BytesIO(b"1"))
        assert same(buf.getvalue())[0]["name"] == name


def test_v7_directory_and_header_only_types_with_a_size() -> None:
    # A v7 directory is a regular-file entry whose name ends in "/"; header-only types carry
    # no data whatever their size field says (tarfile and Go agree).
    data = build(tarfile.USTAR_FORMAT, [(ti("x", size=0), b"")])
    raw = bytearray(data)
    hdr = bytearray(512)
    hdr[:7] = b"olddir/"
    hdr[100:108] = b"0000755\0"
    hdr[124:136] = b"00000000000\0"
    hdr[136:148] = b"00000000001\0"
    hdr[156:157] = b"\0"
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    link = bytearray(512)
    link[:4] = b"hard"
    link[100:108] = b"0000644\0"
    link[124:136] = b"00000000012\0"  # size 10, but a hard link has no data
    link[136:148] = b"00000000001\0"
    link[156:157] = b"1"
    link[157:158] = b"x"
    link[148:156] = b" " * 8
    link[148:156] = b"%06o\0 " % sum(link)
    data = bytes(hdr) + bytes(link) + bytes(raw)
    members = same(data)
    assert [m["name"] for m in members][:3] == ["olddir", "hard", "x"]
    assert members[0]["type"] == tarstream.DIR


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("args", [
    ["--format=gnu"],
    ["--format=posix", "--sparse-version=0.0"],
    ["--format=posix", "--sparse-version=0.1"],
    ["--format=posix", "--sparse-version=1.0"],
], ids=["gnu", "pax-0.0", "pax-0.1", "pax-1.0"])
def test_gnu_sparse_files(tmp_path: Path, args: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        # many holes: the old GNU format needs extension blocks past four runs
        for i in range(30):
            f.seek(i * 65536)
            f.write(os.urandom(100 + i))
        f.truncate(30 * 65536 + 12345)
    (src / "plain").write_bytes(b"after")
    out = tmp_path / "a.tar"
    subprocess.run(["tar", "-c", "--sparse", *args, "-f", str(out), "-C", str(src), "sparse", "plain"], check=True)
    members = same(out.read_bytes())
    assert members[0]["sparse"] and members[0]["size"] == 30 * 65536 + 12345
    assert members[0]["data"] == (src / "sparse").read_bytes()
    assert members[1]["data"] == b"after"


def test_end_of_archive_garbage_and_truncation() -> None:
    data = build(tarfile.PAX_FORMAT, [(ti("a", size=3), b"abc"), (ti("b", size=1), b"b")])
    body = data[:2048]  # two members, no end blocks
    # garbage after valid members ends the archive, as with tarfile
    assert [m["name"] for m in same(body + b"garbage!" * 64)] == ["a", "b"]
    # a truncated last header also just ends it
    assert [m["name"] for m in ours(body + b"x" * 100)] == ["a", "b"]
    # garbage or nothing at the very start is "not a tar"
    for bad in (b"", b"not a tar" * 100):
        with pytest.raises(TarError):
            ours(bad)
        with pytest.raises(tarfile.ReadError):
            theirs(bad)
    # a zero block at the start is an empty archive
    assert ours(bytes(1024)) == theirs(bytes(1024)) == []
    # data cut short is an error for both
    with pytest.raises(TarError):
        ours(data[:512 + 2])
    with pytest.raises(tarfile.ReadError):
        theirs(data[:512 + 2])


def test_header_after_an_extended_header_must_be_valid() -> None:
    data = build(tarfile.PAX_FORMAT, [(ti("a", size=1, pax_headers={"comment": "c"}), b"a")])
    broken = data[:1024] + b"\xff" * 512  # pax header and its records, then junk
    with pytest.raises(TarError):
        ours(broken)
    with pytest.raises(tarfile.ReadError):
        theirs(broken)


def test_signed_checksums_are_accepted() -> None:
    data = bytearray(build(tarfile.USTAR_FORMAT, [(ti("é", size=1), b"1")]))
    hdr = data[:512]
    signed = 256 + sum(b - 256 if b > 127 else b for i, b in enumerate(hdr) if not 148 <= i < 156)
    data[148:156] = b"%06o\0 " % signed
    assert ours(bytes(data))[0]["name"] == "é"


def test_chunk_stream_digest_covers_everything() -> None:
    import hashlib
    data = os.urandom(5000)
    s = ChunkStream(chunks(data, 333))
    assert s.read(10) == data[:10]
    assert s.skip(100) == 100
    s.drain()
    assert s.digest() == "sha256:" + hashlib.sha256(data).hexdigest()


def test_pax_time_ns() -> None:
    assert pax_time_ns("1700000000.123456789") == 1_700_000_000_123_456_789
    assert pax_time_ns("1700000000.1234567891") == 1_700_000_000_123_456_789  # truncated
    assert pax_time_ns("5") == 5_000_000_000
    assert pax_time_ns("-1.5") == -1_500_000_000
    assert pax_time_ns("junk") == 0


def test_an_oversized_extended_header_is_refused() -> None:
    hdr = bytearray(512)
    hdr[:9] = b"PaxHeader"
    hdr[100:108] = b"0000644\0"
    hdr[124:136] = b"%011o\0" % (tarstream.MAX_EXTENSION + 1)
    hdr[136:148] = b"00000000001\0"
    hdr[156:157] = b"x"
    hdr[257:263] = b"ustar\0"
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    with pytest.raises(TarError, match="too large"):
        ours(bytes(hdr) + bytes(4096))
