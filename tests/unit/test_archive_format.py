"""The `docker save` archive's files and the `docker load` reader, without a daemon: tar headers
Python's tarfile reads back, Go's JSON, the layouts the reader accepts and what it refuses."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from asyncdock.base.errors import NotFound
from asyncdock.base.oci import Platform
from asyncdock.images import archive_format as af
from asyncdock.images.archive_load import _Unpacker, plan_images, read_archive
from asyncdock.registry.platforms import host_platform
from asyncdock.registry.reference import parse_normalized


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _config(diff_ids: list[str], arch: str = "") -> bytes:
    return json.dumps({"architecture": arch or host_platform().architecture, "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def _tar(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def _read(data: bytes, tmp_path: Path) -> list[Any]:
    src = io.BytesIO(data)
    tmp_path.mkdir(parents=True, exist_ok=True)
    spool = read_archive(src.read, tmp_path, _Unpacker(None, lambda *a, **k: "", "delete", 0, set()))
    return plan_images(spool)


def test_headers_read_back_by_tarfile_and_are_fixed() -> None:
    big = "blobs/sha256/" + "a" * 64
    raw = (af.tar_header("blobs/", mode=0o755, directory=True) + af.tar_member(big, b"xyz", mtime=1704067200)
           + af.tar_header("x/" * 60 + "name", 0) + af.TAR_END)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == ["blobs", big, "x/" * 60 + "name"]
        assert members[0].isdir() and members[0].mode == 0o755
        assert members[1].mtime == 1704067200 and members[1].uid == 0 and members[1].uname == ""
        f = tf.extractfile(members[1])
        assert f is not None and f.read() == b"xyz"
    assert af.tar_header("a", 5, mtime=7) == af.tar_header("a", 5, mtime=7)
    # past ustar's 8 GiB: base-256, which tarfile reads too
    hdr = af.tar_header("huge", 9 << 30)
    assert tarfile.TarInfo.frombuf(hdr, "utf-8", "surrogateescape").size == 9 << 30


def test_small_files_are_docker_25s() -> None:
    layer = _layer("f", b"data")
    diff = _sha(layer)
    cfg = _config([diff])
    img = af.SavedImage(_sha(cfg), len(cfg), [af.SavedLayer(diff, len(layer))],
                        tags=[parse_normalized("app:1"), parse_normalized("example.com/x/y:2")])
    blobs, files = af.small_files([img])
    [manifest_digest] = blobs
    assert files["oci-layout"] == b'{"imageLayoutVersion": "1.0.0"}'
    assert files["manifest.json"].endswith(b"\n") and not files["index.json"].endswith(b"\n")
    item = json.loads(files["manifest.json"])[0]
    assert list(item) == ["Config", "RepoTags", "Layers", "LayerSources"]
    assert item["RepoTags"] == ["app:1", "example.com/x/y:2"]
    assert list(item["LayerSources"][diff]) == ["mediaType", "size", "digest"]
    index = json.loads(files["index.json"])
    assert [d["annotations"] for d in index["manifests"]] == [
        {"io.containerd.image.name": "docker.io/library/app:1", "org.opencontainers.image.ref.name": "1"},
        {"io.containerd.image.name": "example.com/x/y:2", "org.opencontainers.image.ref.name": "2"}]
    assert all(d["digest"] == manifest_digest for d in index["manifests"])
    assert json.loads(files["repositories"]) == {"app": {"1": diff[7:]}, "example.com/x/y": {"2": diff[7:]}}
    m = json.loads(blobs[manifest_digest])
    assert list(m) == ["schemaVersion", "mediaType", "config", "layers"]
    assert m["layers"] == [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff,
                            "size": len(layer)}]
    assert af.go_json({"a": "<&>"}) == b'{"a":"\\u003c\\u0026\\u003e"}'


def test_entry_names() -> None:
    assert af.entry_name("./blobs/sha256/x") == "blobs/sha256/x"
    assert af.entry_name("/manifest.json") == "manifest.json"
    for bad in ("../x", "a/../../x", "a/../b"):
        with pytest.raises(af.ArchiveError, match="outside of the archive"):
            af.entry_name(bad)
    assert af.resolve_link("a/layer.tar", "../b/layer.tar") == "b/layer.tar"
    assert af.resolve_link("a/layer.tar", "../../../../etc/passwd") == "etc/passwd"  # clamped to the root
    assert af.resolve_link("a/x", "/b/y") == "b/y"


def _docker_archive(layers: list[bytes], tags: list[str] | None = None) -> tuple[bytes, str]:
    diffs = [_sha(layer) for layer in layers]
    cfg = _config(diffs)
    files = {af.blob_path(_sha(layer)): layer for layer in layers}
    files[af.blob_path(_sha(cfg))] = cfg
    files["manifest.json"] = json.dumps([{"Config": af.blob_path(_sha(cfg)), "RepoTags": tags,
                                          "Layers": [af.blob_path(d) for d in diffs]}]).encode()
    return _tar(files), _sha(cfg)


def test_docker_archive_plan_and_its_checks(tmp_path: Path) -> None:
    layers = [_layer("a", b"1"), _layer("b", b"2")]
    data, image_id = _docker_archive(layers, ["app:1"])
    [plan] = _read(data, tmp_path / "ok")
    assert plan.image_id == image_id and [str(r) for r in plan.refs] == ["docker.io/library/app:1"]
    assert [e.digest for e in plan.layers] == [_sha(x) for x in layers]

    # a layer that is not what the config says
    diffs = [_sha(x) for x in layers]
    cfg = _config(diffs)
    files = {af.blob_path(diffs[0]): layers[0], af.blob_path(diffs[1]): _layer("b", b"X"),
             af.blob_path(_sha(cfg)): cfg,
             "manifest.json": json.dumps([{"Config": af.blob_path(_sha(cfg)), "RepoTags": None,
                                           "Layers": [af.blob_path(d) for d in diffs]}]).encode()}
    with pytest.raises(af.ArchiveError, match="invalid diffID for layer 1"):
        _read(_tar(files), tmp_path / "bad")
    # a config that is not what its name says
    files[af.blob_path(diffs[1])] = layers[1]
    files["manifest.json"] = json.dumps([{"Config": af.blob_path(_sha(b"other")), "Layers": []}]).encode()
    files[af.blob_path(_sha(b"other"))] = cfg
    with pytest.raises(af.ArchiveError, match="hashes to"):
        _read(_tar(files), tmp_path / "cfg")
    with pytest.raises(af.ArchiveError, match="does not contain a manifest.json"):
        _read(_tar({"x": b"y"}), tmp_path / "none")
    with pytest.raises(af.ArchiveError, match="manifest cannot be null"):
        _read(_tar({"manifest.json": b"null"}), tmp_path / "null")
    with pytest.raises(af.ArchiveError, match="invalid tag"):
        _read(_docker_archive(layers, ["app@sha256:" + "0" * 64])[0], tmp_path / "tag")


def test_cut_archives_are_errors(tmp_path: Path) -> None:
    data, _ = _docker_archive([_layer("a", b"1" * 5000)], ["app:1"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        last = tf.getmember("manifest.json")
    # in a header, in a layer's data, in the last member's data and in its header
    for i, cut in enumerate((700, 1100, last.offset_data + 5, last.offset + 100)):
        with pytest.raises(af.ArchiveError, match="unexpected EOF|not a tar|invalid tar header"):
            _read(data[:cut], tmp_path / str(i))


def test_legacy_layout_with_symlinked_layers(tmp_path: Path) -> None:
    layer = _layer("a", b"1")
    diff = _sha(layer)
    cfg = _config([diff, diff])
    files = {"1111/layer.tar": layer, _sha(cfg)[7:] + ".json": cfg,
             "manifest.json": json.dumps([{"Config": _sha(cfg)[7:] + ".json", "RepoTags": ["old:1"],
                                           "Layers": ["1111/layer.tar", "2222/layer.tar"]}]).encode()}
    [plan] = _read(_tar(files, {"2222/layer.tar": "../1111/layer.tar"}), tmp_path)
    assert plan.layers[0] is plan.layers[1] and plan.image_id == _sha(cfg)


def test_oci_nested_index_picks_the_host_platform(tmp_path: Path) -> None:
    layer = _layer("a", b"1")
    diff = _sha(layer)
    files: dict[str, bytes] = {af.blob_path(diff): layer}
    manifests: list[dict[str, Any]] = []
    ids = {}
    for arch in ("s390x", host_platform().architecture):
        cfg = _config([diff], arch)
        ids[arch] = _sha(cfg)
        files[af.blob_path(_sha(cfg))] = cfg
        m = json.dumps({"schemaVersion": 2, "mediaType": af.OCI_MANIFEST,
                        "config": {"mediaType": af.OCI_CONFIG, "digest": _sha(cfg), "size": len(cfg)},
                        "layers": [{"mediaType": af.OCI_LAYER_TAR, "digest": diff, "size": len(layer)}]}).encode()
        files[af.blob_path(_sha(m))] = m
        manifests.append({"mediaType": af.OCI_MANIFEST, "digest": _sha(m), "size": len(m),
                          "platform": {"os": "linux", "architecture": arch}})
    inner = json.dumps({"schemaVersion": 2, "mediaType": af.OCI_INDEX, "manifests": manifests}).encode()
    files[af.blob_path(_sha(inner))] = inner
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": af.OCI_INDEX, "digest": _sha(inner), "size": len(inner),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:3"}}]}).encode()
    files["oci-layout"] = af.OCI_LAYOUT
    [plan] = _read(_tar(files), tmp_path / "host")
    assert plan.image_id == ids[host_platform().architecture]
    assert [r.familiar for r in plan.refs] == ["multi:3"]
    # `platform` (API 1.48+) picks another one
    (tmp_path / "s390x").mkdir()
    src = io.BytesIO(_tar(files))
    spool = read_archive(src.read, tmp_path / "s390x", _Unpacker(None, lambda *a, **k: "", "delete", 0, set()))
    [plan] = plan_images(spool, [Platform(os="linux", architecture="s390x")])
    assert plan.image_id == ids["s390x"]
    with pytest.raises(NotFound, match="no image for platform"):
        plan_images(spool, [Platform(os="linux", architecture="riscv64")])
