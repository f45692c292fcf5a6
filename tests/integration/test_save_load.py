"""`docker save` / `docker load` through a real asyncdock daemon: the docker CLI 28, docker-py,
skopeo's OCI layouts, cut and corrupt archives (nothing half-loaded), path traversal."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import imagebuild
from tests.support.daemon import Daemon
from tests.support.leaks import chain_ids, snapshot_leftovers


def _image_id(d: Daemon, name: str) -> str:
    return str(d.docker("image", "inspect", "--format", "{{.Id}}", name).stdout.strip())


def _rootfs(d: Daemon, name: str) -> list[str]:
    return list(json.loads(d.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", name).stdout))


def _images(d: Daemon) -> list[tuple[str, tuple[str, ...]]]:
    status, body = d.request("GET", "/images/json?all=1")
    assert status == 200
    return sorted((i["Id"], tuple(sorted(i["RepoTags"] or []))) for i in json.loads(body))


def _layer_chains(d: Daemon) -> set[str]:
    status, body = d.request("GET", "/images/json?all=1")
    out: set[str] = set()
    for img in json.loads(body):
        status, raw = d.request("GET", f"/images/{img['Id']}/json")
        out.update(chain_ids(json.loads(raw)["RootFS"]["Layers"]))
    return out


def _blobs(d: Daemon) -> set[str]:
    return {p.name for p in (d.data_root / "content" / "blobs" / "sha256").iterdir()}


def _assert_nothing_left(d: Daemon, before_images: list[Any], before_blobs: set[str]) -> None:
    assert _images(d) == before_images
    assert snapshot_leftovers(d, _layer_chains(d), set()) == []
    assert _blobs(d) == before_blobs
    tmp = d.data_root / "content" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}


def _read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def _events(d: Daemon, since: float, action: str) -> list[dict[str, Any]]:
    out = d.docker("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--filter",
                   "type=image", "--filter", f"event={action}", "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_save_rmi_load_run_gives_the_same_image(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("pull", "busybox")
    daemon.docker("tag", "busybox", "app:1")
    image_id = _image_id(daemon, "app:1")
    out = tmp_path / "out.tar"
    since = time.time()
    daemon.docker("save", "app:1", "-o", str(out))
    data = out.read_bytes()

    # Docker 25+'s layout: OCI index + blobs, and the docker-archive files beside them.
    members = _members(data)
    assert {"oci-layout", "index.json", "manifest.json", "repositories", "blobs", "blobs/sha256"} <= set(members)
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    [item] = json.loads(_read(data, "manifest.json"))
    assert item["Config"] == "blobs/sha256/" + image_id.split(":")[1]
    assert item["RepoTags"] == ["app:1"]
    config = json.loads(_read(data, item["Config"]))
    diff_ids = config["rootfs"]["diff_ids"]
    assert item["Layers"] == ["blobs/sha256/" + d.split(":")[1] for d in diff_ids]
    for path, diff_id in zip(item["Layers"], diff_ids):
        layer = _read(data, path)
        assert "sha256:" + hashlib.sha256(layer).hexdigest() == diff_id  # written uncompressed
        assert item["LayerSources"][diff_id] == {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                                 "size": len(layer), "digest": diff_id}
    index = json.loads(_read(data, "index.json"))
    [desc] = index["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/library/app:1",
                                   "org.opencontainers.image.ref.name": "1"}
    manifest = json.loads(_read(data, "blobs/sha256/" + desc["digest"].split(":")[1]))
    assert manifest["config"]["digest"] == image_id
    assert [x["digest"] for x in manifest["layers"]] == diff_ids
    assert json.loads(_read(data, "repositories")) == {"app": {"1": diff_ids[-1].split(":")[1]}}
    assert _read(data, "oci-layout") == b'{"imageLayoutVersion": "1.0.0"}'
    # The same image gives the same bytes.
    again = daemon.docker("save", "app:1", text=False).stdout
    assert again == data
    assert [e["Actor"]["ID"] for e in _events(daemon, since, "save")] == [image_id, image_id]

    daemon.docker("rmi", "app:1", "busybox")
    assert image_id not in {i for i, _ in _images(daemon)}
    since = time.time()
    loaded = daemon.docker("load", "-i", str(out))
    assert "Loaded image: app:1" in loaded.stdout
    assert _image_id(daemon, "app:1") == image_id
    assert daemon.docker("run", "--rm", "app:1", "echo", "hi").stdout == "hi\n"
    [ev] = _events(daemon, since, "load")
    assert ev["Actor"]["ID"] == image_id
    # Stored uncompressed: a second save sends the loaded blobs as they are, byte for byte.
    assert daemon.docker("save", "app:1", text=False).stdout == data
    # Loading what is there again changes nothing and says so the same way.
    assert "Loaded image: app:1" in daemon.docker("load", "-i", str(out)).stdout
    assert _images(daemon).count((image_id, ("app:1",))) == 1


def test_save_two_images_and_a_gzip_pipe(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("pull", "busybox")
    daemon.docker("pull", "layers")
    ids = {n: _image_id(daemon, n) for n in ("busybox", "layers")}
    out = tmp_path / "two.tar"
    daemon.docker("save", "busybox", "layers:latest", "-o", str(out))
    items = json.loads(_read(out.read_bytes(), "manifest.json"))
    assert sorted(i["RepoTags"][0] for i in items) == ["busybox:latest", "layers:latest"]
    daemon.docker("rmi", "busybox", "layers")
    env = {**os.environ, **daemon.env}
    gz = tmp_path / "two.tar.gz"
    gz.write_bytes(gzip.compress(out.read_bytes(), 1))
    proc = subprocess.run(f"gzip -dc {gz} | gzip -1 | {daemon.docker_cli} load", shell=True, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Loaded image: busybox:latest" in proc.stdout and "Loaded image: layers:latest" in proc.stdout
    assert {n: _image_id(daemon, n) for n in ids} == ids
    # The real pipe: save | gzip | load, into the same daemon after an rmi.
    daemon.docker("rmi", "layers")
    proc = subprocess.run(f"{daemon.docker_cli} save busybox | gzip | {daemon.docker_cli} load", shell=True,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("Loaded image: busybox:latest")


def test_save_names_as_docker_resolves_them(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("pull", "busybox")
    daemon.docker("tag", "busybox", "busybox:other")
    image_id = _image_id(daemon, "busybox")
    # A bare repository name saves every tag of it.
    data = daemon.docker("save", "busybox", text=False).stdout
    [item] = json.loads(_read(data, "manifest.json"))
    assert sorted(item["RepoTags"]) == ["busybox:latest", "busybox:other"]
    # An ID (or its prefix) saves the image without a tag.
    for name in (image_id, image_id.split(":")[1][:12]):
        data = daemon.docker("save", name, text=False).stdout
        [item] = json.loads(_read(data, "manifest.json"))
        assert item["RepoTags"] is None
        [desc] = json.loads(_read(data, "index.json"))["manifests"]
        assert "annotations" not in desc
    status, body = daemon.request("GET", "/images/nope:1/get")
    assert status == 404 and json.loads(body) == {"message": "No such image: nope:1"}
    status, body = daemon.request("GET", "/images/get?names=busybox&names=nope")
    assert status == 404 and "No such image: nope" in json.loads(body)["message"]
    proc = daemon.docker("save", "nope", "-o", str(tmp_path / "x.tar"), check=False)
    assert proc.returncode != 0 and "No such image: nope" in proc.stderr
    # `--platform` (API 1.48+): an image of another platform is not there to save or load
    proc = daemon.docker("save", "--platform", "linux/s390x", "busybox", "-o", str(tmp_path / "x.tar"), check=False)
    assert proc.returncode != 0 and "no suitable export target found for platform [linux/s390x]" in proc.stderr
    proc = daemon.docker("load", "--platform", "linux/s390x", input=data, check=False)
    assert proc.returncode != 0
    assert "no images providing the requested platform(s) found: [linux/s390x]" in proc.stderr.decode()
    # An untagged image loads as its ID.
    daemon.docker("rmi", "busybox", "busybox:other")
    status, body = daemon.request("POST", "/images/load?quiet=0", body=data,
                                  headers={"Content-Type": "application/x-tar"})
    assert status == 200
    msgs = [json.loads(line) for line in body.split(b"\r\n") if line]
    assert msgs[-1] == {"stream": f"Loaded image ID: {image_id}\n"}
    assert [m["status"] for m in msgs[:-1]] == ["Loading layer"]
    assert msgs[0]["progressDetail"]["current"] == msgs[0]["progressDetail"]["total"] > 0


def test_load_oci_layouts_made_by_skopeo(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("pull", "layers")
    layers = _rootfs(daemon, "layers")
    src = tmp_path / "src.tar"
    daemon.docker("save", "layers", "-o", str(src))
    daemon.docker("rmi", "layers")
    env = imagebuild.skopeo_env()
    oci_archive = tmp_path / "oci.tar"
    subprocess.run(["skopeo", "copy", f"docker-archive:{src}", f"oci-archive:{oci_archive}:mine:2"], env=env,
                   check=True, capture_output=True, timeout=120)
    loaded = daemon.docker("load", "-i", str(oci_archive)).stdout
    assert "Loaded image: mine:2" in loaded
    # skopeo re-encodes a Docker config as an OCI one (another ID); the layers are the same.
    assert _rootfs(daemon, "mine:2") == layers
    daemon.docker("rmi", "mine:2")
    # An oci: directory (compressed layers this time), tarred by hand, with a full name.
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "--dest-compress", f"docker-archive:{src}",
                    f"oci:{layout}:example.com/team/app:7"], env=env, check=True, capture_output=True, timeout=120)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for p in sorted(layout.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    loaded = daemon.docker("load", input=buf.getvalue()).stdout
    assert "Loaded image: example.com/team/app:7" in loaded.decode()
    assert _rootfs(daemon, "example.com/team/app:7") == layers
    assert daemon.docker("run", "--rm", "example.com/team/app:7", "true").returncode == 0


def test_docker_py_save_and_load(daemon: Daemon) -> None:
    daemon.docker("pull", "busybox")
    client = daemon.client()
    img = client.images.get("busybox")
    data = b"".join(img.save(named=True))
    assert "manifest.json" in _members(data)
    client.images.remove("busybox")
    [loaded] = client.images.load(data)
    assert loaded.id == img.id and loaded.tags == ["busybox:latest"]


def _cut_points(size: int) -> list[int]:
    return [0, 100, 512, size // 5, size // 2, size - 4096, size - 1100, size - 600]


def test_cut_or_corrupt_archives_load_nothing(daemon: Daemon) -> None:
    daemon.docker("pull", "layers")
    data = daemon.docker("save", "layers", text=False).stdout
    daemon.docker("rmi", "layers")
    daemon.docker("pull", "busybox")  # something there, which must stay as it is
    before, blobs = _images(daemon), _blobs(daemon)
    for cut in _cut_points(len(data)):
        proc = daemon.docker("load", input=data[:cut], check=False)
        assert proc.returncode != 0, f"a cut at {cut} of {len(data)} loaded"
        assert proc.stderr.decode().strip(), cut
        _assert_nothing_left(daemon, before, blobs)
    # A layer whose bytes are not what the config says (names kept, one byte changed).
    item = json.loads(_read(data, "manifest.json"))[0]
    victim = item["Layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
            for m in tf.getmembers():
                f = tf.extractfile(m) if m.isfile() else None
                payload = f.read() if f is not None else None
                if m.name == victim and payload is not None:
                    # a byte of the first member's name: still a valid tar, another digest
                    payload = payload[:1] + bytes([payload[1] ^ 1]) + payload[2:]
                dst.addfile(m, io.BytesIO(payload) if payload is not None else None)
    proc = daemon.docker("load", input=out.getvalue(), check=False)
    assert proc.returncode != 0
    assert "invalid diffID for layer" in proc.stderr.decode()
    _assert_nothing_left(daemon, before, blobs)
    # Not an archive at all.
    proc = daemon.docker("load", input=b"hello" * 1000, check=False)
    assert proc.returncode != 0 and "invalid archive" in proc.stderr.decode()
    _assert_nothing_left(daemon, before, blobs)


def test_a_path_traversal_entry_is_refused(daemon: Daemon) -> None:
    before = _images(daemon)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../../escaped")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    proc = daemon.docker("load", input=buf.getvalue(), check=False)
    assert proc.returncode != 0
    assert "is outside of the archive" in proc.stderr.decode()
    assert not (daemon.data_root / "content" / "escaped").exists()
    assert _images(daemon) == before


@pytest.mark.parametrize("compress", ["xz", "bzip2", "zstd"])
def test_load_other_compressions(daemon: Daemon, compress: str, tmp_path: Path) -> None:
    daemon.docker("pull", "busybox")
    image_id = _image_id(daemon, "busybox")
    tar = tmp_path / "b.tar"
    daemon.docker("save", "busybox", "-o", str(tar))
    daemon.docker("rmi", "busybox")
    packed = subprocess.run([compress, "-c", str(tar)], check=True, capture_output=True).stdout
    assert "Loaded image: busybox:latest" in daemon.docker("load", input=packed).stdout.decode()
    assert _image_id(daemon, "busybox") == image_id


def test_load_the_pre_25_layout(daemon: Daemon) -> None:
    """Docker 1.10-24: `<hex>.json` configs, `<id>/layer.tar` layers (a layer shared with an
    earlier image is a symlink to its first copy), manifest.json naming them."""
    daemon.docker("pull", "layers")
    image_id = _image_id(daemon, "layers")
    data = daemon.docker("save", "layers", text=False).stdout
    item = json.loads(_read(data, "manifest.json"))[0]
    out = io.BytesIO()
    layers: list[str] = []
    with tarfile.open(fileobj=out, mode="w") as dst:
        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            dst.addfile(info, io.BytesIO(payload))
        for i, path in enumerate(item["Layers"]):
            layer_id = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
            layers.append(f"{layer_id}/layer.tar")
            if i == 0:
                add(layers[-1], _read(data, path))
            else:
                add(layers[-1], _read(data, path)) if path != item["Layers"][0] else None
        # the last layer again, as Docker wrote duplicates: a symlink to the first copy
        link = tarfile.TarInfo("dup/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../" + layers[0]
        dst.addfile(link)
        add(image_id.split(":")[1] + ".json", _read(data, item["Config"]))
        manifest = [{"Config": image_id.split(":")[1] + ".json", "RepoTags": ["old:layout"],
                     "Layers": ["dup/layer.tar"] + layers[1:]}]
        add("manifest.json", json.dumps(manifest).encode())
    daemon.docker("rmi", "layers")
    assert "Loaded image: old:layout" in daemon.docker("load", input=out.getvalue()).stdout.decode()
    assert _image_id(daemon, "old:layout") == image_id


def test_python_client_save_and_load(daemon: Daemon) -> None:
    import asyncio

    import asyncdock

    daemon.docker("pull", "busybox")
    daemon.docker("pull", "layers")
    ids = {n: _image_id(daemon, n) for n in ("busybox:latest", "layers:latest")}

    async def run() -> tuple[list[str], list[str]]:
        async with asyncdock.Client(f"unix://{daemon.socket}") as client:
            one = b"".join([c async for c in client.images.save("busybox")])
            both = [c async for c in client.images.save(["busybox", "layers"])]
            for name in ids:
                await client.images.remove(name)

            async def chunks() -> Any:  # streamed up in small pieces, gzipped on the way
                packed = gzip.compress(b"".join(both), 1)
                for i in range(0, len(packed), 65536):
                    yield packed[i:i + 65536]
            loaded = await client.images.load(chunks())
            again = await client.images.load(one)
            with pytest.raises(asyncdock.APIError) as err:
                await client.images.load(one[: len(one) // 2])
            assert "unexpected EOF" in str(err.value)
            return loaded, again

    loaded, again = asyncio.run(run())
    assert sorted(loaded) == sorted(ids) and again == ["busybox:latest"]
    assert {n: _image_id(daemon, n) for n in ids} == ids


@pytest.mark.parametrize("driver", ["overlayfs", "copy"])
def test_loaded_layers_apply_whiteouts_on_both_snapshotters(daemon_factory: Any, driver: str) -> None:
    """overlay unpacks every layer as it streams (then rebases it on its parent at commit); copy
    unpacks each on a copy of its parent after the archive is read. Either way the loaded image's
    tree is the pulled one's, whiteouts and opaque directories included."""
    d = daemon_factory({"storage-driver": driver})
    d.docker("pull", "layers")
    image_id = _image_id(d, "layers")
    data = d.docker("save", "layers", text=False).stdout
    d.docker("rmi", "layers")
    assert "Loaded image: layers:latest" in d.docker("load", input=data).stdout.decode()
    assert _image_id(d, "layers") == image_id
    script = []
    for path, want in imagebuild.LAYERS_EXPECTED.items():
        if want is None:
            script.append(f"test ! -e /{path} || echo present: {path}")
        elif want:
            script.append(f"test \"$(cat /{path})\" = \"{want.decode().strip()}\" || echo wrong: {path}")
        else:
            script.append(f"test -e /{path} || echo missing: {path}")
    out = d.docker("run", "--rm", "layers", "sh", "-c", "; ".join(script)).stdout
    assert out == ""


