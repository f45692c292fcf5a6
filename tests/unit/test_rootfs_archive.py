"""The engine's own tar writer and reader for docker cp and export (util/tarwrite.py,
tarextract.py, rootfs_fs.py): numeric owners and no name lookups, fd-relative walks, and every
way a tar or a container's symlinks might try to reach outside the container's root (names
that climb, symlinked parents pointing out, hard links to outside files, a symlink in the
place of a member). No root needed: members are owned by the test's own ids."""
from __future__ import annotations

import grp
import io
import os
import pwd
import socket
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdock.containers.archive import stat_path
from asyncdock.containers.rootfs_fs import clean_member_name, open_root, resolved_path
from asyncdock.containers.tarextract import BadArchive, extract
from asyncdock.util.tarwrite import tar_stream

UID, GID = os.getuid(), os.getgid()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the root, which nothing may touch."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_text("host secret\n")
    return o


@pytest.fixture
def root_fd(root: Path) -> Iterator[int]:
    fd = open_root(root)
    yield fd
    os.close(fd)


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.uid, info.gid = UID, GID
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"data\n", **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _chunks(data: bytes, size: int = 700) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _put(root_fd: int, dest: str, data: bytes, **kw: bool) -> None:
    extract(root_fd, dest, _chunks(data), **kw)


def _read(chunks: Iterator[bytes]) -> tuple[bytes, dict[str, tarfile.TarInfo], tarfile.TarFile]:
    data = b"".join(chunks)
    tar = tarfile.open(fileobj=io.BytesIO(data))
    return data, {m.name: m for m in tar.getmembers()}, tar


# -- writing ----------------------------------------------------------------------------------

def test_writer_numeric_owners_no_lookups(root: Path, root_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"hello\n")
    (root / "d" / "lnk").symlink_to("/etc/passwd")
    os.link(root / "d" / "f", root / "d" / "hard")
    os.mkfifo(root / "d" / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "d" / "sock"))
    s.close()

    def boom(*a: object) -> None:
        raise AssertionError("a user or group name was looked up")

    for mod, fn in ((pwd, "getpwuid"), (pwd, "getpwnam"), (grp, "getgrgid"), (grp, "getgrnam")):
        monkeypatch.setattr(mod, fn, boom)
    data, members, tar = _read(tar_stream([(root_fd, "d", "d")]))
    assert list(members) == ["d", "d/f", "d/fifo", "d/hard", "d/lnk"]  # sorted; the socket left out
    for m in members.values():
        assert (m.uid, m.gid, m.uname, m.gname) == (UID, GID, "", "")
    assert members["d/lnk"].issym() and members["d/lnk"].linkname == "/etc/passwd"  # not followed
    assert members["d/hard"].islnk() and members["d/hard"].linkname == "d/f"
    assert members["d/fifo"].isfifo()
    assert tar.extractfile("d/f").read() == b"hello\n"
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0  # Go's end: two zero blocks


def test_writer_streams_large_files_in_bounded_chunks(root: Path, root_fd: int) -> None:
    big = os.urandom(1 << 16) * 64  # 4 MiB
    (root / "big").write_bytes(big)
    sizes = []
    out = bytearray()
    for chunk in tar_stream([(root_fd, "big", "big")], chunk=1 << 16):
        sizes.append(len(chunk))
        out += chunk
    assert max(sizes) <= (1 << 16) + (1 << 20) and len(sizes) > 4
    with tarfile.open(fileobj=io.BytesIO(bytes(out))) as tar:
        assert tar.extractfile("big").read() == big


def test_writer_never_follows_a_symlinked_directory(root: Path, root_fd: int, outside: Path) -> None:
    (root / "d").mkdir()
    (root / "d" / "out").symlink_to(outside)
    _, members, _ = _read(tar_stream([(root_fd, "d", "d")]))
    assert set(members) == {"d", "d/out"} and members["d/out"].issym()


def test_stat_path_clamps_link_targets(root: Path, root_fd: int, outside: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("box\n")
    (root / "hn").symlink_to("/etc/../../../../etc/hostname")
    (root / "out").symlink_to(outside)
    info = stat_path(root_fd, "/hn")
    assert info["linkTarget"] == "/etc/hostname" and info["mode"] & (1 << 27)
    assert resolved_path(root_fd, "/out/secret") == str(outside) + "/secret"  # a path in the root
    with pytest.raises(FileNotFoundError):
        stat_path(root_fd, "/out/secret")  # which does not exist there: the host's is not seen
    with pytest.raises(NotADirectoryError):
        stat_path(root_fd, "/etc/hostname/")


# -- reading ----------------------------------------------------------------------------------

def test_nul_in_a_pax_path_is_a_clean_error(root: Path, root_fd: int) -> None:
    info, data = _file("harmless")
    info.pax_headers = {"path": "evil\0name"}
    with pytest.raises(BadArchive) as e:
        _put(root_fd, "/", _tar((info, data)))
    assert "NUL" in str(e.value) and "\n" not in str(e.value)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "../../../../../../escape"])
def test_names_that_climb_out_are_refused(root: Path, root_fd: int, tmp_path: Path, name: str) -> None:
    (root / "a").mkdir()
    with pytest.raises(BadArchive, match="climbs out"):
        _put(root_fd, "/a", _tar(_file(name)))
    assert not (tmp_path / "escape").exists() and not (root / "escape").exists()


def test_absolute_names_stay_under_the_destination(root: Path, root_fd: int) -> None:
    (root / "a").mkdir()
    _put(root_fd, "/a", _tar(_file("/abs/f", b"x\n")))
    assert (root / "a" / "abs" / "f").read_bytes() == b"x\n"


