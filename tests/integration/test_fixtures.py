"""The test fixtures themselves: images are what they claim to be, registries and their auth
variants work with a real client (skopeo), the fault proxy injects what it says, and the daemon
teardown really cleans up runtime containers, processes and mounts."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import imagebuild as ib
from tests.support.daemon import Daemon, cleanup_roots, mounts_under
from tests.support.faultproxy import FaultProxy
from tests.support.registry import Registry

SKOPEO_TIMEOUT = 120
OCI_ACCEPT = ", ".join([
    ib.MT_OCI_MANIFEST, ib.MT_OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=SKOPEO_TIMEOUT, env=ib.skopeo_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def inspect(ref: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return skopeo("inspect", "--tls-verify=false", *extra, f"docker://{ref}", check=check)


def http_get(host: str, path: str, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    h, _, port = host.partition(":")
    conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def manifest_of(image: ib.BuiltImage, tag: str = "latest") -> dict[str, Any]:
    return json.loads(read_blob(image.layout, image.tag(tag).descriptor.digest))


def config_of(image: ib.BuiltImage, tag: str = "latest") -> dict[str, Any]:
    return json.loads(read_blob(image.layout, image.tag(tag).config_digest))


def layer_tar(image: ib.BuiltImage, digest: str) -> tarfile.TarFile:
    blob = read_blob(image.layout, digest)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        data = zstandard.ZstdDecompressor().decompress(blob)
    else:
        data = gzip.decompress(blob)
    return tarfile.open(fileobj=io.BytesIO(data))


# -- the images -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["busybox", "layers", "hardlinks", "deep120", "deepdirs", "multiarch", "zstd",
                                  "configured"])
def test_builds_are_deterministic(name: str, test_images: dict[str, ib.BuiltImage], tmp_path: Path) -> None:
    fresh = ib.build_layout(name, tmp_path / "layout")
    assert {t: r.descriptor.digest for t, r in fresh.tags.items()} == \
        {t: r.descriptor.digest for t, r in test_images[name].tags.items()}


def test_layer_tars_are_sorted_with_fixed_metadata(test_images: dict[str, ib.BuiltImage]) -> None:
    image = test_images["layers"]
    for digest in image.tag().layers:
        members = layer_tar(image, digest).getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {m.mtime for m in members} == {ib.FIXED_MTIME}
        assert all(m.uname == "" and m.gname == "" for m in members)


def test_base_layer_content(test_images: dict[str, ib.BuiltImage]) -> None:
    image = test_images["busybox"]
    tf = layer_tar(image, image.tag().layers[0])
    members = {m.name: m for m in tf.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    for d in ("proc", "sys", "dev", "root", "home", "var"):
        assert members[d].isdir(), d
    passwd = tf.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert "nobody:x:65534:65534:" in passwd and "app:x:1000:1000:" in passwd
    config = config_of(image)
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["config"] == {"Env": [ib.DEFAULT_PATH], "Cmd": ["sh"]}
    assert config["rootfs"]["diff_ids"] == image.tag().diff_ids
    assert len(config["history"]) == 1


def test_image_shapes(test_images: dict[str, ib.BuiltImage]) -> None:
    assert len(test_images["busybox"].tag().layers) == 1
    assert len(test_images["layers"].tag().layers) == 4
    assert len(test_images["deep120"].tag().layers) == ib.DEEP_LAYERS == 120

    deep = test_images["deepdirs"]
    names = [m.name for m in layer_tar(deep, deep.tag().layers[1]).getmembers()]
    assert names[-1] == "deep/" + "/".join(["d"] * ib.DEEP_DIRS) + "/leaf"
    assert len(names) == ib.DEEP_DIRS + 2  # deep, each d, the leaf

    many = test_images["manyfiles"]
    files = [m for m in layer_tar(many, many.tag().layers[1]).getmembers() if m.isfile()]
    assert len(files) == ib.MANYFILES_COUNT == 5000

    bench = manifest_of(test_images["bench"])
    assert len(bench["layers"]) == 8
    assert sum(layer["size"] for layer in bench["layers"]) > 100 * 10**6

    zstd = manifest_of(test_images["zstd"])
    assert {layer["mediaType"] for layer in zstd["layers"]} == {ib.MT_LAYER_ZSTD}
    # Same uncompressed base as busybox: a store may share the snapshot, not the blob.
    assert test_images["zstd"].tag().diff_ids[0] == test_images["busybox"].tag().diff_ids[0]
    assert test_images["zstd"].tag().layers[0] != test_images["busybox"].tag().layers[0]
    hello = layer_tar(test_images["zstd"], test_images["zstd"].tag().layers[1]).extractfile("zstd/hello.txt")
    assert hello is not None and hello.read() == b"hello from a zstd layer\n"

    index = json.loads(read_blob(test_images["multiarch"].layout, test_images["multiarch"].digest))
    assert index["mediaType"] == ib.MT_OCI_INDEX
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64", "unknown"]

    configured = test_images["configured"]
    assert set(configured.tags) == set(ib.configured_variants())
    cfg = config_of(configured)["config"]
    assert cfg["Healthcheck"]["Test"][0] == "CMD-SHELL"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "9999/udp": {}}
    assert cfg["Volumes"] == {"/data": {}} and cfg["User"] == "app" and cfg["WorkingDir"] == "/app"
    assert config_of(configured, "cmd-only")["config"].get("Entrypoint") is None


@pytest.fixture
def unpack(tmp_path: Path) -> Callable[[ib.BuiltImage], Path]:
    def do(image: ib.BuiltImage) -> Path:
        bundle = tmp_path / image.name
        subprocess.run(["umoci", "unpack", "--image", f"{image.layout}:latest", str(bundle)],
                       check=True, capture_output=True, timeout=120)
        return bundle / "rootfs"
    return do


def test_unpacked_busybox_runs(test_images: dict[str, ib.BuiltImage], unpack: Callable[[ib.BuiltImage], Path]) -> None:
    rootfs = unpack(test_images["busybox"])
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "echo hi; id app; ls /usr/bin/env"],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    assert out.splitlines() == ["hi", "uid=1000(app) gid=1000(app) groups=1000(app),100(users)", "/usr/bin/env"]


def test_unpacked_layers_apply_whiteouts(test_images: dict[str, ib.BuiltImage], unpack: Callable[[ib.BuiltImage], Path]) -> None:
    rootfs = unpack(test_images["layers"])
    for path, content in ib.LAYERS_EXPECTED.items():
        p = rootfs / path
        if content is None:
            assert not os.path.lexists(p), path
        else:
            assert p.exists(), path
            if content:
                assert p.read_bytes() == content, path
    assert sorted(os.listdir(rootfs / "opaque")) == ["new"]


def test_unpacked_hardlinks_share_inodes(test_images: dict[str, ib.BuiltImage], unpack: Callable[[ib.BuiltImage], Path]) -> None:
    rootfs = unpack(test_images["hardlinks"])
    for group in ib.HARDLINK_GROUPS:
        stats = [os.stat(rootfs / p) for p in group]
        assert len({s.st_ino for s in stats}) == 1, group
        assert all(s.st_nlink == len(group) for s in stats), group


# -- registries -------------------------------------------------------------------------------

def test_registry_serves_every_image(registry: Registry) -> None:
    for name, image in registry.images.items():
        for tag, ref in image.tags.items():
            raw = inspect(registry.ref(name, tag), "--raw").stdout.encode()
            assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == ref.descriptor.digest, (name, tag)
    arm = json.loads(inspect(registry.ref("multiarch"), "--override-arch", "arm64", "--override-variant", "v8").stdout)
    assert arm["Architecture"] == "arm64"
    v2s2 = json.loads(inspect(registry.ref("busybox", "v2s2"), "--raw").stdout)
    assert v2s2["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_auth_registry(auth_registry: Registry) -> None:
    status, headers, _ = http_get(auth_registry.host, "/v2/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic ")
    ref = auth_registry.ref("busybox")
    denied = inspect(ref, check=False)
    assert denied.returncode != 0 and "authentication required" in denied.stderr
    wrong = inspect(ref, "--creds", f"{auth_registry.username}:wrong", check=False)
    assert wrong.returncode != 0
    ok = json.loads(inspect(ref, "--creds", auth_registry.creds or "").stdout)
    assert ok["Digest"] == auth_registry.images["busybox"].digest


def test_token_registry(token_registry: Registry) -> None:
    ts = token_registry.token_server
    assert ts is not None
    ts.reset_counters()
    status, headers, _ = http_get(token_registry.host, "/v2/")
    challenge = headers["www-authenticate"]
    assert status == 401 and challenge.startswith("Bearer ")
    assert f'realm="{ts.realm}"' in challenge and f'service="{ts.service}"' in challenge

    # Anonymous pull of a public repo works, a private one does not, a user sees both.
    public, private = token_registry.ref("busybox"), f"{token_registry.host}/private/busybox:latest"
    assert json.loads(inspect(public).stdout)["Digest"] == token_registry.images["busybox"].digest
    assert ts.count(account=None, status=200) >= 1
    denied = inspect(private, check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr
    assert json.loads(inspect(private, "--creds", token_registry.creds or "").stdout)["Digest"]
    assert ts.count(account=token_registry.username, status=200) >= 1
    # A wrong password is refused by the token server itself.
    wrong = inspect(private, "--creds", f"{token_registry.username}:wrong", check=False)
    assert wrong.returncode != 0 and ts.count(status=401) >= 1

    # Anonymous push: the token comes back without "push" and the registry refuses.
    image = token_registry.images["busybox"]
    with pytest.raises(ib.PushError):
        ib.push(image.layout, "library/anon-push:latest", token_registry.host)


def test_token_server_protocol(token_registry: Registry) -> None:
    ts = token_registry.token_server
    assert ts is not None
    user, password = token_registry.username or "", token_registry.password or ""
    q = urllib.parse.urlencode([("service", ts.service), ("scope", "repository:private/busybox:pull,push")])
    # Anonymous: an entry for the repo with no actions (private), not an error.
    status, _, body = http_get(f"127.0.0.1:{ts.port}", f"/token?{q}")
    assert status == 200
    claims = _claims(json.loads(body)["token"])
    assert claims["access"] == [{"type": "repository", "name": "private/busybox", "actions": []}]
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer

    basic = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    status, _, body = http_get(f"127.0.0.1:{ts.port}", f"/token?{q}&offline_token=true", basic)
    reply = json.loads(body)
    assert status == 200 and reply["token"] == reply["access_token"] and reply["expires_in"] == ts.expires_in
    assert _claims(reply["token"])["access"][0]["actions"] == ["pull", "push"]
    assert reply["refresh_token"]

    # The OAuth2 POST flow (containerd's), then the token used against the registry.
    form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": reply["refresh_token"],
                                   "service": ts.service, "scope": "repository:private/busybox:pull",
                                   "client_id": "asyncdock-tests"})
    conn = http.client.HTTPConnection("127.0.0.1", ts.port, timeout=10)
    conn.request("POST", "/token", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    resp = conn.getresponse()
    posted = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and posted["access_token"]
    status, _, _ = http_get(token_registry.host, "/v2/private/busybox/manifests/latest",
                            {"Authorization": f"Bearer {posted['access_token']}", "Accept": OCI_ACCEPT})
    assert status == 200


def _claims(jwt: str) -> dict[str, Any]:
    header_b64, claims_b64, _sig = jwt.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert header["alg"] == "RS256" and header["x5c"]
    return json.loads(base64.urlsafe_b64decode(claims_b64 + "=" * (-len(claims_b64) % 4)))


# -- the fault proxy ----------------------------------------------------------------------------

@pytest.fixture
def bench_blob(registry: Registry) -> tuple[str, int]:
    """(digest, size) of a ~29 MB bench layer: big enough to be cut or stalled mid-way."""
    manifest = json.loads(read_blob(registry.images["bench"].layout, registry.images["bench"].digest))
    layer = manifest["layers"][1]
    return layer["digest"], layer["size"]


def _blob_path(digest: str) -> str:
    return f"/v2/library/bench/blobs/{digest}"


def _fetch(proxy: FaultProxy, digest: str, headers: dict[str, str] | None = None,
           timeout: float = 30) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, complete): complete is False when the connection ended early."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request("GET", _blob_path(digest), headers=headers or {})
        resp = conn.getresponse()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        try:
            return resp.status, hdrs, resp.read(), True
        except http.client.IncompleteRead as e:
            return resp.status, hdrs, e.partial, False
    finally:
        conn.close()


def test_proxy_passthrough_pull_and_push(faulty_registry: Callable[..., FaultProxy], registry: Registry) -> None:
    proxy = faulty_registry()
    assert json.loads(inspect(proxy.ref("busybox")).stdout)["Digest"] == registry.images["busybox"].digest
    # Uploads go through too: the registry's Location headers must point back at the proxy.
    ib.push(registry.images["busybox"].layout, "proxied/busybox:latest", proxy.host)
    assert json.loads(inspect(f"{registry.host}/proxied/busybox:latest").stdout)["Digest"] == registry.images["busybox"].digest
    stats = proxy.stats
    assert stats.requests > 0 and stats.by_method["PUT"] >= 1 and not stats.faults


def test_proxy_corrupt_blob(faulty_registry: Callable[..., FaultProxy], bench_blob: tuple[str, int], registry: Registry) -> None:
    digest, size = bench_blob
    proxy = faulty_registry("corrupt-blob")
    status, _, body, complete = _fetch(proxy, digest)
    assert status == 200 and complete and len(body) == size
    assert f"sha256:{hashlib.sha256(body).hexdigest()}" != digest
    assert proxy.stats.faults[digest] == 1
    # A real client notices.
    dest = registry.workdir / "copy-bench"
    out = skopeo("copy", "--src-tls-verify=false", f"docker://{proxy.ref('bench')}", f"dir:{dest}", check=False)
    shutil.rmtree(dest, ignore_errors=True)
    assert out.returncode != 0 and "digest" in out.stderr.lower()


def test_proxy_cut_after_then_resume(faulty_registry: Callable[..., FaultProxy], bench_blob: tuple[str, int]) -> None:
    digest, size = bench_blob
    cut = 1_000_000
    proxy = faulty_registry(f"cut-after={cut}", digests={digest}, times=1)
    status, headers, first, complete = _fetch(proxy, digest)
    assert status == 200 and int(headers["content-length"]) == size
    assert not complete and len(first) == cut
    # The second request is not faulted: a resume from where the cut happened completes the blob.
    status, headers, rest, complete = _fetch(proxy, digest, {"Range": f"bytes={cut}-"})
    assert status == 206 and complete and headers["content-range"] == f"bytes {cut}-{size - 1}/{size}"
    assert f"sha256:{hashlib.sha256(first + rest).hexdigest()}" == digest
    stats = proxy.stats
    assert stats.range_requests == [(digest, f"bytes={cut}-")]
    assert stats.blob_gets[digest] == 2 and stats.faults[digest] == 1


def test_proxy_fault_only_for_chosen_digests(faulty_registry: Callable[..., FaultProxy], bench_blob: tuple[str, int],
                                             registry: Registry) -> None:
    digest, _ = bench_blob
    other = json.loads(read_blob(registry.images["bench"].layout, registry.images["bench"].digest))["layers"][2]
    proxy = faulty_registry("cut-after=10", digests={digest})
    assert _fetch(proxy, other["digest"])[3] is True
    assert _fetch(proxy, digest)[3] is False


def test_proxy_ignore_range(faulty_registry: Callable[..., FaultProxy], bench_blob: tuple[str, int]) -> None:
    digest, size = bench_blob
    proxy = faulty_registry("ignore-range")
    status, headers, body, complete = _fetch(proxy, digest, {"Range": "bytes=1000-"})
    assert status == 200 and complete and len(body) == size and "content-range" not in headers
    assert proxy.stats.range_requests == [(digest, "bytes=1000-")]
    # Without a Range header nothing is "ignored" and nothing counts as a fault.
    assert _fetch(proxy, digest)[0] == 200
    assert proxy.stats.faults[digest] == 1


def test_proxy_stall(faulty_registry: Callable[..., FaultProxy], bench_blob: tuple[str, int]) -> None:
    digest, _ = bench_blob
    proxy = faulty_registry("stall=4096")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=0.5)
    try:
        conn.request("GET", _blob_path(digest))
        resp = conn.getresponse()
        assert resp.status == 200
        assert len(resp.read(4096)) == 4096
        with pytest.raises(socket.timeout):  # nothing more comes
            resp.read(1)
    finally:
        conn.close()
    proxy.release_stalls()
    proxy.clear()
    assert _fetch(proxy, digest)[3] is True


# -- daemon teardown ----------------------------------------------------------------------------

def test_cleanup_roots_removes_containers_processes_and_mounts(test_images: dict[str, ib.BuiltImage], tmp_path: Path) -> None:
    """What a crashed daemon leaves (a running runc container in a bundle under the exec root,
    a mount under the data root) is found and removed by the daemon teardown."""
    exec_root, data_root = tmp_path / "exec", tmp_path / "data"
    cid = f"adt-cleanup-{os.getpid()}"
    bundle = exec_root / "bundles" / cid
    subprocess.run(["umoci", "unpack", "--image", f"{test_images['busybox'].layout}:latest", str(bundle)],
                   check=True, capture_output=True, timeout=120)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "600"]
    (bundle / "config.json").write_text(json.dumps(spec))
    state = exec_root / "runtime" / "runc"
    mnt = data_root / "snapshots" / "1" / "mnt"
    mnt.mkdir(parents=True)
    try:
        # Output to a file, not a pipe: the detached container inherits it and never closes it.
        with (tmp_path / "runc.log").open("wb") as log:
            subprocess.run(["runc", "--root", str(state), "run", "--detach", "--bundle", str(bundle), cid],
                           check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mnt)], check=True, timeout=30)

        left = cleanup_roots([data_root, exec_root])

        assert any(f"runtime container {cid}" in item for item in left), left
        assert any(item == f"mount {mnt}" for item in left), left
        assert mounts_under([tmp_path]) == []
        listed = subprocess.run(["runc", "--root", str(state), "list", "-q"], capture_output=True, text=True).stdout
        assert listed.strip() == ""
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", cid], capture_output=True, timeout=60)
        for point in mounts_under([tmp_path]):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _daemon_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("asyncdock.daemon") is not None and \
            importlib.util.find_spec("asyncdock.cli.main") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _daemon_available(), reason="asyncdock daemon not written yet")
def test_daemon_fixture(daemon: Daemon) -> None:
    assert daemon.ping()
    assert daemon.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert daemon.client().ping() is True
    assert daemon.env["DOCKER_HOST"] == f"unix://{daemon.socket}"


def test_teardown_removes_the_network_a_killed_daemon_left(daemon_factory: Any) -> None:
    """A daemon killed with its bridge up leaves the bridge and its nftables chains in the
    kernel; the teardown (cleanup_roots) removes exactly those, tagged for its data root."""
    from tests.support import netcheck

    d = daemon_factory(check_leaks=False)
    d.docker("network", "create", "leftover-net")
    tag = netcheck.daemon_tag(d.data_root)
    assert netcheck.our_links(tag) and netcheck.our_chains(tag)
    d.kill9()
    left = cleanup_roots([d.data_root, d.exec_root])
    assert any(item.startswith("link ") for item in left), left
    assert any(item.startswith("nftables chain ") for item in left), left
    assert netcheck.our_links(tag) == [] and netcheck.our_chains(tag) == []
