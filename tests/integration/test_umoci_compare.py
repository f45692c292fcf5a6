"""Our unpack (apply_layer + snapshotter + a real mount) against umoci's, on an image built here.

The image has what layer semantics are made of: whiteouts of a file and of a directory, an
opaque directory, hard links, symlinks (absolute and relative, and one replaced by a file), a
set-uid file owned by 1000:1000, a fifo, a device, a file capability, and a directory replaced
by a file. Both trees must agree entry by entry: type, mode, owner, content, link target,
device number, xattrs, file mtimes and which paths share an inode.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from asyncdock.plugins import SNAPSHOTTERS, InitContext, discover
from asyncdock.snapshots import mount as mnt
from asyncdock.snapshots.unpack import apply_layer
from tests.support.imagebuild import MT_LAYER_GZIP, LayoutWriter

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real owners, devices, mounts"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci not installed"),
]

MTIME = 1_700_000_000
CAP_NET_BIND = bytes.fromhex("0100000200040000000000000000000000000000")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Tar:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
            uid: int = 0, gid: int = 0, link: str = "", dev: tuple[int, int] = (0, 0),
            xattrs: dict[str, bytes] | None = None) -> _Tar:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, MTIME
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                              for k, v in xattrs.items()}
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            self.tf.addfile(ti, io.BytesIO(data))
        else:
            self.tf.addfile(ti)
        return self

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> _Tar:
        return self.add(name, tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid)

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def build_layers() -> list[bytes]:
    base = (_Tar()
            .dir("bin").add("bin/busybox", data=b"\x7fELF busybox", mode=0o755)
            .add("bin/sh", tarfile.LNKTYPE, link="bin/busybox", mode=0o755)
            .add("bin/ls", tarfile.LNKTYPE, link="bin/busybox", mode=0o755)
            .add("bin/ping", data=b"\x7fELF ping", mode=0o755, xattrs={"security.capability": CAP_NET_BIND})
            .dir("dev").add("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
            .dir("etc").add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
            .add("etc/group", data=b"root:x:0:\n").add("etc/mtab", tarfile.SYMTYPE, link="/proc/mounts", mode=0o777)
            .dir("home").dir("home/user", 0o750, 1000, 1000)
            .add("home/user/.profile", data=b"export A=1\n", uid=1000, gid=1000)
            .dir("opt").dir("opt/old").add("opt/old/file", data=b"old")
            .dir("run").add("run/fifo", tarfile.FIFOTYPE, mode=0o600)
            .dir("tmp", 0o1777)
            .dir("usr").dir("usr/bin").add("usr/bin/env", tarfile.SYMTYPE, link="../../bin/busybox", mode=0o777)
            .add("usr/bin/suid", data=b"\x7fELF suid", mode=0o4755, uid=1000, gid=1000)
            .dir("var").dir("var/cache").add("var/cache/a", data=b"a").dir("var/cache/sub")
            .add("var/cache/sub/b", data=b"b")
            .dir("srv").dir("srv/becomes-file").add("srv/becomes-file/x", data=b"x")
            .add("srv/link-becomes-file", tarfile.SYMTYPE, link="/etc", mode=0o777)
            .bytes())
    middle = (_Tar()
              .dir("etc").add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
              .dir("opt").add("opt/.wh.old")  # a whole directory
              .dir("var").dir("var/cache").add("var/cache/.wh..wh..opq").add("var/cache/fresh", data=b"fresh")
              .dir("usr").dir("usr/lib").add("usr/lib/libx.so.1", data=b"lib", mode=0o755)
              .add("usr/lib/libx.so", tarfile.LNKTYPE, link="usr/lib/libx.so.1", mode=0o755)
              .add("usr/lib/gone", data=b"soon deleted")
              .bytes())
    top = (_Tar()
           .dir("etc").add("etc/.wh.group")  # a file
           .dir("usr").dir("usr/lib").add("usr/lib/.wh.gone")  # from the layer just below
           .dir("srv").add("srv/becomes-file", data=b"now a file")
           .add("srv/link-becomes-file", data=b"now a file too", mode=0o600)
           .dir("home").dir("home/user", 0o700, 1000, 1000)  # mode change only
           .bytes())
    return [base, middle, top]


def snapshot_tree(root: Path) -> tuple[dict[str, tuple[Any, ...]], set[frozenset[str]]]:
    """Everything that must match, per path; plus the groups of paths sharing an inode."""
    entries: dict[str, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            extra: Any = None
            if stat.S_ISREG(kind):
                extra = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(kind):
                extra = os.readlink(p)
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                extra = (os.major(st.st_rdev), os.minor(st.st_rdev))
            xattrs = {} if stat.S_ISLNK(kind) else {
                k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False)}
            mtime = None if stat.S_ISDIR(kind) else st.st_mtime_ns  # dir mtimes: not compared
            entries[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra, xattrs, mtime)
            if not stat.S_ISDIR(kind) and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    return entries, {frozenset(g) for g in inodes.values() if len(g) > 1}


def chain_ids(diff_ids: list[str]) -> list[str]:
    out = [diff_ids[0]]
    for d in diff_ids[1:]:
        out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


@pytest.mark.parametrize("snapshotter", ["overlayfs", "copy"])
async def test_unpack_matches_umoci(tmp_path: Path, snapshotter: str) -> None:
    if snapshotter == "overlayfs":
        import asyncdock_snapshotter_overlay

        if not asyncdock_snapshotter_overlay.supported(tmp_path):
            pytest.skip("overlayfs not usable here")
    layout = LayoutWriter(tmp_path / "layout")
    descs = [layout.add_layer(tar, "gzip") for tar in build_layers()]
    layout.tag(layout.add_image(descs), "test")
    layout.finish()

    bundle = tmp_path / "bundle"
    res = subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:test", str(bundle)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    expected = snapshot_tree(bundle / "rootfs")

    snap = discover(SNAPSHOTTERS)[snapshotter].factory(InitContext(root=tmp_path / "snap"))
    chains = chain_ids([d.diff_id for d in descs])
    parent: str | None = None
    for desc, chain in zip(descs, chains):
        key = f"extract-{chain}"
        await snap.prepare(key, None if snap.independent_layers else parent)
        blob = tmp_path / "layout/blobs/sha256" / desc.blob.digest.removeprefix("sha256:")

        def unpack(blob: Path = blob, key: str = key) -> str:
            with open(blob, "rb") as f:
                return apply_layer(f, snap.upper_dir(key), whiteouts=snap.whiteouts, media_type=MT_LAYER_GZIP)

        assert await asyncio.to_thread(unpack) == desc.diff_id
        await snap.commit(chain, key, parent=parent)
        parent = chain
    assert parent is not None

    target = tmp_path / "rootfs"
    target.mkdir()
    mnt.mount(await snap.prepare("container", parent), target)
    try:
        got = snapshot_tree(target)
    finally:
        mnt.unmount(target)
    assert not mnt.unmount_all_under(tmp_path)

    want_entries, want_links = expected
    got_entries, got_links = got
    assert sorted(got_entries) == sorted(want_entries)
    for path in sorted(want_entries):
        assert got_entries[path] == want_entries[path], path
    assert got_links == want_links
    # the sanity of the fixture itself: the interesting cases are really in there
    assert {"bin/sh", "bin/ls", "bin/busybox"} <= set().union(*want_links)
    assert "opt/old" not in want_entries and "etc/group" not in want_entries
    assert sorted(p for p in want_entries if p.startswith("var/cache/")) == ["var/cache/fresh"]
    assert want_entries["usr/bin/suid"][1:4] == (0o4755, 1000, 1000)
    assert want_entries["bin/ping"][5] == {"security.capability": CAP_NET_BIND}
    assert want_entries["dev/null"][4] == (1, 3) and stat.S_ISFIFO(want_entries["run/fifo"][0])
    assert stat.S_ISREG(want_entries["srv/becomes-file"][0])
    assert stat.S_ISREG(want_entries["srv/link-becomes-file"][0])
    assert want_entries["home/user"][1:4] == (0o700, 1000, 1000)
    assert {"usr/lib/libx.so", "usr/lib/libx.so.1"} in want_links and "usr/lib/gone" not in want_entries
