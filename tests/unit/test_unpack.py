"""apply_layer: entry types, metadata, whiteouts in both modes, compression, diff IDs, and every
way a hostile layer might try to write outside its destination. Tars are built in memory."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from asyncdock.snapshots.unpack import LayerError, apply_layer

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")

TAR = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# security.capability v2 blob for cap_net_bind_service+ep (binary, not valid UTF-8)
CAP_NET_BIND = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


class Layer:
    """A tar built entry by entry, in the PAX format image layers use."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, ti: tarfile.TarInfo, data: bytes | None = None, **kw: object) -> Layer:
        ti.mtime = int(kw.pop("mtime", 1_600_000_000))  # type: ignore[call-overload]
        for k, v in kw.items():
            setattr(ti, k, v)
        self.tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return self

    def dir(self, name: str, mode: int = 0o755, **kw: object) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        return self._add(ti, **kw)

    def file(self, name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), mode
        return self._add(ti, data, **kw)

    def symlink(self, name: str, target: str, **kw: object) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        return self._add(ti, **kw)

    def hardlink(self, name: str, target: str, **kw: object) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname = tarfile.LNKTYPE, target
        return self._add(ti, **kw)

    def node(self, name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o666,
             **kw: object) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.devmajor, ti.devminor, ti.mode = kind, major, minor, mode
        return self._add(ti, **kw)

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