def test_symlinked_parents_resolve_inside_the_root(root: Path, root_fd: int, outside: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "up").symlink_to("/")
    (root / "data" / "rel").symlink_to("../../../../../../..")
    (root / "data" / "abs").symlink_to(outside)  # the host path of `outside`, as an absolute link
    # dangling in the root: a clean error (moby's MkdirAll fails on it too), nothing made
    with pytest.raises(BadArchive, match="cannot extract /data/abs/via-abs: File exists"):
        _put(root_fd, "/data", _tar(_file("abs/via-abs")))
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    tar = _tar(_file("up/via-up"), _file("rel/via-rel"), _file("abs/via-abs"), _file("abs/secret", b"owned\n"))
    _put(root_fd, "/data", tar)
    assert (root / "via-up").exists() and (root / "via-rel").exists()
    # the link's target is taken inside the root: made there, the host directory untouched
    assert (root / str(outside).lstrip("/") / "via-abs").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "host secret\n"


def test_the_destination_itself_resolves_inside_the_root(root: Path, root_fd: int, outside: Path) -> None:
    (root / "tmp").mkdir()
    (root / "tmplink").symlink_to(outside)
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    _put(root_fd, "/tmplink", _tar(_file("f")))
    assert (root / str(outside).lstrip("/") / "f").exists() and not (outside / "f").exists()


def test_a_symlink_in_the_place_of_a_member_is_replaced_not_written_through(
        root: Path, root_fd: int, outside: Path) -> None:
    (root / "f").symlink_to(outside / "secret")
    (root / "g").symlink_to("../outside/secret")
    _put(root_fd, "/", _tar(_file("f", b"mine\n"), _file("g", b"mine too\n")))
    assert (outside / "secret").read_text() == "host secret\n"
    assert not (root / "f").is_symlink() and (root / "f").read_text() == "mine\n"
    assert (root / "g").read_text() == "mine too\n"


def test_hard_links_to_outside_are_refused(root: Path, root_fd: int, outside: Path) -> None:
    (root / "up").symlink_to("/")
    with pytest.raises(BadArchive, match="climbs out"):
        _put(root_fd, "/", _tar(_link("h1", "../outside/secret", tarfile.LNKTYPE)))
    # through a symlinked directory: resolved in the root, where there is no such file
    with pytest.raises(BadArchive):
        _put(root_fd, "/", _tar(_link("h2", "up/" + str(outside / "secret").lstrip("/"), tarfile.LNKTYPE)))
    # to a symlink of the container that points out: the symlink itself is linked, not its target
    (root / "s").symlink_to(outside / "secret")
    _put(root_fd, "/", _tar(_link("h3", "s", tarfile.LNKTYPE)))
    assert (root / "h3").is_symlink()
    assert os.stat(outside / "secret").st_nlink == 1
    assert not (root / "h1").exists() and not (root / "h2").exists()


def test_no_overwrite_dir_non_dir(root: Path, root_fd: int) -> None:
    (root / "d").mkdir()
    (root / "f").write_text("x")
    dir_info = tarfile.TarInfo("f")
    dir_info.type = tarfile.DIRTYPE
    with pytest.raises(BadArchive, match="cannot overwrite directory '/d' with non-directory '/d'"):
        _put(root_fd, "/", _tar(_file("d")), no_overwrite=True)
    with pytest.raises(BadArchive, match="cannot overwrite non-directory '/f' with directory '/f'"):
        _put(root_fd, "/", _tar((dir_info, None)), no_overwrite=True)
    _put(root_fd, "/", _tar(_file("d", b"now a file\n"), (dir_info, None)))  # allowed without the flag
    assert (root / "d").read_text() == "now a file\n" and (root / "f").is_dir()


def test_metadata_and_types(root: Path, root_fd: int) -> None:
    d = tarfile.TarInfo("dir")
    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o750, 1_600_000_000
    fifo = tarfile.TarInfo("dir/fifo")
    fifo.type, fifo.mode = tarfile.FIFOTYPE, 0o640
    _put(root_fd, "/", _tar((d, None), _file("dir/x", b"1\n", mode=0o4711, mtime=1_500_000_000),
                            _link("dir/sl", "x"), _link("dir/hl", "dir/x", tarfile.LNKTYPE), (fifo, None)))
    st = os.stat(root / "dir")
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == 1_600_000_000
    st = os.stat(root / "dir" / "x")
    assert stat.S_IMODE(st.st_mode) == 0o4711 and st.st_mtime == 1_500_000_000 and st.st_nlink == 2
    assert os.readlink(root / "dir" / "sl") == "x"
    assert stat.S_ISFIFO(os.lstat(root / "dir" / "fifo").st_mode)


def test_bad_tars_are_clean_errors(root: Path, root_fd: int) -> None:
    good = _tar(_file("f", b"x" * 2000))
    for bad in (b"this is not a tar" * 40, good[:1024]):
        with pytest.raises(BadArchive) as e:
            _put(root_fd, "/", bad)
        assert str(e.value).startswith("invalid tar stream") and "\n" not in str(e.value)
    _put(root_fd, "/", b"")  # an empty body: nothing to do


def test_clean_member_name() -> None:
    assert clean_member_name("/") == "." and clean_member_name("./") == "."
    assert clean_member_name("/a//b/./c/") == "a/b/c"
    assert clean_member_name("a/../b") == "b"
    for bad in ("..", "../a", "a/../../b", "a\0b"):
        with pytest.raises(ValueError):
            clean_member_name(bad)