def test_two_loads_of_one_archive_at_once(daemon: Daemon, tmp_path: Path) -> None:
    daemon.docker("pull", "layers")
    image_id = _image_id(daemon, "layers")
    archive = tmp_path / "a.tar"
    daemon.docker("save", "layers", "-o", str(archive))
    daemon.docker("rmi", "layers")
    env = {**os.environ, **daemon.env}
    procs = [subprocess.Popen([daemon.docker_cli, "load", "-q", "-i", str(archive)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all(b"Loaded image: layers:latest" in out for out, _ in outs)
    assert _image_id(daemon, "layers") == image_id
    assert snapshot_leftovers(daemon, _layer_chains(daemon), set()) == []


def test_a_client_that_hangs_up_mid_archive_leaves_nothing(daemon: Daemon) -> None:
    import socket

    daemon.docker("pull", "layers")
    data = daemon.docker("save", "layers", text=False).stdout
    daemon.docker("rmi", "layers")
    before, blobs = _images(daemon), _blobs(daemon)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket))
    sock.sendall(b"POST /v1.44/images/load?quiet=0 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-tar\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data[: len(data) * 2 // 3])
    tmp = daemon.data_root / "content" / "tmp"
    deadline = time.monotonic() + 30
    while not any(d.name.startswith("load-") and any(d.iterdir()) for d in tmp.iterdir()):
        assert time.monotonic() < deadline, "the load never started spooling"
        time.sleep(0.02)  # waiting for the daemon to reach a state: polled with a deadline
    sock.close()
    while True:  # the daemon notices the hang-up and cleans up: wait for that, with a deadline
        leftovers = snapshot_leftovers(daemon, _layer_chains(daemon), set())
        spooled = list(tmp.iterdir()) if tmp.exists() else []
        if not leftovers and not spooled:
            break
        assert time.monotonic() < deadline, (leftovers, spooled)
        time.sleep(0.05)
    _assert_nothing_left(daemon, before, blobs)


def test_a_layer_that_escapes_is_refused_by_the_unpacker(daemon: Daemon) -> None:
    """The archive is well formed and every digest matches; the layer itself writes `../`: the
    engine's unpacker refuses it (while it streams, and again when asked to commit it)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name in ("ok", "../../../../escaped-by-load"):
            info = tarfile.TarInfo(name)
            info.size = 2 << 10
            tf.addfile(info, io.BytesIO(b"x" * info.size))
    raw = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    image_id = "sha256:" + hashlib.sha256(config).hexdigest()
    files = {f"blobs/sha256/{diff_id[7:]}": raw, f"blobs/sha256/{image_id[7:]}": config,
             "manifest.json": json.dumps([{"Config": f"blobs/sha256/{image_id[7:]}", "RepoTags": ["evil:1"],
                                           "Layers": [f"blobs/sha256/{diff_id[7:]}"]}]).encode()}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    before, blobs = _images(daemon), _blobs(daemon)
    proc = daemon.docker("load", input=out.getvalue(), check=False)
    assert proc.returncode != 0
    assert "failed to register layer" in proc.stderr.decode() and "'..'" in proc.stderr.decode()
    assert not list(daemon.root.rglob("escaped-by-load"))
    _assert_nothing_left(daemon, before, blobs)