class Pipe:
    """Only .read(n), like a pipe fed by a download, and short reads of odd sizes."""

    def __init__(self, data: bytes, step: int = 7919) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else len(self.data), self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def apply(data: bytes, dest: Path, mode: str = "overlay", media_type: str = TAR) -> str:
    return apply_layer(Pipe(data), dest, whiteouts=mode, media_type=media_type)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tree(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield os.path.relpath(os.path.join(dirpath, n), root)


# ---------------------------------------------------------------------------------------------
# entry types and metadata


def test_regular_files_dirs_and_modes(tmp_path: Path) -> None:
    data = (Layer().dir("etc", 0o755, mtime=1000).file("etc/hosts", b"127.0.0.1 localhost\n", 0o644)
            .file("usr/bin/tool", b"#!/bin/sh\n", 0o4755).dir("tmp", 0o1777).bytes())
    assert apply(data, tmp_path) == sha(data)
    assert (tmp_path / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert stat.S_IMODE((tmp_path / "etc/hosts").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "usr/bin/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777
    # a parent the layer only implies is created 0755
    assert stat.S_IMODE((tmp_path / "usr").stat().st_mode) == 0o755
    # dir times are set after their content was written
    assert (tmp_path / "etc").stat().st_mtime == 1000


def test_symlinks_and_lutimes(tmp_path: Path) -> None:
    data = Layer().file("target", b"x", mtime=5).symlink("abs", "/etc/shadow", mtime=42) \
        .symlink("rel", "target", mtime=43).bytes()
    apply(data, tmp_path)
    assert os.readlink(tmp_path / "abs") == "/etc/shadow"
    assert os.readlink(tmp_path / "rel") == "target"
    assert os.lstat(tmp_path / "abs").st_mtime == 42
    assert os.lstat(tmp_path / "rel").st_mtime == 43
    assert (tmp_path / "target").stat().st_mtime == 5  # lutimes did not follow "rel"


def test_hard_links_share_the_inode(tmp_path: Path) -> None:
    data = Layer().dir("bin").file("bin/busybox", b"ELF", 0o755).hardlink("bin/sh", "bin/busybox") \
        .hardlink("/bin/ls", "/bin/busybox").bytes()  # absolute names are stripped as by tar
    apply(data, tmp_path)
    a, b, c = (os.lstat(tmp_path / p) for p in ("bin/busybox", "bin/sh", "bin/ls"))
    assert a.st_ino == b.st_ino == c.st_ino and a.st_nlink == 3


def test_hard_link_to_a_symlink_links_the_symlink(tmp_path: Path) -> None:
    data = Layer().symlink("s", "/etc/passwd").hardlink("h", "s").bytes()
    apply(data, tmp_path)
    assert os.path.islink(tmp_path / "h") and os.readlink(tmp_path / "h") == "/etc/passwd"


def test_fifo(tmp_path: Path) -> None:
    apply(Layer().node("run/fifo", tarfile.FIFOTYPE, mode=0o620).bytes(), tmp_path)
    st = os.lstat(tmp_path / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620


@needs_root
def test_devices_and_ownership(tmp_path: Path) -> None:
    data = (Layer().dir("dev").node("dev/null", tarfile.CHRTYPE, 1, 3, 0o666)
            .node("dev/loop0", tarfile.BLKTYPE, 7, 0, 0o660, gid=6)
            .file("home/u/f", b"x", 0o6750, uid=1000, gid=1000)
            .symlink("home/u/l", "f", uid=1000, gid=1001).dir("home/u/d", uid=1002, gid=1003).bytes())
    apply(data, tmp_path)
    null = os.lstat(tmp_path / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    loop = os.lstat(tmp_path / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and (loop.st_gid, stat.S_IMODE(loop.st_mode)) == (6, 0o660)
    f = os.lstat(tmp_path / "home/u/f")
    # set-id bits survive: chmod came after chown
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1000, 1000, 0o6750)
    link = os.lstat(tmp_path / "home/u/l")
    assert (link.st_uid, link.st_gid) == (1000, 1001)  # lchown, not the target
    d = os.lstat(tmp_path / "home/u/d")
    assert (d.st_uid, d.st_gid) == (1002, 1003)


def test_user_xattrs(tmp_path: Path) -> None:
    data = Layer().file("f", b"x", pax_headers={"SCHILY.xattr.user.note": "hello"}).bytes()
    try:
        apply(data, tmp_path)
        assert os.getxattr(tmp_path / "f", "user.note") == b"hello"
    except OSError as e:  # pragma: no cover - tmp without user xattrs
        pytest.skip(f"no user xattrs here: {e}")


@needs_root
def test_security_capability_survives_chown(tmp_path: Path) -> None:
    cap = CAP_NET_BIND.decode("utf-8", "surrogateescape")
    data = Layer().file("bin/ping", b"ELF", 0o755, uid=0, gid=0,
                        pax_headers={"SCHILY.xattr.security.capability": cap}).bytes()
    apply(data, tmp_path)
    assert os.getxattr(tmp_path / "bin/ping", "security.capability") == CAP_NET_BIND


@needs_root
def test_layer_cannot_forge_overlay_xattrs(tmp_path: Path) -> None:
    data = Layer().dir("d", pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y",
                                         "SCHILY.xattr.trusted.overlay.redirect": "/etc"}).bytes()
    apply(data, tmp_path)
    assert not [x for x in os.listxattr(tmp_path / "d") if x.startswith("trusted.overlay.")]


def test_root_entry_sets_the_root_dir(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    apply(Layer().dir("./", 0o751, mtime=77).file("./a", b"1").bytes(), dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o751 and dest.stat().st_mtime == 77
    assert (dest / "a").read_bytes() == b"1"


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    data = (Layer().file("a", b"file").dir("a").file("a/inner", b"1")  # file -> dir
            .dir("b").file("b/x", b"1").file("b", b"now a file")       # dir -> file
            .file("c", b"old").file("c", b"new").bytes())
    apply(data, tmp_path)
    assert (tmp_path / "a/inner").read_bytes() == b"1"
    assert (tmp_path / "b").read_bytes() == b"now a file"
    assert (tmp_path / "c").read_bytes() == b"new"


def test_big_file_and_sparse_free_stream(tmp_path: Path) -> None:
    big = os.urandom(3 << 20) + b"tail"
    data = Layer().file("big", big).file("after", b"ok").bytes()
    assert apply(data, tmp_path) == sha(data)
    assert (tmp_path / "big").read_bytes() == big and (tmp_path / "after").read_bytes() == b"ok"


# ---------------------------------------------------------------------------------------------
# compression and the diff ID


@pytest.mark.parametrize("media_type,compress", [
    (TAR, lambda b: b),
    (GZIP, gzip.compress),
    (DOCKER_GZIP, gzip.compress),
    ("application/vnd.oci.image.layer.v1.tar.gzip", gzip.compress),
    (ZSTD, lambda b: zstandard.ZstdCompressor().compress(b)),
    ("application/octet-stream", gzip.compress),  # unknown type: sniffed
])
def test_diff_id_is_the_uncompressed_digest(tmp_path: Path, media_type: str, compress) -> None:  # type: ignore[no-untyped-def]
    data = Layer().file("a", os.urandom(100_000)).file("b", b"b").bytes()
    assert apply(compress(data), tmp_path, media_type=media_type) == sha(data)
    assert (tmp_path / "b").read_bytes() == b"b"


def test_diff_id_covers_padding_after_the_end_of_archive(tmp_path: Path) -> None:
    data = Layer().file("a", b"a").bytes() + b"\0" * 10240
    assert apply(gzip.compress(data), tmp_path, media_type=GZIP) == sha(data)


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    data = Layer().file("a", os.urandom(50_000)).file("z", b"last").bytes()
    half = len(data) // 2
    (tmp_path / "g").mkdir()
    (tmp_path / "z").mkdir()
    two = gzip.compress(data[:half]) + gzip.compress(data[half:])
    assert apply(two, tmp_path / "g", media_type=GZIP) == sha(data)
    z = zstandard.ZstdCompressor()
    frames = z.compress(data[:half]) + z.compress(data[half:])
    assert apply(frames, tmp_path / "z", media_type=ZSTD) == sha(data)
    assert (tmp_path / "g/z").read_bytes() == (tmp_path / "z/z").read_bytes() == b"last"


def test_empty_layer(tmp_path: Path) -> None:
    data = Layer().bytes()  # only the two zero blocks (plus record padding)
    assert apply(gzip.compress(data), tmp_path, media_type=GZIP) == sha(data)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("blob,media_type", [
    (b"", TAR), (b"not a tar at all" * 100, TAR), (b"\x1f\x8bgarbage", GZIP),
])
def test_garbage_is_a_layer_error(tmp_path: Path, blob: bytes, media_type: str) -> None:
    with pytest.raises(LayerError):
        apply(blob, tmp_path, media_type=media_type)


def test_truncated_gzip_is_a_layer_error(tmp_path: Path) -> None:
    gz = gzip.compress(Layer().file("a", os.urandom(200_000)).bytes())
    with pytest.raises(LayerError):
        apply(gz[: len(gz) // 2], tmp_path, media_type=GZIP)


# ---------------------------------------------------------------------------------------------
# whiteouts


@needs_root  # mknod 0/0 is unprivileged since 5.8, but trusted.* xattrs need root
def test_overlay_whiteouts(tmp_path: Path) -> None:
    data = (Layer().dir("etc").file("etc/.wh.passwd").dir("var/cache").file("var/cache/.wh..wh..opq")
            .file("var/cache/new", b"n").file("gone/.wh.x").file(".wh..wh.plnk").bytes())
    assert apply(data, tmp_path, "overlay") == sha(data)
    wh = os.lstat(tmp_path / "etc/passwd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(tmp_path / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (tmp_path / "var/cache/new").read_bytes() == b"n"
    assert stat.S_ISCHR(os.lstat(tmp_path / "gone/x").st_mode)  # parent implied
    assert not list(tmp_path.glob("**/.wh.*")) and not (tmp_path / ".wh..wh.plnk").exists()


def test_delete_mode_whiteouts(tmp_path: Path) -> None:
    # dest already holds the parent's tree
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root")
    (tmp_path / "etc/keep").write_text("k")
    (tmp_path / "opt/app/sub").mkdir(parents=True)
    (tmp_path / "opt/app/sub/deep").write_text("d")
    (tmp_path / "cache/a").mkdir(parents=True)
    (tmp_path / "cache/b").write_text("b")
    data = (Layer().file("etc/.wh.passwd").file("opt/.wh.app")
            # same-layer entries before the opaque marker survive it, older ones do not
            .dir("cache").file("cache/fresh", b"f").file("cache/sub/implied", b"i")
            .file("cache/.wh..wh..opq").file("nothere/.wh.x").bytes())
    assert apply(data, tmp_path, "delete") == sha(data)
    assert not (tmp_path / "etc/passwd").exists() and (tmp_path / "etc/keep").exists()
    assert not (tmp_path / "opt/app").exists() and (tmp_path / "opt").is_dir()
    assert sorted(os.listdir(tmp_path / "cache")) == ["fresh", "sub"]
    assert (tmp_path / "cache/sub/implied").read_bytes() == b"i"
    assert not (tmp_path / "nothere").exists()
    assert not [p for p in tree(tmp_path) if ".wh." in p]


def test_delete_mode_whiteout_does_not_follow_a_symlinked_parent(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("v")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "link")
    with pytest.raises(LayerError):
        apply(Layer().file("link/.wh.victim").bytes(), dest, "delete")
    assert (outside / "victim").exists()


# ---------------------------------------------------------------------------------------------
# escapes: nothing may be written outside dest


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """dest inside a sandbox, with a sentinel next to it that no layer may touch."""
    dest = tmp_path / "sandbox/dest"
    dest.mkdir(parents=True)
    (tmp_path / "sandbox/sentinel").write_text("untouched")
    return dest, tmp_path / "sandbox"


def _outside_untouched(box: tuple[Path, Path]) -> None:
    dest, sandbox = box
    assert sorted(os.listdir(sandbox)) == ["dest", "sentinel"]
    assert (sandbox / "sentinel").read_text() == "untouched"


@pytest.mark.parametrize("name", ["../sentinel", "a/../../sentinel", "./../x", "a/b/../../../x", ".."])
def test_dotdot_is_refused(box: tuple[Path, Path], name: str) -> None:
    with pytest.raises(LayerError, match=r"'\.\.'"):
        apply(Layer().file(name, b"pwned").bytes(), box[0])
    _outside_untouched(box)


@pytest.mark.parametrize("key", ["path", "linkpath", "uname", "gname"])
def test_nul_in_a_pax_name_is_a_layer_error(box: tuple[Path, Path], key: str) -> None:
    """Go's archive/tar refuses these records; unchecked, the name reached a system call as
    "embedded null byte" (a ValueError with a traceback, not a clear pull error)."""
    layer = Layer().file("ok", b"ok")
    ti = tarfile.TarInfo("x")
    ti.pax_headers = {key: "a\0b"}
    layer._add(ti, b"")
    with pytest.raises(LayerError, match=f"invalid pax record '{key}': NUL byte"):
        apply(layer.bytes(), box[0])
    _outside_untouched(box)


def test_absolute_names_stay_inside(box: tuple[Path, Path]) -> None:
    sentinel = str(box[1] / "sentinel")
    apply(Layer().file(sentinel, b"pwned").file("/etc/x", b"x").bytes(), box[0])
    assert (box[0] / sentinel.lstrip("/")).read_bytes() == b"pwned"
    assert (box[0] / "etc/x").read_bytes() == b"x"
    _outside_untouched(box)


@pytest.mark.parametrize("target", ["..", "../", "/proc/self/cwd/.."])
def test_file_through_a_symlink_is_refused(box: tuple[Path, Path], target: str) -> None:
    link_target = str(box[1]) if target == "/proc/self/cwd/.." else target
    data = Layer().symlink("escape", link_target).file("escape/sentinel", b"pwned").bytes()
    with pytest.raises(LayerError, match="not a directory"):
        apply(data, box[0])
    _outside_untouched(box)


def test_dir_and_symlink_and_hardlink_through_a_symlink_are_refused(box: tuple[Path, Path]) -> None:
    for second in (lambda l: l.dir("escape/newdir"), lambda l: l.symlink("escape/s", "/"),
                   lambda l: l.hardlink("escape/h", "f"), lambda l: l.node("escape/p", tarfile.FIFOTYPE)):
        layer = Layer().file("f", b"f").symlink("escape", str(box[1]))
        with pytest.raises(LayerError):
            apply(second(layer).bytes(), box[0])
        _outside_untouched(box)


def test_symlink_replaced_by_a_file_is_not_written_through(box: tuple[Path, Path]) -> None:
    data = Layer().symlink("s", str(box[1] / "sentinel")).file("s", b"replaced").bytes()
    apply(data, box[0])
    assert not os.path.islink(box[0] / "s") and (box[0] / "s").read_bytes() == b"replaced"
    _outside_untouched(box)


def test_symlinked_dir_replaced_by_a_dir(box: tuple[Path, Path]) -> None:
    data = Layer().symlink("d", str(box[1])).dir("d").file("d/sentinel", b"inside").bytes()
    apply(data, box[0])
    assert (box[0] / "d/sentinel").read_bytes() == b"inside"
    _outside_untouched(box)


@pytest.mark.parametrize("target", ["../sentinel", "a/../../sentinel"])
def test_hard_link_with_dotdot_is_refused(box: tuple[Path, Path], target: str) -> None:
    with pytest.raises(LayerError):
        apply(Layer().hardlink("h", target).bytes(), box[0])
    _outside_untouched(box)


def test_hard_link_to_an_absolute_host_path_is_refused(box: tuple[Path, Path]) -> None:
    # "/etc/passwd" means <dest>/etc/passwd, which the layer does not have: never the host's.
    with pytest.raises(LayerError, match="target not in the layer"):
        apply(Layer().hardlink("h", "/etc/passwd").bytes(), box[0])
    with pytest.raises(LayerError, match="target not in the layer"):
        apply(Layer().hardlink("h", str(box[1] / "sentinel")).bytes(), box[0])
    assert not (box[0] / "h").exists()
    _outside_untouched(box)


def test_hard_link_through_a_symlinked_dir_is_refused(box: tuple[Path, Path]) -> None:
    data = Layer().symlink("out", str(box[1])).hardlink("h", "out/sentinel").bytes()
    with pytest.raises(LayerError):
        apply(data, box[0])
    assert not (box[0] / "h").exists()
    assert os.lstat(box[1] / "sentinel").st_nlink == 1
    _outside_untouched(box)


def test_whiteout_through_a_symlink_is_refused_in_overlay_mode(box: tuple[Path, Path]) -> None:
    data = Layer().symlink("out", str(box[1])).file("out/.wh.sentinel").bytes()
    with pytest.raises(LayerError):
        apply(data, box[0])
    _outside_untouched(box)


def test_root_entry_must_be_a_directory(box: tuple[Path, Path]) -> None:
    with pytest.raises(LayerError):
        apply(Layer().symlink(".", str(box[1])).bytes(), box[0])
    _outside_untouched(box)


def test_hard_link_replacing_its_own_target_dir_is_refused(box: tuple[Path, Path]) -> None:
    data = Layer().dir("a").file("a/f", b"f").hardlink("a", "a/f").bytes()
    with pytest.raises(LayerError, match="inside itself"):
        apply(data, box[0])
    _outside_untouched(box)


def test_delete_mode_replaces_parent_entries_of_another_type(tmp_path: Path) -> None:
    (tmp_path / "was-dir/sub").mkdir(parents=True)
    (tmp_path / "was-file").write_text("f")
    os.symlink("/etc", tmp_path / "was-link")
    data = (Layer().file("was-dir", b"file now").dir("was-file").file("was-file/x", b"x")
            .dir("was-link").file("was-link/y", b"y").bytes())
    apply(data, tmp_path, "delete")
    assert (tmp_path / "was-dir").read_bytes() == b"file now"
    assert (tmp_path / "was-file/x").read_bytes() == b"x"
    assert not os.path.islink(tmp_path / "was-link") and (tmp_path / "was-link/y").read_bytes() == b"y"
