"""What the faster unpack path must still get right: modes and owners when chown/chmod are
skipped (umask, set-id bits, setgid parents, default ACLs), the layer size counted while
unpacking (against the tree walk Docker's figure comes from), the zlib fallback when ISA-L is
absent, short reads, and the pipe that feeds a download to the unpacker."""
from __future__ import annotations

import asyncio
import gzip
import io
import os
import stat
import struct
import tarfile
import threading
import zlib
from pathlib import Path

import pytest

from asyncdock.images.pipe import LayerPipe
from asyncdock.images.pull import apparent_size
from asyncdock.snapshots import unpack
from asyncdock.snapshots.unpack import LayerStats, apply_layer

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown)")
TAR = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer(*entries: tuple[str, str, dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, kw in entries:
            kw = dict(kw)
            data = kw.pop("data", b"")
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                       "link": tarfile.LNKTYPE}[kind]
            if kind == "file":
                ti.size = len(data)  # type: ignore[arg-type]
            for k, v in kw.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)  # type: ignore[arg-type]
    return buf.getvalue()


class Short:
    """A reader that answers with a few bytes at a time (like the download pipe)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        out = self.data[self.pos:self.pos + min(self.step, n if n > 0 else self.step)]
        self.pos += len(out)
        return out


def mode_of(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_modes_come_out_exact_whatever_the_umask(tmp_path: Path) -> None:
    modes = [0o644, 0o666, 0o777, 0o600, 0o000, 0o755, 0o4755, 0o2755, 0o1777, 0o640]
    data = layer(*[("file", f"f{m:o}", {"mode": m, "data": b"x"}) for m in modes])
    old = os.umask(0o027)  # a strict umask: open() alone would drop bits
    try:
        apply_layer(io.BytesIO(data), tmp_path, whiteouts="overlay", media_type=TAR)
    finally:
        os.umask(old)
    assert {m: mode_of(tmp_path / f"f{m:o}") for m in modes} == {m: m for m in modes}


@needs_root
def test_owners_are_set_only_where_needed_and_always_right(tmp_path: Path) -> None:
    data = layer(("dir", "d", {"uid": 0, "gid": 0}),
                 ("file", "d/root", {"data": b"r", "uid": 0, "gid": 0}),
                 ("file", "d/user", {"data": b"u", "uid": 1000, "gid": 1001, "mode": 0o6755}),
                 ("file", "d/root2", {"data": b"r", "uid": 0, "gid": 0}),
                 ("sym", "d/l", {"linkname": "root", "uid": 7, "gid": 8}),
                 ("sym", "d/l0", {"linkname": "root", "uid": 0, "gid": 0}))
    apply_layer(io.BytesIO(data), tmp_path, whiteouts="overlay", media_type=TAR)
    owners = {n: (os.lstat(tmp_path / "d" / n).st_uid, os.lstat(tmp_path / "d" / n).st_gid)
              for n in ("root", "user", "root2", "l", "l0")}
    assert owners == {"root": (0, 0), "user": (1000, 1001), "root2": (0, 0), "l": (7, 8), "l0": (0, 0)}
    assert mode_of(tmp_path / "d/user") == 0o6755  # chmod after chown kept the set-id bits


@needs_root
def test_a_setgid_parent_does_not_leak_its_group(tmp_path: Path) -> None:
    # "delete" mode applies on top of an existing tree: a setgid directory there gives new
    # files its group, which the layer's gid 0 must override.
    (tmp_path / "shared").mkdir()
    os.chown(tmp_path / "shared", 0, 4242)
    os.chmod(tmp_path / "shared", 0o2775)
    data = layer(("file", "shared/a", {"data": b"a", "uid": 0, "gid": 0}),
                 ("file", "shared/b", {"data": b"b", "uid": 0, "gid": 4242}),
                 ("file", "shared/c", {"data": b"c", "uid": 0, "gid": 0}))
    for mode in ("delete", "overlay"):
        dest = tmp_path if mode == "delete" else tmp_path / "ov"
        if mode == "overlay":
            # the same through the layer itself: the setgid mode only lands at the end, so the
            # cursor's learned owner must be right for each directory
            dest.mkdir()
            os.chown(dest, 0, 4242)
            os.chmod(dest, 0o2775)
            data = layer(("file", "a", {"data": b"a", "uid": 0, "gid": 0}),
                         ("file", "b", {"data": b"b", "uid": 0, "gid": 4242}))
        apply_layer(io.BytesIO(data), dest, whiteouts=mode, media_type=TAR)  # type: ignore[arg-type]
    assert [os.lstat(tmp_path / "shared" / n).st_gid for n in "abc"] == [0, 4242, 0]
    assert [os.lstat(tmp_path / "ov" / n).st_gid for n in "ab"] == [0, 4242]


# setfacl -d -m u::r--,g::r--,o::--- as the kernel's xattr: version 2, then (tag, perm, id)
RESTRICTIVE_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((0x01, 4), (0x04, 4), (0x20, 0)))


def test_a_default_acl_does_not_decide_modes(tmp_path: Path) -> None:
    # Under a default ACL the kernel ignores the umask and masks with the ACL instead: a 0644
    # file would come out 0440 if we trusted open()'s mode.
    dest = tmp_path / "d"
    dest.mkdir()
    try:
        os.setxattr(dest, "system.posix_acl_default", RESTRICTIVE_ACL)
    except OSError as e:
        pytest.skip(f"no ACLs here: {e}")
    data = layer(("file", "f", {"mode": 0o600, "data": b"x"}), ("file", "g", {"mode": 0o644, "data": b"y"}))
    apply_layer(io.BytesIO(data), dest, whiteouts="overlay", media_type=TAR)
    assert (mode_of(dest / "f"), mode_of(dest / "g")) == (0o600, 0o644)
    # the same when the layer itself gives a directory its default ACL
    other = tmp_path / "o"
    other.mkdir()
    acl = RESTRICTIVE_ACL.decode("utf-8", "surrogateescape")
    data = layer(("dir", "sub", {"mode": 0o755, "pax_headers": {"SCHILY.xattr.system.posix_acl_default": acl}}),
                 ("file", "sub/g", {"mode": 0o644, "data": b"y"}))
    apply_layer(io.BytesIO(data), other, whiteouts="overlay", media_type=TAR)
    assert mode_of(other / "sub/g") == 0o644


def test_layer_size_counted_while_unpacking_matches_the_tree(tmp_path: Path) -> None:
    data = layer(("dir", "etc", {}), ("file", "etc/a", {"data": b"a" * 1000}),
                 ("file", "etc/b", {"data": b""}), ("sym", "etc/s", {"linkname": "/some/where/else"}),
                 ("link", "etc/h", {"linkname": "etc/a"}), ("file", "big", {"data": os.urandom(70_000)}),
                 ("file", "usr/lib/x/.wh.gone", {}), ("file", "opt/.wh..wh..opq", {}))
    stats = LayerStats()
    apply_layer(io.BytesIO(data), tmp_path, whiteouts="overlay", media_type=TAR, stats=stats)
    assert stats.size == apparent_size(tmp_path) == 1000 + len("/some/where/else") + 70_000


def test_layer_size_gives_up_when_an_entry_is_replaced(tmp_path: Path) -> None:
    data = layer(("file", "a", {"data": b"old" * 100}), ("file", "a", {"data": b"new"}))
    stats = LayerStats()
    apply_layer(io.BytesIO(data), tmp_path, whiteouts="overlay", media_type=TAR, stats=stats)
    assert stats.size is None and (tmp_path / "a").read_bytes() == b"new"
    stats = LayerStats()
    (tmp_path / "del").mkdir()
    apply_layer(io.BytesIO(layer(("file", "x", {"data": b"x"}))), tmp_path / "del", whiteouts="delete",
                media_type=TAR, stats=stats)
    assert stats.size is None  # "delete" mode: the tree is the parent's too


def test_zlib_fallback_without_isal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "_inflate_mod", zlib)
    monkeypatch.setattr(unpack, "_INFLATE_ERRORS", (zlib.error,))
    data = layer(("file", "a", {"data": os.urandom(100_000)}), ("file", "z", {"data": b"last"}))
    two = gzip.compress(data[:5000]) + gzip.compress(data[5000:])
    assert apply_layer(io.BytesIO(two), tmp_path, whiteouts="overlay", media_type=GZIP).startswith("sha256:")
    assert (tmp_path / "z").read_bytes() == b"last"
    with pytest.raises(unpack.LayerError):
        (tmp_path / "nope").mkdir()
        apply_layer(io.BytesIO(b"\x1f\x8b\x08\x00garbage-garbage"), tmp_path / "nope", whiteouts="overlay",
                    media_type=GZIP)


def test_isal_is_used_when_present() -> None:
    pytest.importorskip("isal")
    assert unpack._inflate_mod.__name__.endswith("isal_zlib")


@pytest.mark.parametrize("step", [1, 2, 3, 511])
def test_sniffing_survives_short_reads(tmp_path: Path, step: int) -> None:
    data = layer(("file", "a", {"data": b"hello"}))
    dest = tmp_path / str(step)
    dest.mkdir()
    apply_layer(Short(gzip.compress(data), step), dest, whiteouts="overlay", media_type="application/octet-stream")
    assert (dest / "a").read_bytes() == b"hello"


def test_pipe_hands_over_small_chunks_and_the_end() -> None:
    async def main() -> bytes:
        pipe = LayerPipe(limit=1 << 20)
        got: list[bytes] = []

        def reader() -> None:
            while chunk := pipe.read(1 << 20):
                got.append(chunk)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(300):  # 300 small chunks: fewer than the wake-up threshold at first
            await pipe.put(bytes([i % 256]) * 100)
        pipe.close()
        await asyncio.to_thread(t.join)
        return b"".join(got)

    assert asyncio.run(main()) == b"".join(bytes([i % 256]) * 100 for i in range(300))


def test_pipe_producer_waits_for_a_slow_reader() -> None:
    async def main() -> int:
        pipe = LayerPipe(limit=64 << 10)
        total = 0
        done = threading.Event()

        def reader() -> None:
            nonlocal total
            while chunk := pipe.read(4096):
                total += len(chunk)
            pipe.reader_done()
            done.set()

        t = threading.Thread(target=reader)
        t.start()
        for _ in range(200):
            await pipe.put(b"x" * 10_000)  # 2 MB through a 64 KiB pipe
        pipe.close()
        await asyncio.to_thread(t.join)
        return total

    assert asyncio.run(main()) == 2_000_000


def test_snapshots_dir_carries_the_top_dir_flag(tmp_path: Path) -> None:
    import fcntl

    from asyncdock_snapshotter_overlay import OverlaySnapshotter
    from asyncdock.util.fsflags import _FS_IOC_GETFLAGS, _FS_TOPDIR_FL, mark_topdir

    probe = tmp_path / "probe"
    probe.mkdir()
    if not mark_topdir(probe):
        pytest.skip("this file system has no top-dir flag")
    snap = OverlaySnapshotter(tmp_path / "snap", durable=False)
    fd = os.open(snap.root / "snapshots", os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
    finally:
        os.close(fd)
    assert flags & _FS_TOPDIR_FL
    assert mark_topdir(snap.root / "snapshots")  # idempotent


def test_containers_dir_carries_the_top_dir_flag(tmp_path: Path) -> None:
    """Each container's directory (records rewritten atomically, /etc files, logs) starts in a
    block group of its own, not beside every other container's deleted files."""
    import fcntl

    from asyncdock.containers.store import ContainerStore
    from asyncdock.util.fsflags import _FS_IOC_GETFLAGS, _FS_TOPDIR_FL, mark_topdir

    probe = tmp_path / "probe"
    probe.mkdir()
    if not mark_topdir(probe):
        pytest.skip("this file system has no top-dir flag")
    store = ContainerStore(tmp_path / "containers")
    fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
    finally:
        os.close(fd)
    assert flags & _FS_TOPDIR_FL
